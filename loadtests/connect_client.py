"""Client process of the connect and presence sections: socket churn, or idle sockets held.

``python -m loadtests.connect_client churn --port N --tokens FILE --first F
--count C --concurrency K --duration S``: ``K`` workers each loop (open a
socket, ``hello`` with the next user's token, wait for ``welcome``, close it
and wait for the server to close TCP) for ``--warmup`` then ``--duration``
seconds; prints ``MEASURING`` when the measured part starts, ``DONE`` when it
ends, then one JSON line (cycles, cycles/s, time to welcome, errors, this
process's CPU over the measured part).

``python -m loadtests.connect_client hold --port N --tokens FILE --first F
--count C``: opens ``C`` authenticated sockets (users ``F..F+C-1``, at most
``--concurrency`` opening at once), prints ``READY {json}``, answers the
hub's heartbeats, and on a ``CLOSE`` line on stdin (or its end) closes them all
and prints one JSON line.

Users' tokens come from ``--tokens`` (:func:`loadtests.seed.write_tokens`);
token ``n`` is user ``n``'s session. The plain server ignores the token.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
from typing import Any

from loadtests.bench_server import raise_nofile_limit
from loadtests.seed import read_tokens
from loadtests.ws_client import HEARTBEAT, RawWs, open_hub


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q / 100))] * 1000


async def churn(args: argparse.Namespace) -> dict[str, Any]:
    tokens = read_tokens(args.tokens)
    users = list(range(args.first, args.first + args.count))
    errors: collections.Counter[str] = collections.Counter()
    welcome_s: list[float] = []
    cycle_s: list[float] = []
    next_user = 0
    start = time.monotonic() + 0.05
    measure_from = start + args.warmup
    stop_at = measure_from + args.duration
    cycles = 0

    async def worker() -> None:
        nonlocal next_user, cycles
        while time.monotonic() < stop_at:
            user = users[next_user % len(users)]
            next_user += 1
            began = time.monotonic()
            try:
                ws, to_welcome = await open_hub(args.port, tokens[user])
                await ws.close()
            except (OSError, ConnectionError, TimeoutError) as exc:
                if began >= measure_from:
                    errors[type(exc).__name__ + (f": {exc}"[:60] if str(exc) else "")] += 1
                await asyncio.sleep(0.01)
                continue
            ended = time.monotonic()
            if began >= measure_from and ended <= stop_at:
                cycles += 1
                welcome_s.append(to_welcome)
                cycle_s.append(ended - began)

    await asyncio.sleep(max(0.0, start - time.monotonic()))
    workers = [asyncio.create_task(worker()) for _ in range(args.concurrency)]
    await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
    print("MEASURING", flush=True)
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(max(0.0, stop_at - time.monotonic()))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    print("DONE", flush=True)
    await asyncio.gather(*workers)
    return {
        "cycles": cycles,
        "per_s": cycles / args.duration,
        "welcome_p50_ms": _pct(welcome_s, 50),
        "welcome_p99_ms": _pct(welcome_s, 99),
        "cycle_p50_ms": _pct(cycle_s, 50),
        "cycle_p99_ms": _pct(cycle_s, 99),
        "errors": dict(errors),
        "cpu_s": cpu,
        "wall_s": wall,
    }


def _answer_heartbeat(ws: RawWs, payload: bytes) -> None:
    if len(payload) < 64 and b"heartbeat" in payload:
        ws.send(HEARTBEAT)


async def hold(args: argparse.Namespace) -> dict[str, Any]:
    tokens = read_tokens(args.tokens)
    gate = asyncio.Semaphore(args.concurrency)
    errors: collections.Counter[str] = collections.Counter()
    welcome_s: list[float] = []

    async def one(user: int) -> RawWs | None:
        async with gate:
            try:
                ws, seconds = await open_hub(args.port, tokens[user])
            except (OSError, ConnectionError, TimeoutError) as exc:
                errors[type(exc).__name__ + (f": {exc}"[:60] if str(exc) else "")] += 1
                return None
        ws.on_frame = _answer_heartbeat
        welcome_s.append(seconds)
        return ws

    started, cpu0 = time.monotonic(), time.process_time()
    opened = await asyncio.gather(*(one(u) for u in range(args.first, args.first + args.count)))
    sockets = [ws for ws in opened if ws is not None]
    ready = {
        "opened": len(sockets),
        "seconds": time.monotonic() - started,
        "cpu_s": time.process_time() - cpu0,
        "welcome_p50_ms": _pct(welcome_s, 50),
        "welcome_p99_ms": _pct(welcome_s, 99),
        "errors": dict(errors),
    }
    print("READY " + json.dumps(ready), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, _wait_for_close)
    still_open = sum(ws.open for ws in sockets)
    codes = collections.Counter(ws.close_code for ws in sockets if ws.close_code is not None)
    close_gate = asyncio.Semaphore(args.concurrency)

    async def close(ws: RawWs) -> None:
        async with close_gate:
            await ws.close(wait_s=5.0)

    await asyncio.gather(*(close(ws) for ws in sockets))
    return {
        "opened": len(sockets),
        "open_at_end": still_open,
        "closed_by_server": {str(k): v for k, v in codes.items()},
    }


def _wait_for_close() -> None:
    for line in sys.stdin:
        if line.strip() == "CLOSE":
            return


def main(argv: list[str] | None = None) -> int:
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m loadtests.connect_client", description=__doc__)
    parser.add_argument("mode", choices=("churn", "hold"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", required=True, help="JSON list of session tokens")
    parser.add_argument("--first", type=int, default=0, help="first user number")
    parser.add_argument("--count", type=int, required=True, help="users (hold: sockets)")
    parser.add_argument("--concurrency", type=int, default=32, help="sockets opening at once")
    parser.add_argument("--duration", type=float, default=10.0, help="churn: measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="churn: seconds before")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    result = uvloop.run(churn(args) if args.mode == "churn" else hold(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
