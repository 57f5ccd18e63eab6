"""The reconnecting WebSocket under :class:`clients.sdk.MedhubClient`.

:class:`Connection` owns the socket: ticket, ``hello``, resume, request/reply,
the typed event stream, and reconnection. The chat and presence calls live in
:mod:`clients.sdk`; the errors in :mod:`clients.errors`.

Reconnection: from :meth:`Connection.connect` to :meth:`Connection.close`
the client keeps one socket open. Whenever an attempt fails or the socket drops
with a transport error (the hub restarting or unreachable, a reset, close 1012,
slow-consumer close 4009, a 5xx from the ticket endpoint, an ``error`` reply
``unavailable`` to ``hello``), it waits a random time in ``[0, d]`` (full
jitter), where ``d`` starts at ``backoff_initial_s`` and doubles after each
failed attempt up to ``backoff_max_s`` (back to the start once a connection is
welcomed), fetches a new ticket and reconnects; it never gives up on a transport
error. Each failed attempt is reported to ``on_retry(error, delay_s)``. After a
reconnect it resumes: ``chat.sync`` for every followed conversation after the
last seq it delivered, and presence subscriptions again. Events with a seq not
newer than the last delivered one on their channel are dropped, so
:meth:`~Connection.events` yields each chat event exactly once and in order.

Close 4011 means the user's rights changed: the client reconnects at once
(no backoff) and gets its current rights. Close 4010 means the session ended
(signed out, revoked, expired) and is permanent, as are a 401 from the ticket
endpoint and ``hello`` ``auth_failed``: the client stops, ``events()`` raises
:class:`SessionEndedError` after the events received before it, and every later
call raises it at once. An ``error`` reply during the resume that retrying
cannot fix (e.g. ``forbidden`` for a followed conversation one has left) stops
the client the same way with that :class:`HubError`.

Requests in flight when the socket drops fail with :class:`TransportError`
(the hub may or may not have carried them out); :meth:`Connection.request`
never retries by itself.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from clients.accounts import SessionInfo, api_url, describe, ws_ticket
from clients.errors import (
    HubError,
    MedhubError,
    RequestTimeoutError,
    SessionEndedError,
    TransportError,
)
from protocol.chat import ChatEvent
from protocol.codec import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, JsonCodec, MsgpackCodec
from protocol.messages import Event
from protocol.presence import PresenceState
from protocol.streams import STREAM_MAGIC

log = logging.getLogger("clients.sdk")

AUTH_FAILED_CLOSE = 4003
SESSION_ENDED_CLOSE = 4010
RIGHTS_CHANGED_CLOSE = 4011
#: ``hello`` refusals worth another attempt later, besides the retryable codes.
RETRY_HELLO = frozenset({"too_many_connections"})


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


class Connection:
    """One user's reconnecting socket to the hub; see the module docstring.

    ``request_timeout_s`` bounds each request and each wait for a connection
    inside a call; ``backoff_initial_s`` / ``backoff_max_s`` shape the reconnect
    delays (seconds). ``on_retry(error, delay_s)`` is called after every failed
    attempt and ``on_connected()`` after every welcome and resume; both run in
    the event loop and must return quickly without raising. Raises ValueError
    for a ``base_url`` that is not http(s)://.
    """

    def __init__(
        self, base_url: str, *, token: str | None = None, use_ticket: bool = True,
        binary: bool = True, request_timeout_s: float = 10.0,
        backoff_initial_s: float = 0.2, backoff_max_s: float = 10.0,
        on_retry: Callable[[MedhubError, float], object] | None = None,
        on_connected: Callable[[], object] | None = None,
    ) -> None:  # fmt: skip
        api_url(base_url)  # validates
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.use_ticket = use_ticket
        self.binary = binary
        self.request_timeout_s = request_timeout_s
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.on_retry, self.on_connected = on_retry, on_connected
        self.session: SessionInfo | None = None
        self.last_seq: dict[str, int] = {}
        self.reconnects = 0
        #: The error of the last failed attempt (None until one fails).
        self.last_error: MedhubError | None = None
        self._codec: MsgpackCodec | JsonCodec = MsgpackCodec() if binary else JsonCodec()
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[ClientConnection, asyncio.Future[Any]]] = {}
        self._events: asyncio.Queue[TypedEvent | None] = asyncio.Queue()  # None: the end
        self._follows: set[str] = set()
        self._presence: tuple[set[str], bool] = (set(), False)
        self._connected = asyncio.Event()
        self._stopped = asyncio.Event()  # closed, or a permanent error
        self._welcomed = False
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self._fatal: MedhubError | None = None
        #: Extensions (clients.calls): event taps, stream frame handlers, connected hooks.
        self._taps: list[Callable[[TypedEvent], bool]] = []
        self._streams: dict[int, Callable[[bytes], object]] = {}
        self._hooks: list[Callable[[], object]] = []

    @property
    def connected(self) -> bool:
        """Whether a socket is welcomed and resumed right now."""
        return self._connected.is_set()

    def is_closed(self) -> bool:
        """Whether :meth:`close` was called (a method: it changes across awaits)."""
        return self._closed

    async def _credentials(self) -> dict[str, str]:
        if self.token is None:
            raise SessionEndedError("no_session")
        if not self.use_ticket:
            return {"method": "token", "token": self.token}
        ticket = await ws_ticket(self.base_url, self.token, self.request_timeout_s)
        return {"method": "ticket", "token": ticket}

    # -- connection ----------------------------------------------------------------------
    async def connect(self, timeout_s: float = 30.0) -> None:
        """Start the connection and return once the hub welcomed it and it resumed.

        The client then reconnects by itself until :meth:`close`; calling this
        again just waits for the current connection. Raises
        :class:`SessionEndedError` as soon as the session is refused, or
        :class:`TransportError` when not connected within ``timeout_s`` (its
        ``__cause__`` is the last attempt's error; the client keeps trying in the
        background until :meth:`close`).
        """
        if self._closed:
            raise MedhubError("the client is closed")
        if self.token is None:
            raise SessionEndedError("no_session")
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())
        await self._wait_connected(timeout_s)

    async def close(self) -> None:
        """Close the socket and stop reconnecting; :meth:`events` then ends."""
        self._closed = True
        self._stopped.set()
        ws = self._ws
        if ws is not None:
            await ws.close()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.wait({self._runner})  # never raises the runner's outcome
        self._events.put_nowait(None)

    def kill_socket(self) -> None:
        """Drop the TCP connection abruptly (tests and chaos drills); the client reconnects."""
        if self._ws is not None:
            self._ws.transport.abort()

    async def _wait_connected(self, timeout_s: float) -> None:
        """Return when connected; raise the permanent error, or TransportError after timeout."""
        if self._fatal is not None:
            raise self._fatal
        if not self._connected.is_set() and not self._stopped.is_set():
            waiters = {
                asyncio.ensure_future(self._connected.wait()),
                asyncio.ensure_future(self._stopped.wait()),
            }
            try:
                await asyncio.wait(waiters, timeout=timeout_s, return_when="FIRST_COMPLETED")
            finally:
                for w in waiters:
                    w.cancel()
        if self._fatal is not None:
            raise self._fatal
        if self._closed:
            raise MedhubError("the client is closed")
        if not self._connected.is_set():
            raise TransportError(f"not connected within {timeout_s:g} s") from self.last_error

    async def _run(self) -> None:
        """The runner task: keeps connecting; ends only on close or a permanent error."""
        try:
            await self._keep_connected()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a peer that is not medhub: end events(), never hang
            log.error("medhub client stopped", extra={"error": type(exc).__name__})
            self._fail(exc if isinstance(exc, MedhubError) else MedhubError(describe(exc)), exc)

    async def _keep_connected(self) -> None:
        delay = self.backoff_initial_s
        while not self.is_closed():
            error: MedhubError
            try:
                await self._session()  # returns only through an exception
                raise TransportError("connection lost")
            except SessionEndedError as exc:
                self._fail(exc)
                return
            except HubError as exc:
                if not (exc.retryable or exc.code in RETRY_HELLO):
                    self._fail(exc)
                    return
                error = exc
            except TransportError as exc:
                error = exc
            except (OSError, httpx.TransportError, WebSocketException) as exc:
                error = TransportError(describe(exc))  # not converted where it arose
                error.__cause__ = exc
            if self.is_closed():
                return
            if self._welcomed:
                delay = self.backoff_initial_s
            self.last_error = error
            self.reconnects += 1
            rights_changed = getattr(error, "close_code", None) == RIGHTS_CHANGED_CLOSE
            wait = 0.0 if rights_changed else random.uniform(0, delay)
            log.info(
                "medhub connection lost; retrying",
                extra={"error": type(error.__cause__ or error).__name__, "retry_in_s": wait},
            )
            if self.on_retry is not None:
                self.on_retry(error, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, self.backoff_max_s)

    def _fail(self, exc: MedhubError, cause: BaseException | None = None) -> None:
        """Stop for good: every waiter and later call gets ``exc``; events() ends with it."""
        if cause is not None and exc is not cause:
            exc.__cause__ = cause
        self._fatal = exc
        self._stopped.set()
        self._events.put_nowait(None)

    async def _session(self) -> None:
        """One connection from ticket to close; always ends with an exception."""
        self._welcomed = False
        auth = await self._credentials()
        proto = SUBPROTOCOL_MSGPACK if self.binary else SUBPROTOCOL_JSON
        try:
            ws = await connect(
                _ws_url(self.base_url), subprotocols=[proto], max_size=2**22,  # type: ignore[list-item]
                ping_interval=None, compression=None, open_timeout=self.request_timeout_s,
            )  # fmt: skip
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise TransportError(f"cannot open the WebSocket: {describe(exc)}") from exc
        self._ws = ws
        reader = asyncio.get_running_loop().create_task(self._read(ws))
        try:
            try:
                welcome = await self._call(ws, "hello", {"auth": auth, "client": "medhub-sdk"})
            except HubError as exc:
                if exc.code == "auth_failed":
                    raise SessionEndedError("auth_failed") from exc
                raise
            identity = welcome.get("identity", {})
            if self.session is None and identity:
                self.session = SessionInfo(
                    self.token or "", identity["user"], identity["org"], identity["role"]
                )
            await self._resume(ws)
            if self._ws is ws:  # not dropped meanwhile
                self._welcomed = True
                self._connected.set()
                for hook in self._hooks:
                    hook()
                if self.on_connected is not None:
                    self.on_connected()
            await reader  # returns when the socket closes; raises only on a bug
            raise self._lost(ws)
        finally:
            self._drop(ws)
            reader.cancel()
            ws.transport.abort()  # no-op when already closed

    def _drop(self, ws: ClientConnection) -> None:
        """``ws`` is gone: mark the client disconnected, fail the requests waiting on it."""
        if self._ws is ws:
            self._ws = None
            self._connected.clear()
        for rid, (owner, fut) in list(self._waiting.items()):
            if owner is ws:
                del self._waiting[rid]
                if not fut.done():
                    fut.set_exception(self._lost(ws))

    @staticmethod
    def _lost(ws: ClientConnection) -> MedhubError:
        """The error for a request on ``ws`` after it closed (by the close code received)."""
        rcvd = ws.protocol.close_rcvd
        if rcvd is None:
            return TransportError("connection lost")
        if rcvd.code == AUTH_FAILED_CLOSE:
            return SessionEndedError("auth_failed")
        if rcvd.code == SESSION_ENDED_CLOSE:
            return SessionEndedError("session_ended")
        error = TransportError(f"connection closed by the hub ({rcvd.code} {rcvd.reason})")
        error.close_code = rcvd.code
        return error

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
        """Deliver replies and events until ``ws`` closes (returns then)."""
        try:
            async for frame in ws:
                if isinstance(frame, bytes) and frame[:1] == bytes((STREAM_MAGIC,)):
                    handler = self._streams.get(frame[1]) if len(frame) > 1 else None
                    if handler is not None:
                        handler(frame)
                    continue
                msg = self._codec.decode_raw(frame)
                kind = msg.get("type")
                if kind == "event":
                    self._on_event(msg)
                elif kind in ("result", "error", "welcome"):
                    entry = self._waiting.pop(msg.get("id"), None)
                    if entry is not None and not entry[1].done():
                        if kind == "error":
                            entry[1].set_exception(
                                HubError(msg["code"], msg["message"], msg.get("retry_after_s"))
                            )
                        else:
                            entry[1].set_result(msg if kind == "welcome" else msg.get("data"))
                elif kind == "heartbeat":
                    await ws.send(self._codec.encode_raw({"type": "heartbeat"}))
        except ConnectionClosed:
            pass
        finally:
            self._drop(ws)

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
        typed = TypedEvent(ev.ch, ev.seq, ev.kind, data)
        for tap in self._taps:
            if tap(typed):
                return
        self._events.put_nowait(typed)

    async def _call(
        self,
        ws: ClientConnection,
        kind: str,
        fields: dict[str, Any],
        timeout_s: float | None = None,
    ) -> Any:
        """Send one request on ``ws`` and await its reply; only MedhubErrors come out."""
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = (ws, fut)
        timeout = timeout_s or self.request_timeout_s
        try:
            await ws.send(self._codec.encode_raw({"type": kind, "id": rid, **fields}))
            return await asyncio.wait_for(fut, timeout)
        except ConnectionClosed as exc:  # closed before the request could be written
            self._drop(ws)
            raise self._lost(ws) from exc
        except TimeoutError as exc:
            if isinstance(exc, MedhubError):
                raise
            raise RequestTimeoutError(f"no reply to {kind} within {timeout:g} s") from None
        finally:
            self._waiting.pop(rid, None)

    # -- requests and events ---------------------------------------------------------------
    async def request(self, msg_type: str, /, timeout_s: float | None = None, **fields: Any) -> Any:
        """Send request ``msg_type`` and return its result ``data`` (timeout in seconds).

        Not retried. Raises :class:`HubError` (an ``error`` reply),
        :class:`TransportError` (not connected, the socket dropped, or
        :class:`RequestTimeoutError`: the hub may have carried it out; retry
        only an idempotent request), :class:`SessionEndedError`.
        """
        if self._fatal is not None:
            raise self._fatal
        if self._closed:
            raise MedhubError("the client is closed")
        ws = self._ws
        if ws is None or not self._connected.is_set():
            raise TransportError("not connected (reconnecting)") from self.last_error
        return await self._call(ws, msg_type, fields, timeout_s)

    async def notify(self, msg_type: str, /, **fields: Any) -> None:
        """Send one-way message ``msg_type`` (no reply; a refusal comes as an ``error``
        the client does not wait for). Raises :class:`TransportError` when not connected."""
        await self.send_stream(self._codec.encode_raw({"type": msg_type, **fields}))

    async def send_stream(self, frame: bytes | str) -> None:
        """Send an encoded frame as it is (a binary stream frame: protocol/streams.py).

        Raises :class:`TransportError` when not connected (nothing was sent) or the
        socket drops while sending, :class:`SessionEndedError` after a permanent error.
        """
        if self._fatal is not None:
            raise self._fatal
        ws = self._ws
        if ws is None or not self._connected.is_set():
            raise TransportError("not connected (reconnecting)") from self.last_error
        try:
            await ws.send(frame)
        except ConnectionClosed as exc:
            self._drop(ws)
            raise self._lost(ws) from exc

    def add_event_tap(self, tap: Callable[[TypedEvent], bool]) -> None:
        """Show every event to ``tap`` first; one it returns True for is consumed (not
        queued for :meth:`events`). ``tap`` runs in the reader and must not block."""
        self._taps.append(tap)

    def on_stream(self, code: int, handler: Callable[[bytes], object]) -> None:
        """Call ``handler(frame)`` with every stream frame of kind ``code`` (the whole
        frame, header included); frames of kinds nobody handles are dropped."""
        self._streams[code] = handler

    def add_connected_hook(self, hook: Callable[[], object]) -> None:
        """Call ``hook()`` after every welcome and resume (before ``on_connected``)."""
        self._hooks.append(hook)

    async def events(self) -> AsyncIterator[TypedEvent]:
        """Every event, typed, each chat event once and in order.

        Transport failures never end it (the client reconnects and resumes).
        It ends after :meth:`close`, and raises :class:`SessionEndedError` (or
        the error that stopped the client) after the events received before it.
        """
        while True:
            item = await self._events.get()
            if item is None:
                self._events.put_nowait(None)  # every later call ends too
                if self._fatal is not None:
                    raise self._fatal
                return
            yield item
