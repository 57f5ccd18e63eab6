"""An async Python client for the medhub hub: sign in, connect, chat, presence.

Usage::

    client = MedhubClient("https://hub.example")
    await client.sign_in("me@example.org", password, totp_code)   # REST, accounts sidecar
    await client.connect()                       # WebSocket; reconnects by itself
    await client.follow(conv)                    # replay what was missed, then live
    seq = await client.send_message(conv, "hello")
    async for event in client.events():          # typed events, each exactly once
        people = await client.names([event.data.sender])   # id -> Person (display name)
    await client.close()

Errors (defined in :mod:`clients.errors`, importable from here)::

    MedhubError                  base; ``.retryable``: may the same call succeed later?
     ├── TransportError          network failure (refused, reset, DNS, TLS, socket dropped,
     │    │                      HTTP 5xx on the ticket): retryable; cause in ``__cause__``
     │    ├── RequestTimeoutError  no reply within the request timeout
     │    └── UnconfirmedError   send_message gave up; send again with ``.client_msg_id``
     ├── SessionEndedError       permanent: session revoked or expired, account disabled,
     │                           password expired: sign in again (``.code``)
     ├── HubError                an ``error`` reply: ``.code``, ``.retry_after_s``
     ├── SignInError             REST sign-in or enrolment refused: ``.code``, ``.status``
     └── ApiError                another REST call refused: ``.code``, ``.status``

No ``websockets`` or ``httpx`` exception leaves the SDK; ``MedhubError`` itself
means the client was closed.

Reconnection (details in :mod:`clients.connection`): the client reconnects by
itself with capped exponential backoff and full jitter after any transport
error, never giving up on one, and resumes, so :meth:`MedhubClient.events`
yields each chat event exactly once and in order. A session that has ended
(revoked, expired, account disabled) stops it: ``events()`` then raises
:class:`SessionEndedError`, as does every later call.

Requests in flight when the socket drops fail with :class:`TransportError`:
the hub may or may not have carried them out. Retry only idempotent ones
(reads, ``set_presence``, ``mark_read``, ``subscribe_presence``, a direct
``create_conversation``). :meth:`~MedhubClient.send_message` is idempotent
through its ``client_msg_id`` and retries by itself across reconnects.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import msgspec

from clients.accounts import (
    Enrolment,
    Person,
    SessionInfo,
    accept_invitation,
    confirm_enrolment,
    directory_all,
    sign_in,
    sign_out,
)
from clients.connection import Connection, TypedEvent
from clients.errors import (
    RETRYABLE_CODES,
    ApiError,
    HubError,
    MedhubError,
    RequestTimeoutError,
    SessionEndedError,
    SignInError,
    TransportError,
    UnconfirmedError,
)
from protocol.chat import ChatEvent
from protocol.presence import PresenceState

__all__ = [
    "RETRYABLE",
    "ApiError",
    "Enrolment",
    "HubError",
    "MedhubClient",
    "MedhubError",
    "Person",
    "RequestTimeoutError",
    "SessionEndedError",
    "SessionInfo",
    "SignInError",
    "TransportError",
    "TypedEvent",
    "UnconfirmedError",
    "accept_invitation",
    "confirm_enrolment",
    "sign_in",
]

RETRYABLE = RETRYABLE_CODES
#: Ids per directory request (bigger lists are asked for in several requests).
#: The highest seq a receipt may name; the hub clamps it to the conversation's last.
LAST_SEQ = 2**53 - 1


class MedhubClient(Connection):
    """One user's client: the reconnecting :class:`~clients.connection.Connection`
    (``connect``, ``close``, ``request``, ``events``) plus sign-in, chat and presence.

    See :class:`~clients.connection.Connection` for the constructor's options.
    """

    _people: dict[str, Person | None] | None = None  # names() cache, made on first use

    # -- session ---------------------------------------------------------------------
    async def sign_in(self, email: str, password: str, totp_code: str) -> SessionInfo:
        """Sign in through the accounts sidecar and keep the bearer token.

        Raises :class:`SignInError` or :class:`TransportError`.
        """
        self.session = await sign_in(self.base_url, email, password, totp_code)
        self.token = self.session.token
        return self.session

    async def sign_out(self) -> None:
        """End this client's session on the server (all its sockets close), then :meth:`close`.

        Raises :class:`ApiError` or :class:`TransportError` (the client is closed anyway).
        """
        try:
            if self.token is not None:
                await sign_out(self.base_url, self.token)
        finally:
            await self.close()

    async def names(self, ids: list[str] | set[str]) -> dict[str, Person]:
        """Who ``ids`` are (display name, role, organisation), as far as I may see them.

        Asks the accounts API's directory once per id for the life of the client
        (answers are cached, refusals too: an id I may not see is absent from
        the result, never an error). Raises :class:`SessionEndedError`,
        :class:`ApiError`, :class:`TransportError` (nothing is cached then).
        """
        if self._people is None:
            self._people = {}
        cache = self._people
        missing = {i for i in ids if i not in cache}
        if missing:
            if self.token is None:
                raise SessionEndedError("no_session")
            found = await directory_all(self.base_url, self.token, missing)
            for uid in missing:
                cache[uid] = found.get(uid)
        return {i: p for i in ids if (p := cache.get(i)) is not None}

    async def send_message(
        self, conv: str, text: str, *, client_msg_id: str | None = None,
        record: str | None = None, attempts: int = 8,
    ) -> int:  # fmt: skip
        """Send and return the seq once the hub committed it.

        Retries by itself with the same ``client_msg_id`` (so the message is
        committed at most once): after a transport error it waits for the
        reconnect (up to ``request_timeout_s`` per attempt); after a retryable
        ``error`` it waits ``retry_after_s``. Raises :class:`UnconfirmedError`
        (a TransportError) after ``attempts`` transport failures: send again with
        its ``client_msg_id``. Raises :class:`HubError` for a refusal (or a
        retryable code on the last attempt), :class:`SessionEndedError`.
        """
        cid = client_msg_id or secrets.token_hex(12)
        fields: dict[str, Any] = {"conv": conv, "client_msg_id": cid, "text": text}
        if record is not None:
            fields["record"] = record
        last: MedhubError | None = None
        for attempt in range(attempts):
            try:
                await self._wait_connected(self.request_timeout_s)
                return int((await self.request("chat.send", **fields))["seq"])
            except TransportError as exc:
                last = exc
            except HubError as exc:
                if not exc.retryable or attempt == attempts - 1:
                    raise
                await asyncio.sleep(exc.retry_after_s or 0.1)
        raise UnconfirmedError(cid, attempts) from last

    async def follow(self, conv: str, after_seq: int | None = None) -> None:
        """Receive ``conv``'s events from ``after_seq`` (default: where this client is).

        The follow is kept across reconnects. Raises :class:`HubError`
        (``not_found``, ``forbidden``: the follow is dropped), or
        :class:`TransportError` when not connected within ``request_timeout_s``
        (the follow stays and the next connection catches up).
        """
        if after_seq is not None:
            self.last_seq[f"conv:{conv}"] = after_seq
        self._follows.add(conv)
        await self._wait_connected(self.request_timeout_s)
        ws = self._ws
        if ws is None:
            return  # dropped just now: the reconnect's resume catches up
        try:
            await self._sync(ws, conv)
        except HubError:
            self._follows.discard(conv)
            raise
        except TransportError:
            pass  # dropped during the catch-up: the reconnect's resume finishes it

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

    async def conversations(self, *, page_size: int = 100) -> list[dict[str, Any]]:
        """All my conversations (every page of ``chat.list``), with last seq and unread count.

        Each is ``{"conv", "kind", "title", "members", "last_seq", "read_seq",
        "delivered_seq", "unread"}``. Raises :class:`HubError`, :class:`TransportError`.
        """
        found: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            fields: dict[str, Any] = {"limit": page_size}
            if after is not None:
                fields["after"] = after
            data = await self.request("chat.list", **fields)
            found.extend(data["conversations"])
            if not data.get("more") or not data.get("next"):
                return found
            after = str(data["next"])

    async def create_conversation(
        self, kind: str, members: list[str] | None = None, **fields: Any
    ) -> str:
        """Create or find a conversation; returns its id (and follows it)."""
        data = await self.request("chat.create", kind=kind, members=list(members or ()), **fields)
        conv = str(data["conv"])
        self._follows.add(conv)
        return conv

    async def mark_read(self, conv: str, seq: int = LAST_SEQ) -> int:
        """Read receipt up to ``seq`` (default: everything); returns my read seq now."""
        data = await self.request("chat.receipt", conv=conv, seq=seq, kind="read")
        return int(data["read_seq"])

    async def edit_message(
        self, conv: str, seq: int, text: str, *, client_msg_id: str | None = None
    ) -> tuple[int, int]:
        """Replace the text of my message ``seq``; returns (the edit's seq, the new version).

        Not retried (send it again with the same ``client_msg_id`` to be safe).
        Raises :class:`HubError` (``forbidden``: not my message; ``not_found``;
        ``bad_request``: deleted), :class:`TransportError`.
        """
        cid = client_msg_id or secrets.token_hex(12)
        data = await self.request("chat.edit", conv=conv, seq=seq, client_msg_id=cid, text=text)
        return int(data["seq"]), int(data["version"])

    async def delete_message(self, conv: str, seq: int, *, client_msg_id: str | None = None) -> int:
        """Delete my message ``seq`` (its versions are kept); returns the delete's seq.

        Raises :class:`HubError` (``forbidden``, ``not_found``, ``bad_request``:
        already deleted), :class:`TransportError`.
        """
        cid = client_msg_id or secrets.token_hex(12)
        return int(
            (await self.request("chat.delete", conv=conv, seq=seq, client_msg_id=cid))["seq"]
        )

    async def typing(self, conv: str) -> bool:
        """Typing indicator (forwarded at most every couple of seconds)."""
        return bool((await self.request("chat.typing", conv=conv))["forwarded"])
