"""A cheap client WebSocket for load generators: a raw asyncio protocol (uvloop).

The benchmark clients open thousands of sockets and handle tens of thousands of
frames per second in one process, so they skip the ``websockets`` client: this
protocol writes the upgrade request, parses frames itself (RFC 6455; no
extensions, no fragmentation) and masks with ``websockets``' C helper. Data
frames go to an ``on_frame(ws, payload)`` callback when one is set, otherwise to
a queue read with :meth:`RawWs.recv`; pings are answered; a close frame is
answered and the server is left to close the TCP connection first (so the
client's port does not linger in TIME_WAIT).

:func:`open_hub` opens a socket to the hub (``medhub.v1.msgpack``) and does the
``hello`` with a bearer session token (auth method ``token``, protocol/SPEC.md);
the same hello is what the plain server and the chat relay answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

import msgpack

from protocol.codec import SUBPROTOCOL_MSGPACK

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the C helper ships with websockets' wheels

    def apply_mask(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
        return bytes(b ^ mask[i & 3] for i, b in enumerate(bytes(data)))


HEARTBEAT = msgpack.packb({"type": "heartbeat"})
SETUP_TIMEOUT_S = 30.0
FrameHandler = Callable[["RawWs", bytes], None]


def client_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One masked client frame (FIN set) carrying ``payload``."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    return head + mask + apply_mask(payload, mask)


def upgrade_request(port: int, path: str, subprotocol: str | None) -> bytes:
    """The HTTP/1.1 upgrade request of a client WebSocket."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawWs(asyncio.Protocol):
    """One client WebSocket (see the module docstring)."""

    def __init__(self, on_frame: FrameHandler | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.on_frame = on_frame
        self.transport: asyncio.Transport | None = None
        self.handshaken: asyncio.Future[None] = loop.create_future()
        self.gone: asyncio.Future[None] = loop.create_future()
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.close_code: int | None = None
        self.closing = False
        self._buf = b""
        self._http = b""

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshaken.done():
            self.handshaken.set_exception(ConnectionError("closed during the handshake"))
        if not self.gone.done():
            self.gone.set_result(None)
        self.queue.put_nowait(b"")

    def data_received(self, data: bytes) -> None:
        if not self.handshaken.done():
            self._http += data
            end = self._http.find(b"\r\n\r\n")
            if end < 0:
                return
            status, data = self._http[: end + 4], self._http[end + 4 :]
            self._http = b""
            if not status.startswith(b"HTTP/1.1 101"):
                self.handshaken.set_exception(ConnectionError(status.split(b"\r\n")[0].decode()))
                return
            self.handshaken.set_result(None)
        if self._buf:
            data = self._buf + data
        n, pos = len(data), 0
        while pos + 2 <= n:
            ln = data[pos + 1] & 0x7F
            hl = 2
            if ln == 126:
                if pos + 4 > n:
                    break
                ln, hl = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
            elif ln == 127:
                if pos + 10 > n:
                    break
                ln, hl = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
            end = pos + hl + ln
            if end > n:
                break
            opcode = data[pos] & 0x0F
            payload = data[pos + hl : end]
            pos = end
            if opcode >= 8:
                self._control(opcode, payload)
            elif self.on_frame is not None:
                self.on_frame(self, payload)
            else:
                self.queue.put_nowait(payload)
        self._buf = data[pos:] if pos < n else b""

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == 8:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not self.closing:
                self.closing = True
                self._write(client_frame(payload[:2], opcode=8))
        elif opcode == 9:
            self._write(client_frame(payload, opcode=0xA))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # -- use -----------------------------------------------------------------------------------
    @property
    def open(self) -> bool:
        return self.handshaken.done() and not self.gone.done() and not self.closing

    def send(self, payload: bytes) -> None:
        """Send one binary frame (dropped if the socket is closing)."""
        if not self.closing:
            self._write(client_frame(payload))

    def send_text(self, text: str) -> None:
        """Send one text frame (dropped if the socket is closing)."""
        if not self.closing:
            self._write(client_frame(text.encode(), opcode=0x1))

    def send_msg(self, message: dict[str, Any]) -> None:
        """Send one msgpack-encoded map."""
        self.send(msgpack.packb(message))

    async def recv(self) -> bytes:
        """The next data frame (queue mode); raises ConnectionError once the socket is gone."""
        payload = await asyncio.wait_for(self.queue.get(), SETUP_TIMEOUT_S)
        if not payload and self.gone.done():
            raise ConnectionError(f"socket closed (code {self.close_code})")
        return payload

    async def recv_msg(self) -> dict[str, Any]:
        """The next msgpack map that is not a heartbeat (answering heartbeats)."""
        while True:
            message = msgpack.unpackb(await self.recv())
            if not isinstance(message, dict):
                raise ConnectionError(f"not a map: {message!r}")
            if message.get("type") == "heartbeat":
                self.send(HEARTBEAT)
                continue
            return message

    async def close(self, wait_s: float = 10.0) -> None:
        """Close handshake: send 1000, wait for the server to close TCP (at most ``wait_s``)."""
        if not self.closing:
            self.closing = True
            self._write(client_frame(b"\x03\xe8", opcode=8))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.gone), wait_s)
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake."""
        if self.transport is not None:
            self.transport.abort()


async def open_ws(
    port: int,
    path: str = "/ws",
    subprotocol: str | None = SUBPROTOCOL_MSGPACK,
    on_frame: FrameHandler | None = None,
    local_host: str | None = None,
) -> RawWs:
    """Connect to ``127.0.0.1:port`` and complete the upgrade; raises ConnectionError/OSError."""
    loop = asyncio.get_running_loop()
    local = (local_host, 0) if local_host else None
    _, ws = await loop.create_connection(
        lambda: RawWs(on_frame), "127.0.0.1", port, local_addr=local
    )
    assert ws.transport is not None
    ws.transport.write(upgrade_request(port, path, subprotocol))
    await asyncio.wait_for(ws.handshaken, SETUP_TIMEOUT_S)
    return ws


async def open_hub(port: int, token: str, local_host: str | None = None) -> tuple[RawWs, float]:
    """A socket authenticated with ``hello`` (method ``token``); (socket, seconds to welcome).

    Raises ConnectionError when the server answers anything but ``welcome``.
    """
    started = time.monotonic()
    ws = await open_ws(port, local_host=local_host)
    ws.send_msg({"type": "hello", "id": 1, "auth": {"method": "token", "token": token}})
    welcome = await ws.recv_msg()
    if welcome.get("type") != "welcome":
        ws.abort()
        raise ConnectionError(f"hello refused: {welcome.get('code') or welcome.get('type')}")
    return ws, time.monotonic() - started
