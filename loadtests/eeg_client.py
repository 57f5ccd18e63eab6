"""The EEG benchmark's client processes: one recorder, many viewers (raw asyncio sockets).

``python -m loadtests.eeg_client recorder --port P --mode hub|plain --channels C --rate R
--format F --seconds T`` opens a stream (hub: ``hello`` + ``eeg.open``; plain: a
``{"role": "recorder"}`` map), prints ``STREAM <id>``, waits for ``GO`` on stdin,
then sends ``eeg`` frames of 1/8 s in real time for T seconds, each stamped with
CLOCK_MONOTONIC in µs (the frame's device field), and prints one JSON line.

``python -m loadtests.eeg_client viewers --port P --mode hub|plain --stream S --count N``
opens N sockets (hub: user ``u-v<n>`` each, ``eeg.watch`` raw; plain: a
``{"role": "viewer"}`` map), prints ``READY``, and for every frame records
``now - device`` (latency from the recorder's send, on the shared monotonic
clock), bytes and frames, and the frames it missed (jumps in ``first``, gap
events); on ``STOP`` it prints one JSON line with the latencies after
``--warmup-s`` seconds (sorted, in µs, every 10th) and the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from typing import Any

import msgpack
import numpy as np
import uvloop

from loadtests.ws_client import RawWs, open_hub, open_ws
from protocol.eeg import FORMATS, decode_view, encode_samples
from protocol.streams import STREAM_MAGIC

TECH_TOKEN = "eeg-bench-tech".ljust(24, "x")


def viewer_token(n: int) -> str:
    """The bench token of viewer ``n`` (user ``u-v<n>``)."""
    return f"eeg-bench-v{n}".ljust(24, "x")


def now_us() -> int:
    return time.monotonic_ns() // 1000


async def line_from_stdin() -> str:
    loop = asyncio.get_running_loop()
    return (await loop.run_in_executor(None, sys.stdin.readline)).strip()


def meta_of(channels: int, rate: int, fmt: str) -> dict[str, Any]:
    lo, hi = (-32768, 32767) if fmt == "int16" else (-(2**23), 2**23 - 1)
    return {
        "rate": rate,
        "format": fmt,
        "device": "bench",
        "channels": [
            {
                "label": f"E{i + 1}",
                "physical_min": float(lo) / 10,
                "physical_max": float(hi) / 10,
                "digital_min": lo,
                "digital_max": hi,
            }
            for i in range(channels)
        ],
    }


async def recorder(args: argparse.Namespace) -> None:
    frame_samples = args.rate // 8
    if args.mode == "hub":
        ws, _ = await open_hub(args.port, TECH_TOKEN)
        ws.send_msg(
            {
                "type": "eeg.open",
                "id": 2,
                "exam": args.exam,
                "meta": meta_of(args.channels, args.rate, args.format),
            }
        )
        reply = await ws.recv_msg()
        if reply.get("type") != "result":
            raise SystemExit(f"eeg.open refused: {reply}")
        sid, number = reply["data"]["stream"], reply["data"]["number"]
    else:
        ws = await open_ws(args.port)
        ws.send_msg({"role": "recorder"})
        sid, number = "plain", 1
    ws.on_frame = lambda _ws, _p: None  # acks and heartbeats: not read
    rng = np.random.default_rng(1)
    dtype = np.dtype(FORMATS[args.format][2])
    block = rng.integers(-1000, 1000, (args.rate, args.channels)).astype(dtype)
    print(f"STREAM {sid}", flush=True)
    if await line_from_stdin() != "GO":
        return
    loop = asyncio.get_running_loop()
    frames = int(args.seconds * 8)
    started = loop.time()
    late = 0.0
    for i in range(frames):
        part = block[(i % 8) * frame_samples : (i % 8 + 1) * frame_samples]
        first = i * frame_samples
        frame = encode_samples(number, i, first, frame_samples, now_us(), part.tobytes())
        ws.send(frame)
        wait = started + (i + 1) / 8 - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        else:
            late = max(late, -wait)
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "frames": frames,
                "max_late_s": late,
                "frame_bytes": len(frame),
                "cpu_s": cpu.ru_utime + cpu.ru_stime,
            }
        ),
        flush=True,
    )
    await line_from_stdin()
    ws.abort()


class Viewers:
    """Counts and latencies of every viewer socket of this process."""

    def __init__(self, warmup_s: float) -> None:
        self.lat: list[int] = []
        self.bytes = self.frames = self.missed = self.gap_events = 0
        self.next_first: dict[int, int] = {}
        self.since = time.monotonic() + warmup_s

    def on_frame(self, ws: RawWs, payload: bytes) -> None:
        if payload[:1] != bytes((STREAM_MAGIC,)):
            if b"gap" in payload:
                msg = msgpack.unpackb(payload)
                if msg.get("kind") == "gap":
                    self.gap_events += 1
            elif b"heartbeat" in payload:
                ws.send_msg({"type": "heartbeat"})
            return
        now = now_us()
        if payload[1] == 0x46:  # eeg.view (hub)
            device = int.from_bytes(payload[20:24], "little")
            first = decode_view(payload).first
        else:  # eeg (the plain server forwards the recorder's frames)
            device = int.from_bytes(payload[16:20], "little")
            first = int.from_bytes(payload[8:12], "little") | payload[12] << 32 | payload[13] << 40
        key = id(ws)
        expected = self.next_first.get(key)
        if expected is not None and first > expected:
            self.missed += 1
        self.next_first[key] = first + int.from_bytes(
            payload[18:20] if payload[1] == 0x46 else payload[14:16], "little"
        )
        self.bytes += len(payload)
        self.frames += 1
        if time.monotonic() >= self.since:
            self.lat.append((now - device) & 0xFFFFFFFF)


async def viewers(args: argparse.Namespace) -> None:
    stats = Viewers(args.warmup_s)
    sockets: list[RawWs] = []
    for n in range(args.first, args.first + args.count):
        if args.mode == "hub":
            ws, _ = await open_hub(args.port, viewer_token(n))
            ws.send_msg({"type": "eeg.watch", "id": 2, "stream": args.stream})
            reply = await ws.recv_msg()
            if reply.get("type") != "result":
                raise SystemExit(f"eeg.watch refused: {reply}")
        else:
            ws = await open_ws(args.port)
            ws.send_msg({"role": "viewer"})
        ws.on_frame = stats.on_frame
        sockets.append(ws)
    print("READY", flush=True)
    await line_from_stdin()
    lat = sorted(stats.lat)
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "sockets": len(sockets),
                "frames": stats.frames,
                "bytes": stats.bytes,
                "missed": stats.missed,
                "gap_events": stats.gap_events,
                "latencies_us": lat[::10],
                "count": len(lat),
                "max_us": lat[-1] if lat else None,
                "cpu_s": cpu.ru_utime + cpu.ru_stime,
                "open": sum(1 for s in sockets if s.open),
            }
        ),
        flush=True,
    )
    for ws in sockets:
        ws.abort()


async def backfill(args: argparse.Namespace) -> None:
    """Record ``--seconds`` of samples as fast as the hub takes them, then time a late
    viewer reading all of it back (watch, then backfill pages, 4 in flight)."""
    rec, _ = await open_hub(args.port, TECH_TOKEN)
    rec.send_msg(
        {
            "type": "eeg.open",
            "id": 2,
            "exam": args.exam,
            "meta": meta_of(args.channels, args.rate, args.format),
        }
    )
    opened = (await rec.recv_msg())["data"]
    rng = np.random.default_rng(2)
    dtype = np.dtype(FORMATS[args.format][2])
    block = rng.integers(-1000, 1000, (args.rate, args.channels)).astype(dtype).tobytes()
    total = int(args.seconds) * args.rate
    for i in range(int(args.seconds)):  # frames of one second
        rec.send(encode_samples(opened["number"], i, i * args.rate, args.rate, 0, block))
        if i % 100 == 99:
            await asyncio.sleep(0.5)  # under the stream budget (200 frames/s, burst 400)
    rec.send_msg({"type": "ping", "id": 3})
    while (await rec.recv_msg()).get("id") != 3:  # every frame before it was handled
        pass
    view, _ = await open_hub(args.port, viewer_token(0))
    started = time.perf_counter()
    view.send_msg({"type": "eeg.watch", "id": 1, "stream": opened["stream"]})
    watched = (await view.recv_msg())["data"]
    live_from = watched["live_from"]
    first = max(watched["first"], live_from - total)
    per = 256 * 1024 // (args.channels * FORMATS[args.format][1])
    pages = [(a, min(live_from, a + per)) for a in range(first, live_from, per)]
    held, frames, nbytes, rid, pending = 0, 0, 0, 10, 0
    todo = list(pages)
    while todo or pending:
        while todo and pending < 4:
            a, b = todo.pop(0)
            view.send_msg(
                {
                    "type": "eeg.backfill",
                    "id": rid,
                    "stream": opened["stream"],
                    "first": a,
                    "end": b,
                }
            )
            rid, pending = rid + 1, pending + 1
        payload = await view.recv()
        if payload[:1] == bytes((STREAM_MAGIC,)):
            vf = decode_view(payload)
            held += vf.count
            frames += 1
            nbytes += len(payload)
        elif msgpack.unpackb(payload).get("type") in ("result", "error"):
            pending -= 1
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "samples": held,
                "wanted": live_from - first,
                "frames": frames,
                "bytes": nbytes,
                "pages": len(pages),
            }
        ),
        flush=True,
    )
    rec.abort()
    view.abort()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtests.eeg_client", description=__doc__)
    parser.add_argument("role", choices=["recorder", "viewers", "backfill"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["hub", "plain"], default="hub")
    parser.add_argument("--exam", default="e-00000000000000000be0")
    parser.add_argument("--channels", type=int, default=21)
    parser.add_argument("--rate", type=int, default=256)
    parser.add_argument("--format", default="int16")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--stream", default="")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    args = parser.parse_args(argv)
    role = {"recorder": recorder, "viewers": viewers, "backfill": backfill}[args.role]
    uvloop.run(role(args))


if __name__ == "__main__":
    main()
