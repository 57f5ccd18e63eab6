"""Invite-to-connected time of real WebRTC calls: two aiortc peers driven through the SDK.

``python -m loadtests.calls_connect_client --port PORT --tokens FILE --calls N``

Users 0 and 1 (seeded, real session tokens) connect with the Python SDK
(``clients.calls``), open a direct conversation, and place ``N`` calls one
after the other: the caller gathers (host candidates on 127.0.0.1 only, no
STUN/TURN), invites, the callee answers with its aiortc peer, both trickle
their candidates through the hub, and the call counts as connected when the
caller's ``RTCPeerConnection`` is ``connected`` (ICE and DTLS done); then both
wait for the first remote video frame, the caller hangs up, the callee sees
``ended``. Times on ``time.monotonic()`` of this process (both peers live here).

Prints one JSON line: per call, milliseconds from the invite being sent to
ringing (reply), to the answer at the caller, to connected, to the first
video frame; and the gathering time before the invite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from clients.call_peer import answer, pump
from clients.calls import Calls
from clients.sdk import MedhubClient
from loadtests import seed
from media.peer import MediaPeer, split_candidates, use_loopback_only


async def one_call(alice: Calls, bob: Calls, conv: str, first_frames: int = 1) -> dict[str, float]:
    pa, pb = MediaPeer([], size=(256, 192)), MediaPeer([], size=(256, 192))
    t: dict[str, float] = {"start": time.monotonic()}

    async def callee() -> None:
        ring = await bob.incoming(30)
        t["ring"] = time.monotonic()
        await answer(ring, pb)
        await pb.wait_video_frames(first_frames, 30)
        await ring.ended(30)

    answering = asyncio.ensure_future(callee())
    try:
        local = await pa.offer()
        sdp, candidates = split_candidates(local)
        t["gathered"] = time.monotonic()
        call = await alice.invite(sdp, conv=conv)
        t["ringing"] = time.monotonic()
        for c in candidates:
            await call.send_candidate(c)
        await call.send_end_of_candidates()
        await pa.accept_answer(await call.answered(30))
        t["answered"] = time.monotonic()
        pumping = asyncio.ensure_future(pump(call, pa))
        await asyncio.wait_for(pa.connected.wait(), 30)
        t["connected"] = time.monotonic()
        await pa.wait_video_frames(first_frames, 30)
        t["media"] = time.monotonic()
        await call.hangup()
        await asyncio.wait_for(answering, 30)
        pumping.cancel()
    finally:
        await pa.close()
        await pb.close()
    base = t["gathered"]  # the invite leaves right after gathering
    return {
        "gather_ms": (base - t["start"]) * 1000,
        "ring_ms": (t["ring"] - base) * 1000,
        "ringing_reply_ms": (t["ringing"] - base) * 1000,
        "answer_ms": (t["answered"] - base) * 1000,
        "connected_ms": (t["connected"] - base) * 1000,
        "media_ms": (t["media"] - base) * 1000,
    }


async def main(args: argparse.Namespace) -> None:
    use_loopback_only()
    tokens = seed.read_tokens(args.tokens)
    base = f"http://127.0.0.1:{args.port}"
    a = MedhubClient(base, token=tokens[0], use_ticket=False)
    b = MedhubClient(base, token=tokens[1], use_ticket=False)
    alice, bob = Calls(a), Calls(b)
    await a.connect()
    await b.connect()
    try:
        conv = await a.create_conversation("direct", [seed.user_id(1)])
        for _ in range(args.warmup):
            await one_call(alice, bob, conv)
        calls = [await one_call(alice, bob, conv) for _ in range(args.calls)]
    finally:
        await a.close()
        await b.close()
    print(json.dumps({"calls": calls}), flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.calls_connect_client", description=__doc__
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", required=True)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    return parser.parse_args(argv)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(parse()))
