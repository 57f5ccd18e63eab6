"""Presence section: a node with ~20,000 authenticated sockets on a real Redis.

``python -m loadtests.bench_presence [--quick] [--sockets N]`` prints the
markdown section; :func:`run` returns it (``loadtests.bench --only presence``).

A private ``redis-server`` is started on a free port (as tests/services.py
does, never the machine's own) with keyspace notifications for sorted sets
on; the hub (:mod:`loadtests.bench_server` ``--real-auth``, broker ``redis``)
gets :func:`socket_count` sockets from :data:`HOLD_PROCS` client processes
(:mod:`loadtests.connect_client` ``hold``), one per user, each a presence
device. Measured:

- refresh round: every ``refresh_s`` the node restarts the TTL of each of its
  devices (a ``ZADD`` in ``p:presence:<user>`` by the broker's Lua script).
  The driver subscribes to ``__keyevent@0__:zadd`` and times each burst: the
  round time is the first to the last device's refresh of a burst. The
  hub's own figure, the histogram ``medhub_presence_refresh_seconds`` of
  ``/metrics``, is read too when the hub has it;
- churn: while those sockets stay open, a churn client opens, authenticates
  and closes sockets of other users (:mod:`loadtests.bench_connect`'s loop),
  each open and close a presence change; the plain websockets server's
  churn is measured beside it in the same rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from loadtests import seed
from loadtests.bench_connect import TABLE_HEAD, Churn, churn, row
from loadtests.bench_server import LoopReport, raise_nofile_limit
from loadtests.common import (
    LOOP_METHOD,
    Mode,
    expect,
    footer,
    header,
    hub_args,
    loop_cells,
    loop_report,
    median,
    ratio,
    spread,
    start_client,
    stop,
    tell,
    verdict,
)
from loadtests.servers import BenchError, ServerProcess, cpu_seconds, memory_of, running

TITLE = "Presence: refresh round and churn with ~20,000 sockets on Redis"
SOCKETS = 20_000
QUICK_SOCKETS = 2_000
HOLD_PROCS = 4
CHURN_USERS = 200
CHURN_S = 10.0
QUICK_CHURN_S = 3.0
ROUNDS = 3
#: The hub's refresh period (PresenceService's default) and the gap that ends a burst.
REFRESH_S = 10.0
BURST_GAP_S = 1.0
#: Target: a round well inside the device TTL (30 s) and the refresh period.
ROUND_TARGET_S = REFRESH_S / 2
METRIC = "medhub_presence_refresh_seconds"
#: Seconds the hub has to exit after SIGTERM (its sockets closed just before); then SIGKILL.
STOP_WAIT_S = 120.0


def socket_count(wanted: int) -> int:
    """``wanted``, capped by this machine's hard descriptor limit less a margin for the hub."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(100, min(wanted, hard - 500))


@dataclass
class Rounds:
    """Refresh bursts seen in Redis: (seconds, devices refreshed) each."""

    bursts: list[tuple[float, int]] = field(default_factory=list)
    events: int = 0


async def watch_refreshes(url: str, devices: int, wanted: int, wait_s: float) -> Rounds:
    """Time ``wanted`` complete refresh rounds (bursts of >= 90% of ``devices`` ZADDs)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    rounds = Rounds()
    try:
        await client.config_set("notify-keyspace-events", "Ez")
        pubsub = client.pubsub()
        await pubsub.subscribe("__keyevent@0__:zadd")
        first = last = 0.0
        count = 0
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=BURST_GAP_S)
            now = time.monotonic()
            if msg is not None and b"presence:" in msg["data"]:
                rounds.events += 1
                if count and now - last > BURST_GAP_S:
                    rounds.bursts.append((last - first, count))
                    count = 0
                if not count:
                    first = now
                count, last = count + 1, now
            elif count and now - last > BURST_GAP_S:
                rounds.bursts.append((last - first, count))
                count = 0
            if len(complete_rounds(rounds, devices)) >= wanted:
                break
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    finally:
        await client.aclose()
    return rounds


def complete_rounds(rounds: Rounds, devices: int) -> list[tuple[float, int]]:
    """Bursts that refreshed 90%-110% of ``devices`` (more: merged with the tail of the
    connect phase's own presence writes, so not a round)."""
    return [b for b in rounds.bursts if 0.9 * devices <= b[1] <= 1.1 * devices]


async def hub_metric(port: int) -> str:
    """The hub's refresh histogram from /metrics, summarised, or "not measurable yet"."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        body = (await asyncio.wait_for(reader.read(), 10)).decode(errors="replace")
    finally:
        writer.close()
    count = re.search(rf"^{METRIC}_count(?:\{{[^}}]*\}})? (\S+)$", body, re.M)
    total = re.search(rf"^{METRIC}_sum(?:\{{[^}}]*\}})? (\S+)$", body, re.M)
    if count is None or total is None:
        return f"not measurable yet (no `{METRIC}` in /metrics)"
    n, s = float(count.group(1)), float(total.group(1))
    return f"{n:.0f} rounds, mean {s / n:.2f} s" if n else "0 rounds observed"


@dataclass
class Held:
    sockets: int
    connect_s: float
    client_cpu_s: float
    server_cpu_s: float
    rss_mib: float
    errors: dict[str, int]
    welcome_p99_ms: float
    open_at_end: int = 0


async def hold_sockets(
    server: ServerProcess, work: Path, n: int
) -> tuple[list[asyncio.subprocess.Process], list[Path], Held]:
    """Open ``n`` sockets (users 0..n-1) from HOLD_PROCS processes; wait until all READY."""
    per = n // HOLD_PROCS
    procs, logs = [], []
    cpu0, started = cpu_seconds(server.pid), time.monotonic()
    for p in range(HOLD_PROCS):
        count = per if p < HOLD_PROCS - 1 else n - per * p
        log = work / f"hold-{p}.log"
        args = ["hold", "--port", str(server.port), "--tokens", str(work / "tokens.json"),
                "--first", str(per * p), "--count", str(count), "--concurrency", "50"]  # fmt: skip
        procs.append(await start_client("loadtests.connect_client", args, log))
        logs.append(log)
    ready = []
    for proc, log in zip(procs, logs, strict=True):
        line = await expect(proc, "READY", 900, log)
        ready.append(json.loads(line.split(" ", 1)[1]))
    errors: dict[str, int] = {}
    for r in ready:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    held = Held(
        sockets=sum(r["opened"] for r in ready), connect_s=time.monotonic() - started,
        client_cpu_s=sum(r["cpu_s"] for r in ready), server_cpu_s=cpu_seconds(server.pid) - cpu0,
        rss_mib=memory_of(server.pid)[0] / 2**20, errors=errors,
        welcome_p99_ms=max((r["welcome_p99_ms"] or 0.0) for r in ready),
    )  # fmt: skip
    return procs, logs, held


async def release(procs: list[asyncio.subprocess.Process], logs: list[Path], held: Held) -> None:
    """Tell the hold processes to close; count the sockets still open at the end."""
    for proc in procs:
        with contextlib.suppress(ConnectionError):
            await tell(proc, "CLOSE")
    for proc, log in zip(procs, logs, strict=True):
        with contextlib.suppress(BenchError, ValueError):
            held.open_at_end += json.loads(await expect(proc, "{", 120, log))["open_at_end"]
        await stop(proc)


@dataclass
class Results:
    sockets: int = 0
    held: Held | None = None
    rounds: Rounds = field(default_factory=Rounds)
    metric: str = "not read"
    churn: list[Churn] = field(default_factory=list)
    loop: LoopReport = field(default_factory=LoopReport)
    notes: list[str] = field(default_factory=list)


async def measure(mode: Mode, n: int, work: Path, results: Results) -> None:
    from tests.services import start_redis

    redis = await asyncio.to_thread(start_redis, work / "redis")
    try:
        prepared = await seed.prepare(work / "db", users=n + CHURN_USERS)
        seed.write_tokens(work / "tokens.json", prepared.tokens)
        caps = {"ws_max_connections": n + 2_000, "max_connections_per_address": n + 2_000}
        settings = seed.hub_settings_file(
            work / "hub.json", prepared.secrets, prepared.db_path, broker="redis",
            redis_url=redis.url, **caps,
        )  # fmt: skip
        monitor = work / "monitor.json"
        churn_s = QUICK_CHURN_S if mode.quick else CHURN_S
        extra = hub_args(settings, monitor)
        async with running("hub", work, results.notes, extra, STOP_WAIT_S) as hub:
            procs, logs, held = await hold_sockets(hub, work, n)
            results.held = held
            try:
                t0 = time.monotonic_ns()
                wanted = mode.rounds
                results.rounds = await watch_refreshes(
                    redis.url, held.sockets, wanted, REFRESH_S * (wanted + 1) + 60
                )
                t1 = time.monotonic_ns()
                results.metric = await hub_metric(hub.port)
                for _ in range(mode.rounds):
                    c, _w = await churn(hub, work, churn_s, first=n, count=CHURN_USERS)
                    results.churn.append(c)
                    async with running("plain", work, results.notes) as plain:
                        c, _w = await churn(plain, work, churn_s, first=n, count=CHURN_USERS)
                    results.churn.append(c)
            finally:
                await release(procs, logs, held)
        results.loop = loop_report(monitor, t0, t1)
    finally:
        await asyncio.to_thread(redis.stop)


def render(results: Results, mode: Mode, elapsed: float) -> str:
    held = results.held
    method = [
        "Redis: a private `redis-server` on a free loopback port (no persistence), keyspace"
        " notifications `Ez` on so the driver sees each ZADD.",
        f"hub: `bench_server.py --real-auth`, broker `redis`, {results.sockets:,} users with one"
        " real login session each. Raised for this run only: `ws_max_connections` and"
        " `max_connections_per_address` to sockets + 2,000 (defaults 20,000 and 256: every"
        " socket comes from 127.0.0.1). The sockets wanted are 20,000, capped at this"
        " machine's hard RLIMIT_NOFILE less 500 (it cannot be raised here).",
        f"sockets: {HOLD_PROCS} processes (`connect_client.py hold`, raw asyncio) open one"
        " authenticated socket per user, 50 at a time each, answer heartbeats, and stay.",
        f"refresh round: the time from the first to the last device ZADD of a burst (bursts"
        f" end after {BURST_GAP_S:g} s without one); the node refreshes every"
        f" {REFRESH_S:g} s. The hub's own `{METRIC}` is read from /metrics when present.",
        f"churn: with those sockets open, `connect_client.py churn` ({CHURN_USERS} other users,"
        " 32 workers: connect, hello, welcome, close) against the hub, then against a fresh"
        " plain websockets server, alternating.",
        LOOP_METHOD + " Here: over the refresh-round watch.",
    ]
    out = header(TITLE, "presence", elapsed, mode, method)
    if held is not None:
        out += [
            "",
            f"Opened {held.sockets:,} of {results.sockets:,} sockets in {held.connect_s:.1f} s"
            f" ({held.sockets / held.connect_s:,.0f}/s; welcome p99 {held.welcome_p99_ms:.0f}"
            f" ms; errors {held.errors or 0}); hub CPU {held.server_cpu_s:.1f} s"
            f" ({held.server_cpu_s / max(1, held.sockets) * 1e6:,.0f} µs/socket), clients"
            f" {held.client_cpu_s:.1f} s; hub RSS {held.rss_mib:,.0f} MiB. Still open at the"
            f" end: {held.open_at_end:,}.",
        ]
    full = complete_rounds(results.rounds, held.sockets) if held else []
    out += [
        "",
        "| refresh burst | seconds | devices refreshed |",
        "|---:|---:|---:|",
    ]
    out += [f"| {i + 1} | {s:.2f} | {c:,} |" for i, (s, c) in enumerate(results.rounds.bursts)]
    secs = [s for s, _ in full]
    out += [
        "",
        f"- refresh round (median of complete rounds, {len(full)} seen): **{median(secs):.2f} s**"
        f" (spread {spread(secs, '{:.2f}')}; target < {ROUND_TARGET_S:g} s, half the refresh"
        f" period): {verdict(bool(secs) and median(secs) < ROUND_TARGET_S)}.",
        f"- the hub's `{METRIC}`: {results.metric}.",
        f"- hub event-loop lag during the watch, p99 / max ms: {loop_cells(results.loop)};"
        f" GC: {results.loop.gc_text()}.",
        "",
        "Churn (sockets opened, authenticated and closed per second):",
        "",
        *TABLE_HEAD,
    ]
    for kind in ("hub", "plain"):
        for i, c in enumerate(x for x in results.churn if x.kind == kind):
            out.append(row(kind, i + 1, c))
    hub = [c.rate for c in results.churn if c.kind == "hub"]
    plain = [c.rate for c in results.churn if c.kind == "plain"]
    out += [
        "",
        f"- churn with presence on and {held.sockets if held else 0:,} sockets open: hub"
        f" **{median(hub):,.0f}/s** ({spread(hub, '{:,.0f}')}), plain {median(plain):,.0f}/s:"
        f" {ratio(median(hub), median(plain)):.0%} of plain (no target in the issue).",
    ]
    out += footer(results.notes)
    return "\n".join(out) + "\n"


async def run(quick: bool = False, sockets: int | None = None) -> str:
    """Measure (about 3 minutes; ``quick``: 1) and return the markdown section."""
    started = time.monotonic()
    raise_nofile_limit()
    mode = Mode.of(quick, ROUNDS)
    results = Results(sockets=socket_count(sockets or (QUICK_SOCKETS if quick else SOCKETS)))
    with tempfile.TemporaryDirectory(prefix="medhub-bench-presence-") as tmp:
        await measure(mode, results.sockets, Path(tmp), results)
    return render(results, mode, time.monotonic() - started)


def main(argv: list[str] | None = None) -> None:
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_presence", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer sockets, one round")
    parser.add_argument("--sockets", type=int, help="sockets held (default 20,000; quick 2,000)")
    args = parser.parse_args(argv)
    print(uvloop.run(run(args.quick, args.sockets)), end="")


if __name__ == "__main__":
    main()
