"""WebSocket benchmark: the hub beside a plain ``websockets`` server, in one run.

``python -m loadtests.bench_ws`` prints the markdown section; :func:`run`
returns it (``loadtests.bench`` writes it to docs/benchmarks.md). Each server
runs as its own subprocess on a free loopback port (:mod:`loadtests.plain_server`,
:mod:`loadtests.bench_server`), started fresh for each measurement, and the
client does the same work against both: msgpack frames, a ``hello`` answered by
``welcome``, ``ping`` requests answered by ``result``.

Measurements:

- round trip: one client, :data:`RTT_PINGS` sequential pings after
  :data:`RTT_WARMUP`, each timed with ``perf_counter_ns`` from before the send
  to after the reply is decoded;
- concurrent: :data:`CONC_CLIENTS` clients each sending :data:`CONC_PINGS`
  sequential pings at the same time (throughput and latency percentiles);
- memory: the server's RSS (and PSS) after start-up and one warm-up
  connection, then after :data:`IDLE_CONNECTIONS` authenticated idle sockets,
  once it is stable; the difference divided by the number of sockets.

Targets (issue "Speed and memory"): hub p99 at most :data:`RTT_TARGET_RATIO`
times the plain server's, and memory per idle socket at most
:data:`MEMORY_TARGET_RATIO` times. A missed target is reported, never hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import math
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from loadtests.bench_server import bench_token, raise_nofile_limit
from loadtests.servers import (
    BenchError,
    ServerProcess,
    cpu_seconds,
    machine_facts,
    memory_of,
    running,
)
from protocol.codec import SUBPROTOCOL_MSGPACK

#: Sequential pings timed by the round-trip measurement, after the warm-up.
RTT_PINGS = 5_000
RTT_WARMUP = 500
#: Concurrent variant: clients, and sequential pings per client (after a warm-up each).
CONC_CLIENTS = 50
CONC_PINGS = 200
CONC_WARMUP = 20
#: Idle authenticated sockets held open by the memory measurement.
IDLE_CONNECTIONS = 5_000
#: Sockets opened (and closed) at the same time, at most.
CONNECT_CONCURRENCY = 200
#: The server's RSS is "stable" when it moved less than this over STABLE_WINDOW_S.
STABLE_BYTES = 256 * 1024
STABLE_WINDOW_S = 2.0
STABLE_MAX_WAIT_S = 20.0
#: Targets from the issue.
RTT_TARGET_RATIO = 1.5
MEMORY_TARGET_RATIO = 2.0

#: The two servers this section compares (kind -> module).
SERVERS: dict[str, str] = {"plain": "loadtests.plain_server", "hub": "loadtests.bench_server"}
HEARTBEAT_REPLY = msgpack.packb({"type": "heartbeat"})


async def stable_memory(pid: int) -> tuple[tuple[int, int], float]:
    """Sample every 0.25 s until RSS moved less than STABLE_BYTES over STABLE_WINDOW_S.

    Returns the last (RSS, PSS) and the seconds waited; gives up waiting
    (and returns the last sample) after STABLE_MAX_WAIT_S.
    """
    started = time.monotonic()
    window = int(STABLE_WINDOW_S / 0.25) + 1
    samples: list[tuple[int, int]] = []
    while True:
        samples.append(memory_of(pid))
        recent = [rss for rss, _ in samples[-window:]]
        waited = time.monotonic() - started
        if len(recent) == window and max(recent) - min(recent) < STABLE_BYTES:
            return samples[-1], waited
        if waited > STABLE_MAX_WAIT_S:
            return samples[-1], waited
        await asyncio.sleep(0.25)


# -- the client ---------------------------------------------------------------------------
async def open_client(url: str, n: int) -> ClientConnection:
    """Connect with the msgpack subprotocol and authenticate as user ``u<n>``."""
    ws = await connect(
        url,
        subprotocols=[SUBPROTOCOL_MSGPACK],  # type: ignore[list-item]
        compression=None,
        ping_interval=None,
        max_size=2**20,
        open_timeout=60,
        close_timeout=10,
    )
    hello = {"type": "hello", "id": "h", "auth": {"method": "token", "token": bench_token(n)}}
    await ws.send(msgpack.packb(hello))
    welcome = await _reply(ws)
    if welcome.get("type") != "welcome":
        await ws.close()
        raise BenchError(f"expected welcome, got {welcome}")
    return ws


async def _reply(ws: ClientConnection) -> dict[str, Any]:
    """The next frame that is not a server heartbeat, decoded."""
    while True:
        message = msgpack.unpackb(await ws.recv(), raw=False)
        if not isinstance(message, dict):
            raise BenchError(f"not a map: {message!r}")
        if message.get("type") != "heartbeat":
            return message
        await ws.send(HEARTBEAT_REPLY)


async def ping_once(ws: ClientConnection, request_id: int) -> int:
    """Send one ping and wait for its result; return the round trip in nanoseconds."""
    started = time.perf_counter_ns()
    await ws.send(msgpack.packb({"type": "ping", "id": request_id}))
    reply = await _reply(ws)
    elapsed = time.perf_counter_ns() - started
    if reply.get("type") != "result" or reply.get("id") != request_id:
        raise BenchError(f"ping {request_id}: unexpected reply {reply}")
    return elapsed


async def ping_loop(ws: ClientConnection, count: int, first_id: int = 1) -> list[int]:
    """Send ``count`` sequential pings; return each round trip in nanoseconds."""
    return [await ping_once(ws, i) for i in range(first_id, first_id + count)]


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile ``q`` (0..100) of an ascending list."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class Latency:
    """Round-trip percentiles, and the server's CPU time per request, in microseconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    server_cpu: float

    @classmethod
    def of(cls, samples_ns: list[int], server_cpu_s: float) -> Latency:
        s = sorted(samples_ns)
        return cls(
            len(s),
            percentile(s, 50) / 1000,
            percentile(s, 90) / 1000,
            percentile(s, 99) / 1000,
            s[-1] / 1000,
            server_cpu_s / len(s) * 1e6,
        )


@dataclass
class Concurrent:
    latency: Latency
    requests_per_s: float


@dataclass
class Memory:
    connections: int
    open_at_measure: int
    rss_before: int
    rss_after: int
    pss_before: int
    pss_after: int
    connect_s: float
    settle_s: float

    @property
    def rss_per_conn(self) -> float:
        return (self.rss_after - self.rss_before) / self.connections

    @property
    def pss_per_conn(self) -> float:
        return (self.pss_after - self.pss_before) / self.connections


@dataclass
class Results:
    rtt: dict[str, Latency] = field(default_factory=dict)
    concurrent: dict[str, Concurrent] = field(default_factory=dict)
    memory: dict[str, Memory] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


async def measure_rtt(servers: dict[str, ServerProcess]) -> dict[str, Latency]:
    """One client per server, pinging them in turn: RTT_WARMUP pings, then RTT_PINGS timed.

    Interleaving (one ping to each server, then the next) means a burst of
    load from elsewhere on the machine hits every server alike; only one
    request is in flight at a time.
    """
    clients = {kind: await open_client(server.url, 1) for kind, server in servers.items()}
    samples: dict[str, list[int]] = {kind: [] for kind in clients}
    try:
        for ws in clients.values():
            await ping_loop(ws, RTT_WARMUP)
        gc.collect()
        cpu = {kind: cpu_seconds(server.pid) for kind, server in servers.items()}
        for request_id in range(RTT_WARMUP + 1, RTT_WARMUP + RTT_PINGS + 1):
            for kind, ws in clients.items():
                samples[kind].append(await ping_once(ws, request_id))
        cpu = {kind: cpu_seconds(server.pid) - cpu[kind] for kind, server in servers.items()}
    finally:
        await asyncio.gather(*(ws.close() for ws in clients.values()))
    return {kind: Latency.of(values, cpu[kind]) for kind, values in samples.items()}


async def measure_concurrent(server: ServerProcess) -> Concurrent:
    """CONC_CLIENTS clients, each CONC_PINGS sequential pings, all at once."""
    clients = await asyncio.gather(*(open_client(server.url, n) for n in range(CONC_CLIENTS)))
    try:
        await asyncio.gather(*(ping_loop(ws, CONC_WARMUP) for ws in clients))
        gc.collect()
        cpu = cpu_seconds(server.pid)
        started = time.perf_counter()
        per_client = await asyncio.gather(
            *(ping_loop(ws, CONC_PINGS, first_id=CONC_WARMUP + 1) for ws in clients)
        )
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(server.pid) - cpu
    finally:
        await asyncio.gather(*(ws.close() for ws in clients))
    samples = [s for client in per_client for s in client]
    return Concurrent(Latency.of(samples, cpu), len(samples) / elapsed)


async def _answer_heartbeats(ws: ClientConnection) -> None:
    """Keep an idle socket alive: answer the hub's heartbeats until it closes."""
    with contextlib.suppress(ConnectionClosed):
        async for frame in ws:
            message = msgpack.unpackb(frame, raw=False)
            if isinstance(message, dict) and message.get("type") == "heartbeat":
                await ws.send(HEARTBEAT_REPLY)


async def _bounded(jobs: list[Callable[[], Awaitable[Any]]], limit: int) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return await asyncio.gather(*(one(job) for job in jobs), return_exceptions=True)


async def measure_memory(server: ServerProcess) -> Memory:
    """RSS after a warm-up socket, then with IDLE_CONNECTIONS idle authenticated sockets."""
    warm = await open_client(server.url, 0)
    await ping_loop(warm, 10)
    await warm.close()
    (rss_before, pss_before), _ = await stable_memory(server.pid)
    readers: list[asyncio.Task[None]] = []

    async def open_idle(n: int) -> ClientConnection:
        ws = await open_client(server.url, n)
        readers.append(asyncio.create_task(_answer_heartbeats(ws)))
        return ws

    started = time.monotonic()
    opened = await _bounded(
        [functools.partial(open_idle, n) for n in range(1, IDLE_CONNECTIONS + 1)],
        CONNECT_CONCURRENCY,
    )
    connect_s = time.monotonic() - started
    clients = [ws for ws in opened if isinstance(ws, ClientConnection)]
    failures = [exc for exc in opened if not isinstance(exc, ClientConnection)]
    try:
        if failures:
            raise BenchError(
                f"{server.kind}: {len(failures)} of {IDLE_CONNECTIONS} connections failed,"
                f" first: {failures[0]!r}"
            )
        (rss_after, pss_after), settle_s = await stable_memory(server.pid)
        still_open = sum(ws.state is State.OPEN for ws in clients)
    finally:
        await _bounded([ws.close for ws in clients], CONNECT_CONCURRENCY)
        await asyncio.wait_for(asyncio.gather(*readers, return_exceptions=True), 30)
    return Memory(
        IDLE_CONNECTIONS,
        still_open,
        rss_before,
        rss_after,
        pss_before,
        pss_after,
        connect_s,
        settle_s,
    )


def _ratio(hub: float, plain: float) -> float:
    return hub / plain if plain > 0 else math.inf


def _verdict(ratio: float, target: float) -> str:
    return "**met**" if ratio <= target else "**missed**"


def render(results: Results, facts: list[str], elapsed_s: float) -> str:
    """The markdown section for docs/benchmarks.md."""
    out = [
        "## WebSocket: round trip and memory per idle socket",
        "",
        "Produced by `make bench` (this section alone:"
        " `.venv/bin/python -m loadtests.bench --only ws`), in"
        f" {elapsed_s:.0f} s. Both servers run as subprocesses on loopback, started fresh for"
        " each measurement, on the same machine as the client (2 processes share the cores).",
        "",
        "- plain: `loadtests/plain_server.py`, `websockets.asyncio.server` on uvloop,"
        " compression off, protocol pings off; answers hello and ping with msgpack maps.",
        "- hub: `loadtests/bench_server.py`, `build_app` + `uvicorn_config` + `HubServer`"
        " (uvicorn `websockets-sansio`, httptools, uvloop, permessage-deflate off), SQLite"
        " and the audit trail in a temporary directory, bench authenticator, generous rate"
        " limits, log level info, other settings default.",
        "- client: one process, `websockets.asyncio.client` on uvloop, msgpack frames.",
        "",
        "Machine:",
        "",
    ]
    out += [f"- {fact}" for fact in facts]
    out += ["", f"### Round trip: one client, {RTT_PINGS:,} sequential pings", ""]
    out += [
        f"One client socket per server, after {RTT_WARMUP} warm-up pings each. Pings alternate"
        " between the two servers (one in flight at a time), so load from elsewhere on the"
        " machine falls on both alike. Each ping is timed from before the send to after the"
        " reply is decoded (`time.perf_counter_ns`). Server CPU is the server process's"
        " user + system time (`/proc/PID/stat`) over the timed pings, per ping: unlike"
        " latency, it does not depend on what else the machine is doing.",
        "",
        "| server | p50 µs | p90 µs | p99 µs | max µs | server CPU µs/request |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, lat in results.rtt.items():
        out.append(
            f"| {kind} | {lat.p50:.0f} | {lat.p90:.0f} | {lat.p99:.0f} | {lat.max:.0f}"
            f" | {lat.server_cpu:.0f} |"
        )
    if {"hub", "plain"} <= results.rtt.keys():
        ratio = _ratio(results.rtt["hub"].p99, results.rtt["plain"].p99)
        p50 = _ratio(results.rtt["hub"].p50, results.rtt["plain"].p50)
        cpu = _ratio(results.rtt["hub"].server_cpu, results.rtt["plain"].server_cpu)
        out += [
            "",
            f"hub/plain p99: **{ratio:.2f}x** (target at most {RTT_TARGET_RATIO}x):"
            f" {_verdict(ratio, RTT_TARGET_RATIO)}. hub/plain p50: {p50:.2f}x;"
            f" server CPU per request: {cpu:.2f}x.",
        ]
    out += [
        "",
        f"### Concurrent: {CONC_CLIENTS} clients x {CONC_PINGS} sequential pings each",
        "",
        f"All clients in the one client process, after {CONC_WARMUP} warm-up pings each;"
        " throughput is all timed requests over the wall time.",
        "",
        "| server | requests/s | p50 µs | p90 µs | p99 µs | max µs | server CPU µs/request |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, conc in results.concurrent.items():
        lat = conc.latency
        out.append(
            f"| {kind} | {conc.requests_per_s:,.0f} | {lat.p50:.0f} | {lat.p90:.0f}"
            f" | {lat.p99:.0f} | {lat.max:.0f} | {lat.server_cpu:.0f} |"
        )
    if {"hub", "plain"} <= results.concurrent.keys():
        tput = _ratio(
            results.concurrent["hub"].requests_per_s, results.concurrent["plain"].requests_per_s
        )
        p99 = _ratio(results.concurrent["hub"].latency.p99, results.concurrent["plain"].latency.p99)
        out += ["", f"hub/plain: throughput {tput:.2f}x, p99 {p99:.2f}x (no target)."]
    out += [
        "",
        f"### Memory: {IDLE_CONNECTIONS:,} idle authenticated sockets",
        "",
        "Server RSS (`/proc/PID/status` VmRSS; PSS from `smaps_rollup`) after start-up and one"
        " warm-up socket, then after every socket has had its `welcome` and RSS has moved less"
        f" than {STABLE_BYTES // 1024} KiB over {STABLE_WINDOW_S:.0f} s. Sockets opened"
        f" {CONNECT_CONCURRENCY} at a time; the client answers heartbeats. Kernel socket"
        " buffers are not in RSS.",
        "",
        "| server | RSS before MiB | RSS after MiB | KiB/socket (RSS) | KiB/socket (PSS)"
        " | open at measure | connect s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, mem in results.memory.items():
        out.append(
            f"| {kind} | {mem.rss_before / 2**20:.1f} | {mem.rss_after / 2**20:.1f}"
            f" | {mem.rss_per_conn / 1024:.1f} | {mem.pss_per_conn / 1024:.1f}"
            f" | {mem.open_at_measure:,} | {mem.connect_s:.1f} |"
        )
    if {"hub", "plain"} <= results.memory.keys():
        ratio = _ratio(results.memory["hub"].rss_per_conn, results.memory["plain"].rss_per_conn)
        out += [
            "",
            f"hub/plain memory per socket: **{ratio:.2f}x** (target at most"
            f" {MEMORY_TARGET_RATIO}x): {_verdict(ratio, MEMORY_TARGET_RATIO)}.",
        ]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    out += ["", f"Load average (1, 5, 15 min) at the end: {load}.", "", "### Server logs", ""]
    if results.notes:
        shown = results.notes[:20]
        out += [f"- {note}" for note in shown]
        if len(results.notes) > len(shown):
            out.append(f"- ... and {len(results.notes) - len(shown)} more")
    else:
        out.append("No warning or error in either server's log; both exited cleanly on SIGTERM.")
    return "\n".join(out) + "\n"


async def run() -> str:
    """Run every measurement (about a minute or two) and return the markdown section."""
    raise_nofile_limit()
    started = time.monotonic()
    facts = machine_facts()
    results = Results()
    with tempfile.TemporaryDirectory(prefix="medhub-bench-ws-") as tmp:
        workdir = Path(tmp)
        async with contextlib.AsyncExitStack() as stack:
            servers = {
                kind: await stack.enter_async_context(running(kind, workdir, results.notes))
                for kind in SERVERS
            }
            results.rtt = await measure_rtt(servers)
            for kind, server in servers.items():
                results.concurrent[kind] = await measure_concurrent(server)
        for kind in SERVERS:
            async with running(kind, workdir, results.notes) as server:
                results.memory[kind] = await measure_memory(server)
    return render(results, facts, time.monotonic() - started)


def main() -> None:
    import uvloop

    print(uvloop.run(run()), end="")


if __name__ == "__main__":
    main()
