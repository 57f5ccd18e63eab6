"""Sender process of the chat fan-out section (:mod:`loadtests.bench_chat`).

``python -m loadtests.chat_sender --kind hub --port N --tokens FILE --conv C
--members M --senders S --window W --rate-per-socket R --burst B --warm X
--messages Y``

Opens ``S`` sender sockets (sender ``k`` is member ``k % M``; the hub's
``hello`` carries that member's session token), prints ``READY``, then on
``WARM`` on stdin sends the ``X`` warm-up messages and prints ``WARMED`` once
all are acknowledged, and on ``GO`` sends the ``Y`` measured ones and prints one
JSON line (when it started, when the last ack came, acks, errors, its CPU).

Messages are dealt round-robin to the sockets. Each socket keeps at most ``W``
unacknowledged messages and paces itself with a token bucket of ``R``
messages/s and ``B`` tokens (a well-behaved client under the hub's default
limit of 50 messages/s per socket, so it is never refused for its rate); the
baselines get the same senders, so the offered load is the same for the three
servers. Frames are the same size for the three (see :class:`Frames`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
from typing import Any

import msgpack

from loadtests.bench_server import raise_nofile_limit
from loadtests.seed import read_tokens
from loadtests.ws_client import HEARTBEAT, RawWs, open_hub, open_ws
from protocol.chat import ChatEvent, channel_of
from protocol.codec import MsgpackCodec
from protocol.messages import Event

#: The message text (the Socket.IO one is cut to give the same frame length).
TEXT = (
    "BP 128/82, pulse 71, SpO2 97%. Patient reports mild headache since this morning;"
    " no fever. Please review the EEG before 14:00."
)
SIO_PATH = "/socket.io/?EIO=4&transport=websocket"
BROADCAST_ACK = b"\x01"
_MSGPACK = MsgpackCodec()


# -- frames ------------------------------------------------------------------------------------
def event_frame(conv: str, seq: int, sender: str, at_ms: int, text: str = TEXT) -> bytes:
    """The hub's msgpack ``event`` frame of a chat message (as its fan-out encodes it)."""
    data = ChatEvent(
        seq=seq, kind="message", sender=sender, client_msg_id=f"b{seq:07d}", at=at_ms,
        text=text, version=1,
    )  # fmt: skip
    return _MSGPACK.encode(Event(ch=channel_of(conv), seq=seq, kind="message", data=data))


def _sio_event(conv: str, seq: int, sender: str, at_ms: int, text: str) -> dict[str, Any]:
    return {
        "type": "event", "ch": channel_of(conv), "seq": seq, "kind": "message",
        "data": {"seq": seq, "kind": "message", "sender": sender,
                 "client_msg_id": f"b{seq:07d}", "at": at_ms, "text": text, "version": 1},
    }  # fmt: skip


class Frames:
    """What the senders send for message ``seq`` (1-based, warm-up first) to server ``kind``.

    The broadcast senders send the hub's own event frame; the Socket.IO text
    is cut so that its ``42["chat",{...}]`` frame has the hub frame's length.
    """

    def __init__(self, kind: str, conv: str, middle_seq: int) -> None:
        self.kind, self.conv = kind, conv
        self.fake_conv = "c-0123456789abcdef"  # the baselines' channel: a hub-shaped id
        self.at_ms = int(time.time() * 1000)
        hub_len = len(event_frame(self.fake_conv, middle_seq, "u0", self.at_ms))
        emitted = "42" + json.dumps(
            ["chat", _sio_event(self.fake_conv, middle_seq, "u0", self.at_ms, TEXT)],
            separators=(",", ":"),
        )
        excess = len(emitted.encode()) - hub_len
        self.sio_text = TEXT[: len(TEXT) - max(0, excess)]

    def frame(self, seq: int, sender: int) -> bytes | str:
        if self.kind == "hub":
            frame: bytes = msgpack.packb(
                {"type": "chat.send", "id": seq, "conv": self.conv,
                 "client_msg_id": f"b{seq:07d}", "text": TEXT}
            )  # fmt: skip
            return frame
        if self.kind == "broadcast":
            return event_frame(self.fake_conv, seq, f"u{sender}", self.at_ms)
        body = _sio_event(self.fake_conv, seq, f"u{sender}", self.at_ms, self.sio_text)
        return f"42{seq}" + json.dumps(["msg", body], separators=(",", ":"))


# -- senders ----------------------------------------------------------------------------------
class Sender:
    """One sender socket: a window of unacknowledged messages and a token bucket."""

    def __init__(self, kind: str, ws: RawWs, window: int, rate: float, burst: int) -> None:
        self.kind, self.ws = kind, ws
        self.slots = asyncio.Semaphore(window)
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.refilled = float(burst), time.monotonic()
        self.acked = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.progress = asyncio.Event()
        ws.on_frame = self.on_frame

    def on_frame(self, ws: RawWs, payload: bytes) -> None:
        if self.kind == "broadcast":
            ack = payload == BROADCAST_ACK
        elif self.kind == "socketio":
            if payload == b"2":
                ws.send_text("3")
            ack = payload.startswith(b"43")
        elif len(payload) < 64 and b"heartbeat" in payload:
            ws.send(HEARTBEAT)
            ack = False
        else:
            reply = msgpack.unpackb(payload)
            ack = reply.get("type") in ("result", "error")
            if reply.get("type") == "error":
                self.errors[str(reply.get("code"))] += 1
        if ack:
            self.acked += 1
            self.slots.release()
            self.progress.set()

    async def _paced(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        if self.tokens < 1.0:
            await asyncio.sleep((1.0 - self.tokens) / self.rate)
            self.tokens, self.refilled = 1.0, time.monotonic()
        self.tokens -= 1.0

    async def send_all(self, frames: list[bytes | str]) -> None:
        """Send ``frames`` and wait until each is acknowledged (or the socket is gone)."""
        target = self.acked + len(frames)
        for frame in frames:
            await self.slots.acquire()
            await self._paced()
            if isinstance(frame, str):
                self.ws.send_text(frame)
            else:
                self.ws.send(frame)
        while self.acked < target and not self.ws.gone.done():
            self.progress.clear()
            await self.progress.wait()


async def open_sender(kind: str, port: int, token: str) -> RawWs:
    """A sender socket of ``kind`` with its handshake done; raises ConnectionError."""
    if kind == "hub":
        ws, _ = await open_hub(port, token)
        return ws
    if kind == "broadcast":
        ws = await open_ws(port)
        ws.send_msg({"type": "hello", "role": "sender"})
        await ws.recv()
        return ws
    ws = await open_ws(port, SIO_PATH, subprotocol=None)
    if not (await ws.recv()).startswith(b"0"):
        raise ConnectionError("engine.io open expected")
    ws.send_text('40{"role":"sender"}')
    while not (await ws.recv()).startswith(b"40"):
        pass
    return ws


def _deal(frames: Frames, first: int, count: int, senders: int) -> list[list[bytes | str]]:
    out: list[list[bytes | str]] = [[] for _ in range(senders)]
    for seq in range(first, first + count):
        out[seq % senders].append(frames.frame(seq, seq % senders))
    return out


def _wait_for(word: str) -> None:
    for line in sys.stdin:
        if line.strip() == word:
            return
    raise SystemExit(f"chat_sender: stdin closed before {word}")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    tokens = read_tokens(args.tokens) if args.tokens else []
    gate = asyncio.Semaphore(20)

    async def one(k: int) -> Sender:
        async with gate:
            token = tokens[k % args.members] if tokens else ""
            ws = await open_sender(args.kind, args.port, token)
        return Sender(args.kind, ws, args.window, args.rate_per_socket, args.burst)

    senders = await asyncio.gather(*(one(k) for k in range(args.senders)))
    frames = Frames(args.kind, args.conv, args.warm + args.messages // 2)
    warm = _deal(frames, 1, args.warm, args.senders)
    measured = _deal(frames, args.warm + 1, args.messages, args.senders)
    loop = asyncio.get_running_loop()
    print("READY", flush=True)
    await loop.run_in_executor(None, _wait_for, "WARM")
    await asyncio.gather(*(s.send_all(f) for s, f in zip(senders, warm, strict=True)))
    print("WARMED", flush=True)
    await loop.run_in_executor(None, _wait_for, "GO")
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(s.send_all(f) for s, f in zip(senders, measured, strict=True)))
    acked_at, cpu = time.monotonic(), time.process_time() - cpu0
    errors: collections.Counter[str] = collections.Counter()
    for s in senders:
        errors.update(s.errors)
    closed = sum(s.ws.gone.done() for s in senders)
    for s in senders:
        s.ws.abort()
    return {
        "t0": t0,
        "acked_at": acked_at,
        "acked": sum(s.acked for s in senders) - args.warm,
        "errors": dict(errors),
        "closed": closed,
        "cpu_s": cpu,
        "cap_per_s": args.senders * args.rate_per_socket,
    }


def main(argv: list[str] | None = None) -> int:
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m loadtests.chat_sender", description=__doc__)
    parser.add_argument("--kind", choices=("hub", "broadcast", "socketio"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", help="JSON list of session tokens (hub)")
    parser.add_argument("--conv", default="")
    parser.add_argument("--members", type=int, required=True, help="sender k is member k % M")
    parser.add_argument("--senders", type=int, required=True, help="sender sockets")
    parser.add_argument("--window", type=int, required=True, help="unacknowledged per socket")
    parser.add_argument("--rate-per-socket", type=float, default=45.0, help="messages/s")
    parser.add_argument("--burst", type=int, default=20, help="token bucket size")
    parser.add_argument("--warm", type=int, required=True, help="warm-up messages")
    parser.add_argument("--messages", type=int, required=True, help="measured messages")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    print(json.dumps(uvloop.run(main_async(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
