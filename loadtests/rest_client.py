"""Open-loop HTTP load generator of the REST section (:mod:`loadtests.bench_rest`).

``python -m loadtests.rest_client --port N --method GET --path /api/v1/session
--tokens FILE --rate 800 --duration 30`` offers ``rate`` requests per second
for ``--warmup`` seconds (not recorded) then ``--duration`` seconds, and prints
one JSON line (see :func:`summary`).

Open loop: request ``k`` is due at ``start + k / rate`` (a fixed schedule),
whatever happened to the earlier ones. Its latency is measured from that
intended time to the end of its response, so a server that falls behind
is charged for the wait of every request queued behind (no coordinated
omission). The client's own lateness (when its schedule noticed a request
was due - intended) is reported apart, as ``send_lag``: the schedule wakes
on uvloop's 1 ms timer, and a busy client wakes later.

Connections are HTTP/1.1 keep-alive, one request at a time each (no
pipelining), at most ``--conns`` of them; a due request finding none idle
waits in a queue (its latency keeps counting). Each request carries
``Authorization: Bearer <token>``, the tokens used in turn. The parser is
httptools on raw asyncio protocols (uvloop): cheap enough that one process
offers thousands of requests per second on one core.

An error is a status other than 2xx, a connection lost with a request in
flight, or no answer within ``--drain`` seconds after the schedule ends.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import sys
import time
from typing import Any

import httptools

from loadtests.seed import read_tokens


class Stats:
    """What the measured requests did."""

    def __init__(self) -> None:
        self.latencies_ns: list[int] = []
        self.send_lag_ns: list[int] = []
        self.errors: collections.Counter[str] = collections.Counter()
        self.body_bytes = 0


class Client(asyncio.Protocol):
    """One keep-alive connection; one request in flight at most."""

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.current: tuple[int, bool] | None = None  # (intended ns, measured)
        self.body = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._end("bad_response")
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end("connection_lost")
        self.gen.lost(self)

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self.body += len(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if self.current is not None and self.current[1] and 200 <= status < 300:
            self.gen.stats.latencies_ns.append(time.monotonic_ns() - self.current[0])
            self.gen.stats.body_bytes += self.body
        self._end(None if 200 <= status < 300 else f"http_{status}")
        self.body = 0
        if not self.parser.should_keep_alive():
            assert self.transport is not None
            self.transport.close()
            return
        self.gen.idle(self)

    def _end(self, error: str | None) -> None:
        """The request in flight (if any) is over; ``error`` None when answered 2xx."""
        if self.current is None:
            return
        if error is not None and self.current[1]:
            self.gen.stats.errors[error] += 1
        self.current = None
        self.gen.finished()

    def send(self, request: bytes, intended: int, measured: bool) -> None:
        assert self.transport is not None
        self.current = (intended, measured)
        self.transport.write(request)


class Generator:
    """The pool of connections and the queue of due requests."""

    def __init__(self, args: argparse.Namespace, tokens: list[str]) -> None:
        self.port, self.max_conns = args.port, args.conns
        head = f"{args.method} {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
        tail = "Content-Length: 0\r\n\r\n"
        self.requests = [f"{head}Authorization: Bearer {t}\r\n{tail}".encode() for t in tokens] or [
            f"{head}{tail}".encode()
        ]
        self.stats = Stats()
        self.pool: set[Client] = set()
        self.free: list[Client] = []
        self.queue: collections.deque[tuple[int, bool]] = collections.deque()
        self.opening = 0
        self.next_request = 0
        self.outstanding = 0
        self.schedule_over = False
        self.done = asyncio.Event()

    async def open(self) -> None:
        """Open one more connection (a failure is counted, not raised)."""
        loop = asyncio.get_running_loop()
        self.opening += 1
        try:
            _, client = await loop.create_connection(lambda: Client(self), "127.0.0.1", self.port)
        except OSError:
            self.stats.errors["connect_failed"] += 1
            return
        finally:
            self.opening -= 1
        self.pool.add(client)
        self.idle(client)

    def lost(self, client: Client) -> None:
        self.pool.discard(client)
        if client in self.free:
            self.free.remove(client)

    def idle(self, client: Client) -> None:
        if client in self.pool:
            self.free.append(client)
        self._pump()

    def finished(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0 and self.schedule_over:
            self.done.set()

    def due(self, intended: int, measured: bool) -> None:
        """Request due at ``intended`` (ns): send it now, or queue it."""
        self.outstanding += 1
        if measured:
            self.stats.send_lag_ns.append(time.monotonic_ns() - intended)
        self.queue.append((intended, measured))
        self._pump()
        if self.queue and len(self.pool) + self.opening < self.max_conns:
            asyncio.get_running_loop().create_task(self.open())

    def _pump(self) -> None:
        while self.queue and self.free:
            client = self.free.pop()
            intended, measured = self.queue.popleft()
            request = self.requests[self.next_request % len(self.requests)]
            self.next_request += 1
            client.send(request, intended, measured)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the schedule; the summary of the measured part."""
    gen = Generator(args, read_tokens(args.tokens) if args.tokens else [])
    await asyncio.gather(*(gen.open() for _ in range(min(args.conns, args.initial_conns))))
    if not gen.pool:
        raise SystemExit("rest_client: no connection could be opened")
    total = int(args.rate * (args.warmup + args.duration))
    warm = int(args.rate * args.warmup)
    step = 1e9 / args.rate
    start = time.monotonic_ns() + 50_000_000
    cpu0, wall0 = time.process_time(), time.monotonic()
    k = 0
    while k < total:
        now = time.monotonic_ns()
        while k < total and start + int(k * step) <= now:
            if k == warm:
                cpu0, wall0 = time.process_time(), time.monotonic()
            gen.due(start + int(k * step), k >= warm)
            k += 1
        if k < total:
            await asyncio.sleep(max(0.0, (start + int(k * step) - time.monotonic_ns()) / 1e9))
    gen.schedule_over = True
    if gen.outstanding > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gen.done.wait(), args.drain)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    measured = total - warm
    missing = measured - len(gen.stats.latencies_ns) - sum(gen.stats.errors.values())
    if missing > 0:
        gen.stats.errors["no_answer"] += missing
    conns = len(gen.pool)
    for client in list(gen.pool):
        if client.transport is not None:
            client.transport.close()
    return summary(gen.stats, measured, args.duration, cpu, wall, conns)


def _pct(values: list[int], q: float) -> float:
    if not values:
        return math.nan
    return values[max(0, math.ceil(q / 100 * len(values)) - 1)] / 1e6


def summary(
    stats: Stats, offered: int, duration: float, cpu_s: float, wall_s: float, conns: int
) -> dict[str, Any]:
    """The JSON line: latencies in ms (from the intended send time), counts, client CPU."""
    lat = sorted(stats.latencies_ns)
    lag = sorted(stats.send_lag_ns)
    return {
        "offered": offered,
        "answered": len(lat),
        "errors": dict(stats.errors),
        "achieved_per_s": len(lat) / duration if duration else 0.0,
        "p50_ms": _pct(lat, 50),
        "p90_ms": _pct(lat, 90),
        "p99_ms": _pct(lat, 99),
        "max_ms": lat[-1] / 1e6 if lat else math.nan,
        "send_lag_p99_ms": _pct(lag, 99),
        "body_bytes": stats.body_bytes / len(lat) if lat else 0.0,
        "cpu_s": cpu_s,
        "wall_s": wall_s,
        "conns": conns,
    }


def main(argv: list[str] | None = None) -> int:
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m loadtests.rest_client", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--path", required=True)
    parser.add_argument("--tokens", help="JSON list of bearer tokens (seed.write_tokens)")
    parser.add_argument("--rate", type=float, required=True, help="requests per second offered")
    parser.add_argument("--duration", type=float, required=True, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--conns", type=int, default=64, help="keep-alive connections at most")
    parser.add_argument("--initial-conns", type=int, default=16, help="opened before starting")
    parser.add_argument("--drain", type=float, default=5.0, help="seconds to wait for answers")
    result = uvloop.run(run(parser.parse_args(argv)))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
