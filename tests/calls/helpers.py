"""Test helpers for calls: a protocol client that also sends and receives stream frames."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from protocol.calls import Signal, parse_signal, signal_frame
from protocol.codec import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, JsonCodec, MsgpackCodec
from tests.hubtest import RunningHub, token_for

WAIT_S = 10.0

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\n"
)
ANSWER = OFFER.replace("o=- 1 1", "o=- 2 1")


def candidate(n: int) -> bytes:
    """A trickled candidate payload (JSON text), numbered so that order can be checked."""
    line = f"candidate:{n} 1 udp 2122260223 127.0.0.1 {40000 + n} typ host"
    return ('{"candidate":"' + line + '","sdpMid":"0","sdpMLineIndex":0}').encode()


class Party:
    """A protocol client: replies by id, events and stream frames in queues."""

    def __init__(self, ws: ClientConnection, binary: bool, user: str) -> None:
        self.ws, self.user = ws, user
        self.codec: MsgpackCodec | JsonCodec = MsgpackCodec() if binary else JsonCodec()
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.errors: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.frames: asyncio.Queue[tuple[Signal, str, bytes]] = asyncio.Queue()
        self._waiting: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for frame in self.ws:
                if isinstance(frame, bytes) and frame[:1] == b"\xc1":
                    self.frames.put_nowait(parse_signal(frame))
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

    async def refused(self, msg_type: str, /, **fields: Any) -> str:
        reply = await self.call(msg_type, **fields)
        assert reply["type"] == "error", reply
        return str(reply["code"])

    async def send_raw(self, frame: bytes | str) -> None:
        await self.ws.send(frame)

    async def signal(self, kind: Signal, call: str, payload: bytes) -> None:
        await self.ws.send(signal_frame(kind, call, payload))

    async def event(
        self, kind: str | None = None, call: str | None = None, timeout: float = WAIT_S
    ) -> dict[str, Any]:
        """The next event of ``kind`` (about ``call``), skipping others."""
        while True:
            ev = await asyncio.wait_for(self.events.get(), timeout)
            if (kind is None or ev["kind"] == kind) and (
                call is None or ev["ch"] == f"call:{call}"
            ):
                return ev

    def call_events(self) -> list[dict[str, Any]]:
        """The call events received so far (others are dropped)."""
        out = []
        while not self.events.empty():
            ev = self.events.get_nowait()
            if ev["ch"].startswith("call:"):
                out.append(ev)
        return out

    async def frame(self, timeout: float = WAIT_S) -> tuple[Signal, str, bytes]:
        return await asyncio.wait_for(self.frames.get(), timeout)

    async def error(self, timeout: float = WAIT_S) -> dict[str, Any]:
        return await asyncio.wait_for(self.errors.get(), timeout)

    def abort(self) -> None:
        self.ws.transport.abort()

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def open_party(hub: RunningHub, user: str, *, binary: bool = True) -> Party:
    proto = SUBPROTOCOL_MSGPACK if binary else SUBPROTOCOL_JSON
    ws = await connect(hub.url, subprotocols=[proto], max_size=2**22, ping_interval=None)  # type: ignore[list-item]
    p = Party(ws, binary, user)
    welcome = await p.call("hello", auth={"method": "token", "token": token_for(user)})
    assert welcome["type"] == "welcome", welcome
    return p


@contextlib.asynccontextmanager
async def parties(hub: RunningHub, *users: str, binary: bool = True) -> AsyncIterator[list[Party]]:
    opened = [await open_party(hub, u, binary=binary) for u in users]
    try:
        yield opened
    finally:
        for p in opened:
            await p.close()
