"""An async Python client for the medhub hub: sign in, connect, chat, presence.

Usage::

    client = MedhubClient("https://hub.example")
    await client.sign_in("me@example.org", password, totp_code)   # REST, accounts sidecar
    await client.connect()                       # WebSocket; reconnects by itself
    await client.follow(conv)                    # replay what was missed, then live
    seq = await client.send_message(conv, "hello")
    async for event in client.events():          # typed events, each exactly once
        ...
    await client.close()

Reconnection: when the socket drops (network, server restart, slow-consumer
close 4009) the client reconnects with exponential backoff and full jitter
(``backoff_initial_s`` doubling up to ``backoff_max_s``), then resumes: it
calls ``chat.sync`` for every followed conversation after the last seq it
delivered, and subscribes to presence again. Events with a seq not newer than
the last delivered one on their channel are dropped, so :meth:`events` yields
each chat event exactly once and in order. An authentication refusal (close
4003 or ``auth_failed``) stops reconnecting and is raised by :meth:`events`.

Errors: :class:`HubError` (an ``error`` reply: ``.code`` from the catalogue),
:class:`SignInError` (REST sign-in refused), ``TimeoutError`` (no reply within
the timeout), ``ConnectionError`` (not connected; requests are not replayed,
but :meth:`send_message` retries with the same client id, which is safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from protocol.chat import ChatEvent
from protocol.codec import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, JsonCodec, MsgpackCodec
from protocol.messages import Event
from protocol.presence import PresenceState

log = logging.getLogger(__name__)

AUTH_FAILED_CLOSE = 4003
RETRYABLE = frozenset({"unavailable", "timeout", "internal", "rate_limited"})


class HubError(Exception):
    """An ``error`` reply; ``code`` is the stable code, ``retry_after_s`` when given."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.retry_after_s = code, message, retry_after_s


class SignInError(Exception):
    """The accounts sidecar refused the sign-in (``code`` from its JSON error)."""

    def __init__(self, code: str, status: int) -> None:
        super().__init__(f"sign-in refused: {code} (HTTP {status})")
        self.code, self.status = code, status


@dataclass(frozen=True)
class SessionInfo:
    """A signed-in session: the bearer token and who it is."""

    token: str
    user_id: str
    org_id: str
    role: str


@dataclass(frozen=True)
class TypedEvent:
    """An event with typed ``data``: ChatEvent, PresenceState, or plain data."""

    ch: str
    seq: int
    kind: str
    data: Any


def _ws_url(base_url: str) -> str:
    scheme, _, rest = base_url.rstrip("/").partition("://")
    return ("wss" if scheme == "https" else "ws") + "://" + rest + "/ws"


async def sign_in(base_url: str, email: str, password: str, totp_code: str) -> SessionInfo:
    """Password, then TOTP, against ``<base_url>/api/v1``; returns the bearer session.

    Raises :class:`SignInError` on refusal, ``httpx.HTTPError`` on transport errors.
    """
    import httpx

    async with httpx.AsyncClient(base_url=base_url.rstrip("/") + "/api/v1", timeout=30) as http:
        r = await http.post("/login", json={"email": email, "password": password})
        if r.status_code != 200:
            raise SignInError(_code(r), r.status_code)
        challenge = r.json()["challenge"]
        r = await http.post(
            "/login/mfa", json={"challenge": challenge, "code": totp_code, "session": "bearer"}
        )
        if r.status_code != 200:
            raise SignInError(_code(r), r.status_code)
        body = r.json()
    return SessionInfo(body["token"], body["user_id"], body["org_id"], body["role"])


@dataclass(frozen=True, slots=True)
class Enrolment:
    """What accepting an invitation gives: the TOTP secret to add, and a challenge."""

    otpauth_uri: str
    qr_svg: str
    challenge: str


async def accept_invitation(base_url: str, token: str, password: str) -> Enrolment:
    """Set the password of an invited account (or a new superadmin's enrolment code).

    The caller adds ``otpauth_uri`` to an authenticator app, then calls
    :func:`confirm_enrolment` with its first code. Raises :class:`SignInError`.
    """
    import httpx

    async with httpx.AsyncClient(base_url=base_url.rstrip("/") + "/api/v1", timeout=30) as http:
        r = await http.post("/invitations/accept", json={"token": token, "password": password})
        if r.status_code != 200:
            raise SignInError(_code(r), r.status_code)
        body = r.json()
    return Enrolment(body["otpauth_uri"], body["qr_svg"], body["challenge"])


async def confirm_enrolment(
    base_url: str, challenge: str, totp_code: str
) -> tuple[SessionInfo, list[str]]:
    """Confirm TOTP with its first code; returns the session and the 10 recovery codes.

    Raises :class:`SignInError`.
    """
    import httpx

    async with httpx.AsyncClient(base_url=base_url.rstrip("/") + "/api/v1", timeout=30) as http:
        r = await http.post(
            "/mfa/enrol", json={"challenge": challenge, "code": totp_code, "session": "bearer"}
        )
        if r.status_code != 200:
            raise SignInError(_code(r), r.status_code)
        body = r.json()
    info = SessionInfo(body["token"], body["user_id"], body["org_id"], body["role"])
    return info, list(body.get("recovery_codes") or [])


def _code(response: Any) -> str:
    """The stable error code of a refused REST call (``{"error": {"code": ...}}``)."""
    try:
        body = response.json()
    except ValueError:
        return "refused"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return str(error["code"])
    return "refused"


class MedhubClient:
    """One user's connection to the hub; see the module docstring."""

    def __init__(
        self, base_url: str, *, token: str | None = None, use_ticket: bool = True,
        binary: bool = True, request_timeout_s: float = 10.0,
        backoff_initial_s: float = 0.2, backoff_max_s: float = 10.0,
    ) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.use_ticket = use_ticket
        self.binary = binary
        self.request_timeout_s = request_timeout_s
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.session: SessionInfo | None = None
        self.last_seq: dict[str, int] = {}
        self.reconnects = 0
        self._codec: MsgpackCodec | JsonCodec = MsgpackCodec() if binary else JsonCodec()
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[TypedEvent | BaseException] = asyncio.Queue()
        self._follows: set[str] = set()
        self._presence: tuple[set[str], bool] = (set(), False)
        self._connected = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self._fatal: BaseException | None = None

    # -- session ---------------------------------------------------------------------
    async def sign_in(self, email: str, password: str, totp_code: str) -> SessionInfo:
        """Sign in through the accounts sidecar and keep the bearer token."""
        self.session = await sign_in(self.base_url, email, password, totp_code)
        self.token = self.session.token
        return self.session

    async def _credentials(self) -> dict[str, str]:
        if self.token is None:
            raise ConnectionError("sign in first (or pass token=)")
        if not self.use_ticket:
            return {"method": "token", "token": self.token}
        import httpx

        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.post(
                self.base_url + "/api/v1/ws-ticket",
                headers={"Authorization": f"Bearer {self.token}"},
            )
        if r.status_code != 200:
            raise SignInError(_code(r), r.status_code)
        return {"method": "ticket", "token": r.json()["ticket"]}

    # -- connection ----------------------------------------------------------------------
    async def connect(self, timeout_s: float = 30.0) -> None:
        """Connect (and keep reconnecting) until :meth:`close`; returns once welcomed.

        Raises the authentication error, or TimeoutError after ``timeout_s``.
        """
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())
        waiter = asyncio.ensure_future(self._connected.wait())
        done, _ = await asyncio.wait(
            {waiter, self._runner}, timeout=timeout_s, return_when="FIRST_COMPLETED"
        )
        if waiter not in done:
            waiter.cancel()
            if self._runner.done():
                self._runner.result()
            raise TimeoutError("not connected")

    async def close(self) -> None:
        """Close the socket and stop reconnecting."""
        self._closed = True
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner

    def kill_socket(self) -> None:
        """Drop the TCP connection abruptly (tests and chaos drills); the client reconnects."""
        if self._ws is not None:
            self._ws.transport.abort()

    async def _run(self) -> None:
        delay = self.backoff_initial_s
        while not self._closed:
            try:
                await self._session()
                delay = self.backoff_initial_s
            except (OSError, ConnectionError, TimeoutError, HubError, ConnectionClosed) as exc:
                if isinstance(exc, HubError) and exc.code == "auth_failed":
                    self._fail(exc)
                    return
                log.info("medhub connection lost", extra={"error": type(exc).__name__})
            except SignInError as exc:
                self._fail(exc)
                return
            if self._closed:
                return
            self.reconnects += 1
            await asyncio.sleep(random.uniform(0, delay))
            delay = min(delay * 2, self.backoff_max_s)

    def _fail(self, exc: BaseException) -> None:
        self._fatal = exc
        self._events.put_nowait(exc)

    async def _session(self) -> None:
        auth = await self._credentials()
        proto = SUBPROTOCOL_MSGPACK if self.binary else SUBPROTOCOL_JSON
        async with connect(
            _ws_url(self.base_url), subprotocols=[proto], max_size=2**22,  # type: ignore[list-item]
            ping_interval=None, compression=None,
        ) as ws:  # fmt: skip
            self._ws = ws
            reader = asyncio.get_running_loop().create_task(self._read(ws))
            try:
                welcome = await self._call(ws, "hello", {"auth": auth, "client": "medhub-sdk"})
                identity = welcome.get("identity", {})
                if self.session is None and identity:
                    self.session = SessionInfo(
                        self.token or "", identity["user"], identity["org"], identity["role"]
                    )
                await self._resume(ws)
                self._connected.set()
                await reader
            finally:
                self._connected.clear()
                reader.cancel()
                self._ws = None
                for fut in self._waiting.values():
                    if not fut.done():
                        fut.set_exception(ConnectionError("connection lost"))
                self._waiting.clear()
            if ws.close_code == AUTH_FAILED_CLOSE:
                raise HubError("auth_failed", "authentication refused")

    async def _resume(self, ws: ClientConnection) -> None:
        for conv in sorted(self._follows):
            await self._sync(ws, conv)
        users, contacts = self._presence
        if users or contacts:
            await self._call(
                ws, "presence.subscribe", {"users": sorted(users), "contacts": contacts}
            )

    async def _sync(self, ws: ClientConnection, conv: str) -> None:
        ch = f"conv:{conv}"
        while True:
            step = await self._call(
                ws, "chat.sync", {"conv": conv, "after_seq": self.last_seq.get(ch, 0)}
            )
            # The replayed events precede the result on the socket, so the reader
            # has delivered them (and moved last_seq) by now.
            if step["last_seq"] < self.last_seq.get(ch, 0):
                # The hub holds less than we had seen (e.g. restored from a backup):
                # take its position, or later events would be dropped as duplicates.
                self.last_seq[ch] = step["last_seq"]
            if step["caught_up"]:
                return

    async def _read(self, ws: ClientConnection) -> None:
        async for frame in ws:
            msg = self._codec.decode_raw(frame)
            kind = msg.get("type")
            if kind == "event":
                self._on_event(msg)
            elif kind in ("result", "error", "welcome"):
                fut = self._waiting.pop(msg.get("id"), None)  # type: ignore[arg-type]
                if fut is not None and not fut.done():
                    if kind == "error":
                        fut.set_exception(
                            HubError(msg["code"], msg["message"], msg.get("retry_after_s"))
                        )
                    else:
                        fut.set_result(msg if kind == "welcome" else msg.get("data"))
            elif kind == "heartbeat":
                await ws.send(self._codec.encode_raw({"type": "heartbeat"}))

    def _on_event(self, raw: dict[str, Any]) -> None:
        ev = msgspec.convert(raw, Event)
        data: Any = ev.data
        if ev.seq > 0:
            if ev.seq <= self.last_seq.get(ev.ch, 0):
                return  # already delivered
            self.last_seq[ev.ch] = ev.seq
        if ev.ch.startswith("conv:") and ev.kind in ("message", "edit", "delete"):
            data = msgspec.convert(ev.data, ChatEvent)
        elif ev.kind == "presence":
            data = msgspec.convert(ev.data, PresenceState)
        self._events.put_nowait(TypedEvent(ev.ch, ev.seq, ev.kind, data))

    async def _call(
        self,
        ws: ClientConnection,
        kind: str,
        fields: dict[str, Any],
        timeout_s: float | None = None,
    ) -> Any:
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        try:
            await ws.send(self._codec.encode_raw({"type": kind, "id": rid, **fields}))
            return await asyncio.wait_for(fut, timeout_s or self.request_timeout_s)
        finally:
            self._waiting.pop(rid, None)

    # -- API -------------------------------------------------------------------------------
    async def request(self, msg_type: str, /, timeout_s: float | None = None, **fields: Any) -> Any:
        """Send request ``msg_type`` and return its result ``data`` (timeout in seconds).

        Raises HubError, TimeoutError, or ConnectionError when not connected.
        """
        ws = self._ws
        if ws is None or not self._connected.is_set():
            raise ConnectionError("not connected")
        return await self._call(ws, msg_type, fields, timeout_s)

    async def events(self) -> AsyncIterator[TypedEvent]:
        """Every event, typed, each chat event once and in order; raises a fatal error."""
        while True:
            item = await self._events.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    async def _when_connected(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        await asyncio.wait_for(self._connected.wait(), self.backoff_max_s * 3)

    async def send_message(
        self, conv: str, text: str, *, client_msg_id: str | None = None,
        record: str | None = None, attempts: int = 8,
    ) -> int:  # fmt: skip
        """Send and return the seq once the hub committed it; retries are idempotent."""
        cid = client_msg_id or secrets.token_hex(12)
        fields: dict[str, Any] = {"conv": conv, "client_msg_id": cid, "text": text}
        if record is not None:
            fields["record"] = record
        for attempt in range(attempts):
            try:
                await self._when_connected()
                return int((await self.request("chat.send", **fields))["seq"])
            except (ConnectionError, TimeoutError) as exc:
                if attempt == attempts - 1:
                    raise ConnectionError("message not confirmed") from exc
            except HubError as exc:
                if exc.code not in RETRYABLE or attempt == attempts - 1:
                    raise
                await asyncio.sleep(exc.retry_after_s or 0.1)
        raise ConnectionError("message not confirmed")

    async def follow(self, conv: str, after_seq: int | None = None) -> None:
        """Receive ``conv``'s events from ``after_seq`` (default: where this client is)."""
        if after_seq is not None:
            self.last_seq[f"conv:{conv}"] = after_seq
        self._follows.add(conv)
        await self._when_connected()
        if self._ws is not None:
            await self._sync(self._ws, conv)

    async def subscribe_presence(
        self, users: list[str] | None = None, *, contacts: bool = False
    ) -> dict[str, Any]:
        """Follow users' presence (re-subscribed after a reconnect); returns the snapshot."""
        wanted, had_contacts = self._presence
        self._presence = (wanted | set(users or ()), had_contacts or contacts)
        result: dict[str, Any] = await self.request(
            "presence.subscribe", users=list(users or ()), contacts=contacts
        )
        return result

    async def presence(
        self, users: list[str] | None = None, *, contacts: bool = False
    ) -> list[PresenceState]:
        """A snapshot of users' presence (``contacts``: everyone I may see)."""
        data = await self.request("presence.get", users=list(users or ()), contacts=contacts)
        return [msgspec.convert(s, PresenceState) for s in data["presence"]]

    async def set_presence(self, state: str) -> str:
        """Set this device's state; returns my combined state."""
        return str((await self.request("presence.set", state=state))["state"])

    async def history(
        self, conv: str, *, before: int | None = None, after: int | None = None, limit: int = 50
    ) -> tuple[list[ChatEvent], bool]:
        """A page of events (ascending) and whether there are more."""
        fields: dict[str, Any] = {"conv": conv, "limit": limit}
        if before is not None:
            fields["before"] = before
        if after is not None:
            fields["after"] = after
        data = await self.request("chat.history", **fields)
        return [msgspec.convert(e, ChatEvent) for e in data["events"]], bool(data["more"])

    async def conversations(self) -> list[dict[str, Any]]:
        """My conversations with last seq and unread count."""
        return list((await self.request("chat.list"))["conversations"])

    async def create_conversation(
        self, kind: str, members: list[str] | None = None, **fields: Any
    ) -> str:
        """Create or find a conversation; returns its id (and follows it)."""
        data = await self.request("chat.create", kind=kind, members=list(members or ()), **fields)
        conv = str(data["conv"])
        self._follows.add(conv)
        return conv

    async def mark_read(self, conv: str, seq: int) -> None:
        """Read receipt up to ``seq``."""
        await self.request("chat.receipt", conv=conv, seq=seq, kind="read")

    async def typing(self, conv: str) -> bool:
        """Typing indicator (forwarded at most every couple of seconds)."""
        return bool((await self.request("chat.typing", conv=conv))["forwarded"])
