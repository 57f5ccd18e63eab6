"""Receiver process of the chat fan-out benchmark (:mod:`loadtests.bench_chat`).

``python -m loadtests.bench_chat_client --kind hub --port N --first 0 --count 50
--conv C --warm W --total T`` opens ``count`` WebSockets (users ``u<first>``..)
to one server, joins the conversation / room, prints ``READY``, prints
``WARM`` once every socket has received ``warm`` events, then prints one JSON
line (see :func:`report`) once every socket has received ``total`` events, or
when nothing arrived for ``--stall`` seconds.

The same harness serves the three servers, so the client costs the same for
each. It decodes minimally: a raw asyncio protocol (uvloop) with a
WebSocket frame parser that only reads frame headers, counts data frames and
their bytes, and keeps the last frame of each read; only that last frame of a
socket is decoded (its ``seq``) at the end. Frames under
:data:`SMALL_FRAME` bytes are control traffic (the hub's heartbeat, the
Engine.IO ping) and are answered, not counted. Times are ``time.monotonic()``
(CLOCK_MONOTONIC, comparable across processes on Linux).

Protocols:

- ``hub``: subprotocol ``medhub.v1.msgpack``; ``hello`` with user ``n``'s
  session token from ``--tokens`` (a bench token without it), then
  ``chat.sync {conv, after_seq: --after}``; events are msgpack ``event`` maps.
- ``broadcast``: the plain ``websockets`` baseline; msgpack
  ``{"type": "hello", "role": "receiver"}``; events are the senders' bytes.
- ``socketio``: Engine.IO 4 over WebSocket only; ``40{"role":"receiver"}``
  (the server puts the socket in the room); events are ``42["chat",{...}]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from typing import Any

import msgpack

from loadtests.bench_server import bench_token, raise_nofile_limit
from loadtests.seed import read_tokens
from protocol.codec import SUBPROTOCOL_MSGPACK

#: Data frames shorter than this are control traffic (heartbeat, Engine.IO ping), not events.
SMALL_FRAME = 64
CONNECT_CONCURRENCY = 25
SETUP_TIMEOUT_S = 20.0
HUB_HEARTBEAT = msgpack.packb({"type": "heartbeat"})


def client_frame(payload: bytes, text: bool = False, opcode: int | None = None) -> bytes:
    """One masked client frame (FIN set) carrying ``payload`` (under 64 KiB)."""
    n = len(payload)
    head = bytes([(0x80 | opcode) if opcode is not None else (0x81 if text else 0x82)])
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + mask + masked


class Tracker:
    """Progress of every socket of this process."""

    def __init__(self, n: int, warm: int, total: int) -> None:
        self.n, self.warm, self.total = n, warm, total
        self.warm_done = 0
        self.total_done = 0
        self.all_warm = asyncio.Event()
        self.all_done = asyncio.Event()
        self.last_done_at = 0.0

    def reached(self, count_before: int, count: int) -> None:
        if count_before < self.warm <= count:
            self.warm_done += 1
            if self.warm_done == self.n:
                self.all_warm.set()
        if count_before < self.total <= count:
            self.total_done += 1
            self.last_done_at = time.monotonic()
            if self.total_done == self.n:
                self.all_done.set()


class Receiver(asyncio.Protocol):
    """One WebSocket: handshake and setup frames go to a queue, then frames are counted."""

    def __init__(self, kind: str, tracker: Tracker) -> None:
        self.kind = kind
        self.tracker = tracker
        self.transport: asyncio.Transport | None = None
        self.handshaken = asyncio.get_running_loop().create_future()
        self.setup: asyncio.Queue[bytes] = asyncio.Queue()
        self.counting = False
        self.closed = False
        self.close_code: int | None = None
        self.count = 0
        self.nbytes = 0
        self.last = b""
        self._buf = b""
        self._http = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.handshaken.done():
            self.handshaken.set_exception(ConnectionError("closed during the handshake"))
        self.setup.put_nowait(b"")

    def send(self, payload: bytes, text: bool = False) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(payload, text))

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
        n = len(data)
        pos = 0
        count = 0
        nbytes = 0
        last_start = last_end = -1
        counting = self.counting
        while pos + 2 <= n:
            ln = data[pos + 1] & 0x7F
            if ln < 126:
                hl = 2
            elif ln == 126:
                if pos + 4 > n:
                    break
                ln = (data[pos + 2] << 8) | data[pos + 3]
                hl = 4
            else:
                if pos + 10 > n:
                    break
                ln = int.from_bytes(data[pos + 2 : pos + 10], "big")
                hl = 10
            end = pos + hl + ln
            if end > n:
                break
            opcode = data[pos] & 0x0F
            if opcode >= 8 or not counting or ln < SMALL_FRAME:
                self._other(opcode, data[pos + hl : end])
                counting = self.counting
            else:
                count += 1
                nbytes += ln
                last_start, last_end = pos + hl, end
            pos = end
        self._buf = data[pos:] if pos < n else b""
        if count:
            before = self.count
            self.count = before + count
            self.nbytes += nbytes
            self.last = data[last_start:last_end]
            self.tracker.reached(before, self.count)

    def _other(self, opcode: int, payload: bytes) -> None:
        if opcode == 8:  # close
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        elif opcode == 9:  # ping
            assert self.transport is not None
            self.transport.write(bytes([0x8A, 0x80]) + b"\0\0\0\0")
        elif opcode >= 8:
            return
        elif not self.counting:
            self.setup.put_nowait(payload)
        elif self.kind == "hub" and b"heartbeat" in payload:
            self.send(HUB_HEARTBEAT)
        elif self.kind == "socketio" and payload == b"2":
            self.send(b"3", text=True)

    async def expect(self) -> bytes:
        payload = await asyncio.wait_for(self.setup.get(), SETUP_TIMEOUT_S)
        if not payload and self.closed:
            raise ConnectionError(f"{self.kind}: closed during setup ({self.close_code})")
        return payload


def _request(port: int, path: str, subprotocol: str | None) -> bytes:
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


async def open_receiver(
    kind: str, port: int, user: int, conv: str, tracker: Tracker, token: str = "", after: int = 0
) -> Receiver:
    """Connect, handshake, join the conversation / room; the receiver then counts frames."""
    loop = asyncio.get_running_loop()
    path, sub = ("/socket.io/?EIO=4&transport=websocket", None) if kind == "socketio" else (
        "/ws", SUBPROTOCOL_MSGPACK
    )  # fmt: skip
    _, proto = await loop.create_connection(lambda: Receiver(kind, tracker), "127.0.0.1", port)
    assert proto.transport is not None
    proto.transport.write(_request(port, path, sub))
    await asyncio.wait_for(proto.handshaken, SETUP_TIMEOUT_S)
    if kind == "hub":
        token = token or bench_token(user)
        proto.send(
            msgpack.packb({"type": "hello", "id": 1, "auth": {"method": "token", "token": token}})
        )
        welcome = msgpack.unpackb(await proto.expect())
        if welcome.get("type") != "welcome":
            raise ConnectionError(f"hub hello refused: {welcome}")
        sync = {"type": "chat.sync", "id": 2, "conv": conv, "after_seq": after}
        proto.send(msgpack.packb(sync))
        while True:
            reply = msgpack.unpackb(await proto.expect())
            if reply.get("type") == "result" and reply.get("id") == 2:
                break
            if reply.get("type") == "error":
                raise ConnectionError(f"hub chat.sync refused: {reply}")
    elif kind == "broadcast":
        proto.send(msgpack.packb({"type": "hello", "role": "receiver"}))
        await proto.expect()
    else:
        opened = await proto.expect()
        if not opened.startswith(b"0"):
            raise ConnectionError(f"engine.io open expected, got {opened[:80]!r}")
        proto.send(b'40{"role":"receiver"}', text=True)
        while not (await proto.expect()).startswith(b"40"):
            pass
    proto.counting = True
    return proto


def last_seq(kind: str, frame: bytes) -> int | None:
    """The ``seq`` of an event frame of ``kind`` (None when it is not one)."""
    try:
        if kind == "socketio":
            body: Any = json.loads(frame[frame.index(b"[") :])[1]
        else:
            body = msgpack.unpackb(frame)
        seq = body.get("seq") if isinstance(body, dict) else None
        return seq if isinstance(seq, int) else None
    except (ValueError, TypeError, IndexError, msgpack.UnpackException):
        return None


def report(
    receivers: list[Receiver], tracker: Tracker, cpu_s: float, wall_s: float
) -> dict[str, Any]:
    """The JSON line this process prints at the end."""
    seqs = [last_seq(r.kind, r.last) for r in receivers]
    return {
        "sockets": len(receivers),
        "complete": tracker.total_done,
        "frames": sum(r.count for r in receivers),
        "measured_frames": sum(max(0, r.count - tracker.warm) for r in receivers),
        "bytes": sum(r.nbytes for r in receivers),
        "done_at": tracker.last_done_at,
        "closed": sum(r.closed for r in receivers),
        "close_codes": sorted({r.close_code for r in receivers if r.close_code is not None}),
        "last_seq_min": min((s for s in seqs if s is not None), default=None),
        "last_seq_max": max((s for s in seqs if s is not None), default=None),
        "last_seq_bad": sum(s is None for s in seqs),
        "cpu_s": cpu_s,
        "wall_s": wall_s,
    }


async def main_async(args: argparse.Namespace) -> None:
    raise_nofile_limit()
    tracker = Tracker(args.count, args.warm, args.total)
    tokens = read_tokens(args.tokens) if args.tokens else []
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(user: int) -> Receiver:
        async with gate:
            token = tokens[user] if tokens else ""
            return await open_receiver(
                args.kind, args.port, user, args.conv, tracker, token, args.after
            )

    receivers = await asyncio.gather(*(one(args.first + i) for i in range(args.count)))
    print("READY", flush=True)
    await _wait_progress(tracker.all_warm, receivers, args.stall)
    print("WARM", flush=True)
    cpu0, wall0 = time.process_time(), time.monotonic()
    await _wait_progress(tracker.all_done, receivers, args.stall)
    cpu_s, wall_s = time.process_time() - cpu0, time.monotonic() - wall0
    print(json.dumps(report(receivers, tracker, cpu_s, wall_s)), flush=True)
    for r in receivers:
        if r.transport is not None and not r.closed:
            r.transport.write(client_frame(b"\x03\xe8", opcode=8))
            r.transport.close()
    await asyncio.sleep(0.1)


async def _wait_progress(done: asyncio.Event, receivers: list[Receiver], stall_s: float) -> None:
    """Wait for ``done``; give up when no frame arrived for ``stall_s`` seconds."""
    seen, since = -1, time.monotonic()
    while not done.is_set():
        with_timeout = asyncio.create_task(done.wait())
        await asyncio.wait([with_timeout], timeout=0.25)
        with_timeout.cancel()
        now_count = sum(r.count for r in receivers)
        if now_count != seen:
            seen, since = now_count, time.monotonic()
        elif time.monotonic() - since > stall_s:
            return


def main(argv: list[str] | None = None) -> int:
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_chat_client")
    parser.add_argument("--kind", choices=("hub", "broadcast", "socketio"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--first", type=int, default=0, help="first user number")
    parser.add_argument("--count", type=int, required=True, help="sockets")
    parser.add_argument("--conv", default="", help="conversation id (hub)")
    parser.add_argument("--tokens", help="JSON list of session tokens, user n's at n (hub)")
    parser.add_argument("--after", type=int, default=0, help="chat.sync after_seq (hub)")
    parser.add_argument("--warm", type=int, required=True, help="warm-up events per socket")
    parser.add_argument("--total", type=int, required=True, help="all events per socket")
    parser.add_argument("--stall", type=float, default=10.0, help="seconds without progress")
    uvloop.run(main_async(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
