"""Test helpers for calls: a protocol client that also sends and receives stream frames."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from protocol.calls import Signal, parse_signal, signal_frame
from protocol.codec import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK
from tests.chat.helpers import Peer
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


class Party(Peer):
    """A protocol client (:class:`tests.chat.helpers.Peer`) that also queues call stream frames."""

    def __init__(self, ws: ClientConnection, binary: bool, user: str) -> None:
        super().__init__(ws, binary)
        self.user = user
        self.frames: asyncio.Queue[tuple[Signal, str, bytes]] = asyncio.Queue()

    def _stream_frame(self, frame: bytes) -> None:
        self.frames.put_nowait(parse_signal(frame))

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
