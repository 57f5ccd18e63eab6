"""Signalling relay load: pairs of clients bouncing offers, answers and candidates.

``python -m loadtests.calls_client --server hub|peerjs --port PORT [--tokens FILE]
--pairs 50 --window 8 --duration 10 --warmup 2`` (one process, uvloop).

Each pair (sockets ``2i`` and ``2i+1``) relays the same cycle of signalling
messages both ways: an SDP offer, an SDP answer and :data:`CANDIDATES`
trickled ICE candidates (the texts of :data:`OFFER_SDP` etc.). Every socket
starts with ``window`` messages in flight to its partner and sends the next
message of its cycle each time one arrives (closed loop), so the server
always has about ``2 x window x pairs`` messages to relay.

- ``hub``: sockets authenticated with ``hello`` (real session tokens), one
  direct conversation and one answered call per pair (``chat.create``,
  ``call.invite``, ``call.accept``), then ``call`` stream frames
  (``protocol/calls.py``) the hub relays without decoding their payload;
- ``peerjs``: PeerJS's own WebSocket protocol (``/peerjs?key=..&id=..&token=..``,
  JSON ``{"type": "OFFER"|"ANSWER"|"CANDIDATE", "payload": ..., "dst": ...}``),
  the payloads shaped as the PeerJS client sends them.

Frames are built and masked once (the masking key is not checked by
servers), so the client's cost per message is parsing a frame header and one
buffered write. Prints ``MEASURING`` when the measured part starts, ``DONE``
at its end, then one JSON line: messages received in the measured part,
per second, the client's CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import secrets
import time
from typing import Any

from loadtests import seed
from loadtests.ws_client import RawWs, client_frame, upgrade_request
from protocol.calls import Signal, signal_frame
from protocol.codec import SUBPROTOCOL_MSGPACK

#: Trickled candidates per negotiation cycle.
CANDIDATES = 8
OFFER_SDP = (
    "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "a=group:BUNDLE 0 1 2\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS stream\r\n"
    + "".join(
        f"m={kind} 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101\r\nc=IN IP4 0.0.0.0\r\n"
        "a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:Ab3d\r\na=ice-pwd:0123456789abcdefghijklmn\r\n"
        "a=ice-options:trickle\r\na=fingerprint:sha-256 "
        + ":".join(["AB"] * 32)
        + f"\r\na=setup:actpass\r\na=mid:{i}\r\na=sendrecv\r\na=rtcp-mux\r\n"
        + "".join(f"a=rtpmap:{96 + j} VP8/90000\r\na=rtcp-fb:{96 + j} nack\r\n" for j in range(6))
        for i, kind in enumerate(("audio", "video"))
    )
    + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\n"
    "a=sctp-port:5000\r\n"
)
ANSWER_SDP = OFFER_SDP.replace("a=setup:actpass", "a=setup:active")


def candidate(n: int) -> dict[str, Any]:
    line = f"candidate:{842163049 + n} 1 udp 1677729535 127.0.0.1 {50000 + n} typ host"
    return {"candidate": line + " generation 0 ufrag Ab3d network-cost 999",
            "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "Ab3d"}  # fmt: skip


#: How a relayed message starts: the hub's ``call`` stream frames; PeerJS's relayed types
#: (its server re-serialises with ``type`` first). Anything else is not a relayed message.
RELAYED_HUB = (b"\xc1",)
RELAYED_PEERJS = (b'{"type":"OFFER"', b'{"type":"ANSWER"', b'{"type":"CANDIDATE"')


def hub_cycle(call: str) -> list[bytes]:
    """The masked ``call`` stream frames of one negotiation cycle."""
    frames = [signal_frame(Signal.OFFER, call, OFFER_SDP.encode())]
    frames.append(signal_frame(Signal.ANSWER, call, ANSWER_SDP.encode()))
    for n in range(CANDIDATES):
        frames.append(signal_frame(Signal.CANDIDATE, call, json.dumps(candidate(n)).encode()))
    return [client_frame(f, 0x2) for f in frames]


def peerjs_cycle(dst: str) -> list[bytes]:
    """The masked PeerJS messages of one negotiation cycle (as the PeerJS client sends)."""
    conn = "mc_" + secrets.token_hex(6)
    messages: list[dict[str, Any]] = [
        {"type": "OFFER", "payload": {"sdp": {"type": "offer", "sdp": OFFER_SDP},
         "type": "media", "connectionId": conn}, "dst": dst},
        {"type": "ANSWER", "payload": {"sdp": {"type": "answer", "sdp": ANSWER_SDP},
         "type": "media", "connectionId": conn}, "dst": dst},
    ]  # fmt: skip
    for n in range(CANDIDATES):
        messages.append(
            {"type": "CANDIDATE", "payload": {"candidate": candidate(n), "type": "media",
             "connectionId": conn}, "dst": dst}
        )  # fmt: skip
    return [client_frame(json.dumps(m).encode(), 0x1) for m in messages]


class BounceWs(RawWs):
    """A client socket that, in relay mode, counts arrivals and answers each with its
    next message; the replies of one read leave in one write."""

    def __init__(self) -> None:
        super().__init__(None)
        self.cycle: list[bytes] = []
        self.i = 0
        self.out: list[bytes] = []
        self.state: dict[str, int] | None = None
        self.relayed: tuple[bytes, ...] = ()

    def next(self) -> bytes:
        frame = self.cycle[self.i]
        self.i = (self.i + 1) % len(self.cycle)
        return frame

    def relay(self, cycle: list[bytes], state: dict[str, int], relayed: tuple[bytes, ...]) -> None:
        """Switch to relay mode: a frame starting with one of ``relayed`` is a relayed
        message (counted, answered); any other (an error, a notice) is counted apart."""
        self.cycle, self.state, self.relayed = cycle, state, relayed
        self.on_frame = self._bounce

    def _bounce(self, ws: RawWs, payload: bytes) -> None:
        assert self.state is not None
        if not payload.startswith(self.relayed):
            self.state["unexpected"] += 1
            return
        self.state["received"] += 1
        self.out.append(self.next())

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.flush()

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out.clear()


async def open_bounce(port: int, path: str, subprotocol: str | None) -> BounceWs:
    """A :class:`BounceWs` connected to ``127.0.0.1:port`` and upgraded."""
    loop = asyncio.get_running_loop()
    _, ws = await loop.create_connection(BounceWs, "127.0.0.1", port)
    assert ws.transport is not None
    ws.transport.write(upgrade_request(port, path, subprotocol))
    await asyncio.wait_for(ws.handshaken, 30)
    return ws


async def hub_pairs(port: int, tokens: list[str], pairs: int) -> list[tuple[BounceWs, list[bytes]]]:
    """Authenticated sockets with one answered call per pair, and each one's cycle."""
    sockets = []
    for n in range(2 * pairs):
        ws = await open_bounce(port, "/ws", SUBPROTOCOL_MSGPACK)
        ws.send_msg({"type": "hello", "id": 1, "auth": {"method": "token", "token": tokens[n]}})
        await expect_type(ws, "welcome")
        sockets.append(ws)

    async def setup(i: int) -> str:
        a, b = sockets[2 * i], sockets[2 * i + 1]
        a.send_msg({"type": "chat.create", "id": 2, "kind": "direct",
                    "members": [seed.user_id(2 * i + 1)]})  # fmt: skip
        conv = (await expect_type(a, "result"))["data"]["conv"]
        a.send_msg({"type": "call.invite", "id": 3, "conv": conv, "party": f"bench-a-{i:04d}",
                    "offer": OFFER_SDP})  # fmt: skip
        call = (await expect_type(a, "result"))["data"]["call"]
        while (ev := await expect_type(b, "event"))["kind"] != "ring":
            pass
        b.send_msg({"type": "call.accept", "id": 4, "call": call, "party": f"bench-b-{i:04d}",
                    "answer": ANSWER_SDP})  # fmt: skip
        await expect_type(b, "result")
        while (ev := await expect_type(a, "event"))["kind"] != "accepted":
            pass
        del ev
        return str(call)

    calls = await asyncio.gather(*(setup(i) for i in range(pairs)))
    out = []
    for i, call in enumerate(calls):
        cycle = hub_cycle(call)
        out += [(sockets[2 * i], cycle), (sockets[2 * i + 1], cycle)]
    return out


async def expect_type(ws: RawWs, kind: str) -> dict[str, Any]:
    while True:
        message = await ws.recv_msg()
        if message.get("type") == kind:
            return message
        if message.get("type") == "error":
            raise ConnectionError(f"refused: {message}")


async def peerjs_pairs(port: int, pairs: int) -> list[tuple[BounceWs, list[bytes]]]:
    """PeerJS sockets (``OPEN`` received), and each one's cycle to its partner."""
    out = []
    for n in range(2 * pairs):
        path = f"/peerjs?key=peerjs&id=peer{n}&token=t{secrets.token_hex(4)}"
        ws = await open_bounce(port, path, None)
        opened = json.loads(await ws.recv())
        if opened.get("type") != "OPEN":
            raise ConnectionError(f"PeerJS refused: {opened}")
        out.append((ws, peerjs_cycle(f"peer{n ^ 1}")))
    return out


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main(args: argparse.Namespace) -> None:
    if args.server == "hub":
        socks = await hub_pairs(args.port, seed.read_tokens(args.tokens), args.pairs)
    else:
        socks = await peerjs_pairs(args.port, args.pairs)
    state = {"received": 0, "unexpected": 0}
    relayed = RELAYED_HUB if args.server == "hub" else RELAYED_PEERJS
    for ws, cycle in socks:
        ws.relay(cycle, state, relayed)
    for ws, _ in socks:  # the window: each socket starts with this many messages in flight
        ws.out = [ws.next() for _ in range(args.window)]
        ws.flush()
    await asyncio.sleep(args.warmup)
    print("MEASURING", flush=True)
    start_count, start_cpu, t0 = state["received"], cpu_seconds(), time.monotonic()
    await asyncio.sleep(args.duration)
    received, cpu, elapsed = state["received"] - start_count, cpu_seconds(), time.monotonic() - t0
    print("DONE", flush=True)
    dead = sum(1 for ws, _ in socks if not ws.open)
    print(json.dumps({"received": received, "per_s": received / elapsed, "seconds": elapsed,
                      "cpu_s": cpu - start_cpu, "closed_sockets": dead,
                      "unexpected": state["unexpected"]}), flush=True)  # fmt: skip
    for ws, _ in socks:
        ws.abort()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.calls_client", description=__doc__)
    parser.add_argument("--server", choices=["hub", "peerjs"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", help="session tokens (hub)")
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(parse()))
