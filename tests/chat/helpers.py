"""Test helpers for chat and presence: seeded accounts facts and a multiplexing peer."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from websockets.asyncio.client import ClientConnection, connect

from protocol.codec import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, JsonCodec, MsgpackCodec
from server.accounts.tables import care_relationships, delegations, orgs, users
from server.store.db import Database
from tests.hubtest import RunningHub, principal, token_for

WAIT_S = 10.0


async def seed(
    db: Database,
    people: dict[str, tuple[str, str]],
    *,
    care: list[tuple[str, str, str, str | None]] = (),  # type: ignore[assignment]
    delegated: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
) -> None:
    """Insert orgs and active users (id -> (org, role)), care relationships
    (kind, actor, patient, ref) and delegations (practitioner, secretary, scopes)."""
    org_ids = sorted({org for org, _ in people.values()})
    async with db.begin() as conn:
        for org in org_ids:
            await conn.execute(
                sa.insert(orgs).values(id=org, name=org, disabled=False, created_us=1)
            )
        for uid, (org, role) in people.items():
            await conn.execute(
                sa.insert(users).values(
                    # identity columns are envelopes (accounts only): placeholders here
                    id=uid, org_id=org, role=role, name_enc=b"-", email_enc=b"-",
                    phone_enc=b"-", email_index=uid.encode(), status="active",
                    totp_last_step=-1, created_us=1, version=1,
                )
            )  # fmt: skip
        for i, (kind, actor, patient, ref) in enumerate(care):
            await conn.execute(
                sa.insert(care_relationships).values(
                    id=f"r{i}", org_id=people[patient][0], kind=kind, actor_id=actor,
                    patient_id=patient, ref_id=ref, created_us=1, ended_us=None,
                )
            )  # fmt: skip
        for i, (prac, sec, scopes) in enumerate(delegated):
            await conn.execute(
                sa.insert(delegations).values(
                    id=f"d{i}", org_id=people[prac][0], practitioner_id=prac, delegate_id=sec,
                    scopes=scopes, created_us=1, revoked_us=None,
                )
            )  # fmt: skip


def principals(people: dict[str, tuple[str, str]]) -> dict[str, Any]:
    return {u: principal(u, org, role) for u, (org, role) in people.items()}


class Peer:
    """A protocol client that routes replies by id and queues events."""

    def __init__(self, ws: ClientConnection, binary: bool) -> None:
        self.ws = ws
        self.codec: MsgpackCodec | JsonCodec = MsgpackCodec() if binary else JsonCodec()
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        #: errors that answer no request (about one-way messages or stream frames)
        self.errors: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.stream_frames: asyncio.Queue[bytes] = asyncio.Queue()
        self._waiting: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    def _stream_frame(self, frame: bytes) -> None:
        """A binary stream frame from the hub: kept raw here; subclasses parse their kind."""
        self.stream_frames.put_nowait(frame)

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for frame in self.ws:
                if isinstance(frame, bytes) and frame[:1] == b"\xc1":
                    self._stream_frame(frame)
                    continue
                msg = self.codec.decode_raw(frame)
                if msg["type"] == "event":
                    self.events.put_nowait(msg)
                elif msg["type"] == "error" and msg.get("id") is None:
                    self.errors.put_nowait(msg)
                elif msg["type"] in ("result", "error", "welcome"):
                    fut = self._waiting.pop(msg.get("id"), None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("closed"))

    async def call(self, msg_type: str, /, **fields: Any) -> dict[str, Any]:
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        await self.ws.send(self.codec.encode_raw({"type": msg_type, "id": rid, **fields}))
        return await asyncio.wait_for(fut, WAIT_S)

    async def ok(self, msg_type: str, /, **fields: Any) -> Any:
        reply = await self.call(msg_type, **fields)
        assert reply["type"] == "result", reply
        return reply["data"]

    async def event(self, kind: str | None = None, timeout: float = WAIT_S) -> dict[str, Any]:
        while True:
            ev = await asyncio.wait_for(self.events.get(), timeout)
            if kind is None or ev["kind"] == kind:
                return ev

    def abort(self) -> None:
        """Kill the TCP connection without a closing handshake."""
        self.ws.transport.abort()

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def peer(hub: RunningHub, user: str, *, binary: bool = True) -> AsyncIterator[Peer]:
    """A connected, authenticated :class:`Peer` for ``user``."""
    p = await open_peer(hub, user, binary=binary)
    try:
        yield p
    finally:
        await p.close()


async def open_peer(
    hub: RunningHub, user: str, *, binary: bool = True, resume: dict[str, int] | None = None
) -> Peer:
    """A connected, authenticated :class:`Peer` (``resume``: ``hello.resume.channels``)."""
    proto = SUBPROTOCOL_MSGPACK if binary else SUBPROTOCOL_JSON
    ws = await connect(hub.url, subprotocols=[proto], max_size=2**22, ping_interval=None)  # type: ignore[list-item]
    p = Peer(ws, binary)
    extra: dict[str, Any] = {"resume": {"channels": resume}} if resume else {}
    welcome = await p.call("hello", auth={"method": "token", "token": token_for(user)}, **extra)
    assert welcome["type"] == "welcome", welcome
    return p
