"""Client process of the chat latency section (:mod:`loadtests.bench_chat_latency`).

``python -m loadtests.latency_client --port N --tokens FILE --conv C --after SEQ
--members F:C --senders-per-member K --proc P --procs Q --rate R --warmup W
--duration D --out PATH``

- receivers: one socket per member ``F..F+C-1``; ``hello`` (token), then
  ``chat.sync {conv, after_seq}``; every ``event`` is decoded and its latency
  taken;
- senders: ``K`` more sockets per member (not following), answering nothing
  but counting the ``result`` / ``error`` of each ``chat.send``.

Prints ``READY`` once every socket is set up, then waits for ``GO <t0>`` on
stdin (``t0``: ``time.monotonic_ns()``, the same clock in every process). The
schedule is open loop and shared by the ``Q`` processes: message ``k`` of the
run (all processes) is due at ``t0 + k / R``; this process (number ``P``) sends
the ``k`` with ``k % Q == P``, in turn on its sender sockets, whether or not
earlier ones were answered. The intended time travels in ``client_msg_id``
(``<intended ns>-<k>``), so each receiver measures ``arrival - intended``:
the server's queueing, the client's own lateness and the wire, never hidden
by a late send. Messages due in the first ``W`` seconds are not measured.

At the end (every expected event arrived, or ``--drain`` seconds without
one), writes the samples (``array('q')``: intended - t0, latency, in ns,
interleaved) to ``--out`` and prints one JSON line of counts and CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import msgpack

from loadtests.bench_server import raise_nofile_limit
from loadtests.seed import read_tokens
from loadtests.ws_client import HEARTBEAT, RawWs, open_hub

TEXT = (
    "BP 128/82, pulse 71, SpO2 97%. Patient reports mild headache since this morning;"
    " no fever. Please review the EEG before 14:00."
)
SMALL_FRAME = 64


_CMID = msgpack.packb("client_msg_id")


def intended_of(payload: bytes) -> int | None:
    """The intended send time in an event's ``client_msg_id`` (``<ns>-<k>``), or None.

    Reads the msgpack string after the ``client_msg_id`` key without decoding
    the whole frame (the receivers see 40,000 events/s at 2,000 msg/s).
    """
    at = payload.find(_CMID)
    if at < 0 or b"event" not in payload[:32]:
        return None
    at += len(_CMID)
    head = payload[at]
    if 0xA0 <= head <= 0xBF:
        start, n = at + 1, head & 0x1F
    elif head == 0xD9:
        start, n = at + 2, payload[at + 1]
    else:
        return None
    value = payload[start : start + n]
    return int(value[: value.index(b"-")])


class Latencies:
    """Every measured arrival of this process's receivers."""

    def __init__(self, measure_from: int, t0: int) -> None:
        self.samples = array("q")
        self.measure_from, self.t0 = measure_from, t0
        self.received = 0
        self.progress = asyncio.Event()
        self.other: collections.Counter[str] = collections.Counter()

    def on_frame(self, ws: RawWs, payload: bytes) -> None:
        now = time.monotonic_ns()
        if len(payload) < SMALL_FRAME and b"heartbeat" in payload:
            ws.send(HEARTBEAT)
            return
        intended = intended_of(payload)
        if intended is None:
            self.other[str(msgpack.unpackb(payload).get("type"))] += 1
            return
        self.progress.set()
        if intended >= self.measure_from:
            self.received += 1
            self.samples.append(intended - self.t0)
            self.samples.append(now - intended)


class Acks:
    """Replies to the senders' ``chat.send``."""

    def __init__(self) -> None:
        self.results = 0
        self.errors: collections.Counter[str] = collections.Counter()

    def on_frame(self, ws: RawWs, payload: bytes) -> None:
        if len(payload) < SMALL_FRAME and b"heartbeat" in payload:
            ws.send(HEARTBEAT)
            return
        msg = msgpack.unpackb(payload)
        kind = msg.get("type")
        if kind == "result":
            self.results += 1
        elif kind == "error":
            self.errors[str(msg.get("code"))] += 1


async def _setup(args: argparse.Namespace) -> tuple[list[RawWs], list[RawWs]]:
    tokens = read_tokens(args.tokens)
    first, count = (int(x) for x in args.members.split(":"))
    gate = asyncio.Semaphore(20)

    async def receiver(user: int) -> RawWs:
        async with gate:
            ws, _ = await open_hub(args.port, tokens[user])
        ws.send_msg({"type": "chat.sync", "id": 2, "conv": args.conv, "after_seq": args.after})
        reply = await ws.recv_msg()
        if reply.get("type") != "result":
            raise ConnectionError(f"chat.sync refused: {reply}")
        return ws

    async def sender(user: int) -> RawWs:
        async with gate:
            ws, _ = await open_hub(args.port, tokens[user])
        return ws

    users = range(first, first + count)
    receivers = await asyncio.gather(*(receiver(u) for u in users))
    senders = await asyncio.gather(
        *(sender(u) for u in users for _ in range(args.senders_per_member))
    )
    return list(receivers), list(senders)


def _write(path: str, samples: array[int]) -> None:
    Path(path).write_bytes(samples.tobytes())


def _wait_go() -> int:
    for line in sys.stdin:
        if line.startswith("GO "):
            return int(line.split()[1])
    raise SystemExit("latency_client: stdin closed before GO")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    receivers, senders = await _setup(args)
    print("READY", flush=True)
    t0 = await asyncio.get_running_loop().run_in_executor(None, _wait_go)
    step = 1e9 / args.rate
    total = int(args.rate * (args.warmup + args.duration))
    warm = int(args.rate * args.warmup)
    measure_from = t0 + int(warm * step)
    lat, acks = Latencies(measure_from, t0), Acks()
    for ws in receivers:
        ws.on_frame = lat.on_frame
    for ws in senders:
        ws.on_frame = acks.on_frame
    mine = range(args.proc, total, args.procs)
    cpu0 = wall0 = 0.0
    sent = sent_measured = 0
    late: list[int] = []
    i = 0
    while i < len(mine):
        now = time.monotonic_ns()
        while i < len(mine) and t0 + int(mine[i] * step) <= now:
            k = mine[i]
            if k >= warm and not sent_measured:
                cpu0, wall0 = time.process_time(), time.monotonic()
            intended = t0 + int(k * step)
            ws = senders[i % len(senders)]
            ws.send_msg(
                {"type": "chat.send", "id": i + 10, "conv": args.conv,
                 "client_msg_id": f"{intended}-{k}", "text": TEXT}
            )  # fmt: skip
            sent += 1
            if k >= warm:
                sent_measured += 1
                late.append(now - intended)
            i += 1
        if i < len(mine):
            await asyncio.sleep(max(0.0, (t0 + int(mine[i] * step) - time.monotonic_ns()) / 1e9))
    # Every process's measured messages reach every receiver here.
    measured_all = total - warm
    expected = measured_all * len(receivers)
    while lat.received < expected:
        lat.progress.clear()
        try:
            await asyncio.wait_for(lat.progress.wait(), args.drain)
        except TimeoutError:
            break
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    _write(args.out, lat.samples)
    closed = sum(not ws.open for ws in receivers + senders)
    late.sort()
    for ws in receivers + senders:
        ws.abort()
    return {
        "sent": sent,
        "sent_measured": sent_measured,
        "acked": acks.results,
        "errors": dict(acks.errors),
        "received": lat.received,
        "expected": expected,
        "other_frames": dict(lat.other),
        "closed": closed,
        "send_lag_p99_ms": late[int(len(late) * 0.99)] / 1e6 if late else None,
        "cpu_s": cpu,
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> int:
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m loadtests.latency_client", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", required=True)
    parser.add_argument("--conv", required=True)
    parser.add_argument("--after", type=int, default=0, help="chat.sync after_seq")
    parser.add_argument("--members", required=True, help="FIRST:COUNT users of this process")
    parser.add_argument("--senders-per-member", type=int, default=4)
    parser.add_argument("--proc", type=int, default=0, help="this process's number")
    parser.add_argument("--procs", type=int, default=1, help="client processes in the run")
    parser.add_argument("--rate", type=float, required=True, help="messages/s, all processes")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--drain", type=float, default=5.0, help="seconds without an event")
    parser.add_argument("--out", required=True, help="file for the latency samples")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    print(json.dumps(uvloop.run(main_async(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
