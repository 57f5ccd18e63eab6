"""Chat latency section: 20 members, open-loop senders, latency from the intended send time.

``python -m loadtests.bench_chat_latency [--quick]`` prints the markdown
section; :func:`run` returns it (``loadtests.bench --only chat_latency``).

- hub: the real app (:mod:`loadtests.bench_server` ``--real-auth``), SQLite with
  durable commits, default rate limits; its database is a copy of the seeded
  template (:func:`loadtests.seed.template`: :data:`HISTORY` messages already
  in the conversation) with :data:`MEMBERS` members and fresh sessions;
- relay: ``loadtests/bench_chat_servers.py relay``, a ``websockets`` server
  doing the same fan-out of the same protocol without storage.

:data:`PROCS` client processes (:mod:`loadtests.latency_client`) hold one
receiver socket per member and :data:`SENDERS_PER_MEMBER` sender sockets per
member (so each sender socket stays under the default 50 messages/s), and send
on one shared fixed schedule at each rate of :data:`RATES`. Every receiver
measures arrival - intended send time on CLOCK_MONOTONIC.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests import seed
from loadtests.bench_server import LoopReport
from loadtests.common import (
    LOOP_METHOD,
    Mode,
    expect,
    footer,
    header,
    hub_args,
    loop_cells,
    loop_report,
    loop_target,
    median,
    percentile,
    read_line,
    spread,
    start_client,
    stop,
    tell,
    verdict,
)
from loadtests.servers import BenchError, ServerProcess, cpu_seconds, running

TITLE = "Chat latency: 20 members, open loop"
MEMBERS = 20
PROCS = 2
SENDERS_PER_MEMBER = 4
RATES = (1_000.0, 2_000.0)
DURATION_S = 20.0
QUICK_DURATION_S = 5.0
WARMUP_S = 2.0
ROUNDS = 3
HISTORY = 1_000_000
QUICK_HISTORY = 100_000
KINDS = ("hub", "relay")
#: Targets (issue 9): rate -> (p50 ms or None, p99 ms).
TARGETS: dict[float, tuple[float | None, float]] = {1_000.0: (5.0, 25.0), 2_000.0: (None, 50.0)}
#: p99 "climbs" when the last third's is above CLIMB_RATIO x the first third's (and 2 ms more).
CLIMB_RATIO = 1.5


@dataclass
class Run:
    kind: str
    rate: float
    p50: float
    p99: float
    max: float
    p99_first: float
    p99_last: float
    received: int
    expected: int
    sent: int
    acked: int
    errors: dict[str, int]
    closed: int
    server_cpu_s: float
    client_cpu_s: float
    wall_s: float
    send_lag_p99: float
    loop: LoopReport = field(default_factory=LoopReport)

    @property
    def climbs(self) -> bool:
        return self.p99_last > CLIMB_RATIO * self.p99_first and self.p99_last > self.p99_first + 2

    def per_delivery_us(self, cpu_s: float) -> float:
        return cpu_s / self.received * 1e6 if self.received else math.nan


def _summarise(
    kind: str, rate: float, duration: float, samples: array[int], reports: list[dict[str, Any]]
) -> Run:
    pairs = [(samples[i], samples[i + 1]) for i in range(0, len(samples), 2)]
    lat = sorted(p[1] / 1e6 for p in pairs)
    start = WARMUP_S * 1e9
    third = duration * 1e9 / 3
    first = sorted(p[1] / 1e6 for p in pairs if p[0] < start + third)
    last = sorted(p[1] / 1e6 for p in pairs if p[0] >= start + 2 * third)
    errors: dict[str, int] = {}
    for r in reports:
        for code, n in r["errors"].items():
            errors[code] = errors.get(code, 0) + n
    return Run(
        kind, rate, percentile(lat, 50), percentile(lat, 99), lat[-1] if lat else math.nan,
        percentile(first, 99), percentile(last, 99),
        received=sum(r["received"] for r in reports), expected=sum(r["expected"] for r in reports),
        sent=sum(r["sent"] for r in reports), acked=sum(r["acked"] for r in reports),
        errors=errors, closed=sum(r["closed"] for r in reports), server_cpu_s=0.0,
        client_cpu_s=sum(r["cpu_s"] for r in reports), wall_s=duration,
        send_lag_p99=max((r["send_lag_p99_ms"] or 0.0) for r in reports),
    )  # fmt: skip


async def measure(
    server: ServerProcess, rate: float, duration: float, work: Path, conv: str, after: int
) -> tuple[Run, tuple[int, int]]:
    """One open-loop run at ``rate``; (run, measured window in monotonic ns)."""
    per = MEMBERS // PROCS
    procs = []
    logs = [work / f"latency-{server.kind}-{p}.log" for p in range(PROCS)]
    outs = [work / f"latency-{server.kind}-{p}.bin" for p in range(PROCS)]
    try:
        for p in range(PROCS):
            args = [
                "--port", str(server.port), "--tokens", str(work / "tokens.json"),
                "--conv", conv, "--after", str(after), "--members", f"{p * per}:{per}",
                "--senders-per-member", str(SENDERS_PER_MEMBER), "--proc", str(p),
                "--procs", str(PROCS), "--rate", str(rate), "--warmup", str(WARMUP_S),
                "--duration", str(duration), "--out", str(outs[p]),
            ]  # fmt: skip
            procs.append(await start_client("loadtests.latency_client", args, logs[p]))
        for proc, log in zip(procs, logs, strict=True):
            await expect(proc, "READY", 120, log)
        t0 = time.monotonic_ns() + 300_000_000
        for proc in procs:
            await tell(proc, f"GO {t0}")
        start, end = t0 + int(WARMUP_S * 1e9), t0 + int((WARMUP_S + duration) * 1e9)
        await asyncio.sleep((start - time.monotonic_ns()) / 1e9)
        cpu0 = cpu_seconds(server.pid)
        await asyncio.sleep(max(0.0, (end - time.monotonic_ns()) / 1e9))
        server_cpu = cpu_seconds(server.pid) - cpu0
        reports = [
            json.loads(await read_line(proc, 60, log))
            for proc, log in zip(procs, logs, strict=True)
        ]
    finally:
        for proc in procs:
            await stop(proc)
    samples = array("q")
    for out in outs:
        samples.frombytes(out.read_bytes())
    run_ = _summarise(server.kind, rate, duration, samples, reports)
    run_.server_cpu_s = server_cpu
    return run_, (start, end)


async def one_run(
    kind: str, rate: float, duration: float, work: Path, tpl: seed.Template, notes: list[str]
) -> Run:
    """Start ``kind`` fresh (the hub on a fresh copy of the template), measure, stop."""
    if kind != "hub":
        seed.write_tokens(work / "tokens.json", [f"relay-token-{n:08d}" for n in range(MEMBERS)])
        async with running(kind, work, notes) as server:
            run_, _ = await measure(server, rate, duration, work, seed.CONV, 0)
        return run_
    prepared = await seed.prepare(work / "db", users=MEMBERS, members=MEMBERS, from_template=tpl)
    seed.write_tokens(work / "tokens.json", prepared.tokens)
    settings = seed.hub_settings_file(work / "hub.json", prepared.secrets, prepared.db_path)
    monitor = work / f"monitor-{rate:.0f}.json"
    try:
        async with running("hub", work, notes, hub_args(settings, monitor)) as server:
            run_, window = await measure(server, rate, duration, work, seed.CONV, prepared.last_seq)
    finally:
        seed.remove(prepared.db_path)
    run_.loop = loop_report(monitor, *window)
    return run_


# -- the report ------------------------------------------------------------------------------------
def _row(r: Run, round_: int) -> str:
    errs = ", ".join(f"{k} {v}" for k, v in r.errors.items()) or "0"
    return (
        f"| {r.kind} | {r.rate:,.0f} | {round_} | {r.p50:.1f} | **{r.p99:.1f}** | {r.max:.0f}"
        f" | {r.p99_first:.1f} -> {r.p99_last:.1f}{' **climbs**' if r.climbs else ''}"
        f" | {r.received:,} / {r.expected:,} | {errs} | {r.closed}"
        f" | {r.server_cpu_s / r.wall_s:.0%} | {r.per_delivery_us(r.server_cpu_s):.1f}"
        f" | {r.per_delivery_us(r.client_cpu_s):.1f} | {r.send_lag_p99:.1f}"
        f" | {loop_cells(r.loop)} |"
    )


def render(runs: list[Run], notes: list[str], mode: Mode, duration: float, history: int,
           built_s: float, elapsed: float) -> str:  # fmt: skip
    method = [
        f"hub: `bench_server.py --real-auth`: the real app, SQLite with durable commits, the"
        f" audit trail, default rate limits (50 messages/s per socket). Its database is a copy"
        f" of a template holding a group conversation with {history:,} messages (seeded once by"
        f" SQL, `loadtests/seed.py`, {built_s:.0f} s this run, then cached), with {MEMBERS}"
        " practitioner members and a fresh login session each (real authenticator).",
        "relay: `bench_chat_servers.py relay`, `websockets` on uvloop: `chat.sync` follows,"
        " `chat.send` gets a seq, one `event` map encoded once and `websockets.broadcast` to"
        " the followers, then the `result`: the fan-out without storage or checks.",
        f"clients: {PROCS} processes (`loadtests/latency_client.py`, raw asyncio WebSocket),"
        f" {MEMBERS // PROCS} members each: one receiver socket per member (`chat.sync` from"
        f" the conversation's last seq, so the history is not replayed) and {SENDERS_PER_MEMBER}"
        " sender sockets per member, which send `chat.send` open loop on one fixed schedule"
        " (message k due at t0 + k/rate, dealt round-robin), never waiting for replies.",
        f"latency: each receiver decodes every `event` and takes arrival - intended send time"
        f" (carried in `client_msg_id`; CLOCK_MONOTONIC is shared by the processes). Messages"
        f" due in the first {WARMUP_S:g} s are not measured; then {duration:g} s. p99 climbs"
        f" when the last third's is above {CLIMB_RATIO}x the first third's (and 2 ms more);"
        " the target fails when it climbs in most rounds (the median round), the relay's"
        " count beside it shows how often this machine alone makes a run climb.",
        "CPU: server process (all threads) over the measured part, per delivery; client CPU is"
        " both client processes' (senders and receivers) per delivery.",
        LOOP_METHOD,
    ]
    out = header(TITLE, "chat_latency", elapsed, mode, method)
    out += [
        "",
        "| server | msg/s offered | round | p50 ms | p99 ms | max ms | p99 first -> last third ms"
        " | received / expected | send errors | sockets closed | server CPU"
        " | server CPU µs/delivery | client CPU µs/delivery | client send lag p99 ms"
        " | hub loop lag p99 / max ms |",
        "|---|---:|---:|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for rate in RATES:
        for kind in KINDS:
            for i, r in enumerate(x for x in runs if x.kind == kind and x.rate == rate):
                out.append(_row(r, i + 1))
    out += ["", "Targets (median of rounds):", ""]
    for rate, (p50_target, p99_target) in TARGETS.items():
        hub = [r for r in runs if r.kind == "hub" and r.rate == rate]
        relay = [r for r in runs if r.kind == "relay" and r.rate == rate]
        p50, p99 = median([r.p50 for r in hub]), median([r.p99 for r in hub])
        complete = all(r.received == r.expected and not r.errors for r in hub)
        ok = p99 <= p99_target and complete and (p50_target is None or p50 <= p50_target)
        # like every target, judged on the median round: climbing in most rounds
        climbing = sum(r.climbs for r in hub)
        climb = 2 * climbing > len(hub)
        what = f"p50 **{p50:.1f} ms** (target <= {p50_target:g}), " if p50_target else ""
        out.append(
            f"- {rate:,.0f} msg/s: hub {what}p99 **{p99:.1f} ms** (target <= {p99_target:g};"
            f" rounds {spread([r.p99 for r in hub])}), every message delivered and no send"
            f" error: {complete}; p99 climbs in {climbing} of {len(hub)} rounds (relay:"
            f" {sum(r.climbs for r in relay)} of {len(relay)}), in most: {climb}: "
            f"{verdict(ok and (rate < 2_000 or not climb))}. Relay p50 / p99:"
            f" {median([r.p50 for r in relay]):.1f} / {median([r.p99 for r in relay]):.1f} ms."
        )
    out.append(loop_target([r.loop for r in runs if r.kind == "hub"]))
    out += footer(notes)
    return "\n".join(out) + "\n"


async def run(quick: bool = False) -> str:
    """Measure (about 5 minutes, plus the template's first build; ``quick``: 1 minute)."""
    started = time.monotonic()
    mode = Mode.of(quick, ROUNDS)
    duration = QUICK_DURATION_S if quick else DURATION_S
    history = QUICK_HISTORY if quick else HISTORY
    tpl, built_s = await seed.template(history)
    runs: list[Run] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="medhub-bench-latency-") as tmp:
        work = Path(tmp)
        for _ in range(mode.rounds):
            for rate in RATES:
                for kind in KINDS:
                    runs.append(await one_run(kind, rate, duration, work, tpl, notes))
    if not runs:
        raise BenchError("nothing measured")
    return render(runs, notes, mode, duration, history, built_s, time.monotonic() - started)


def main(argv: list[str] | None = None) -> None:
    import uvloop

    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench_chat_latency", description=__doc__
    )
    parser.add_argument("--quick", action="store_true", help="short runs, one round")
    print(uvloop.run(run(parser.parse_args(argv).quick)), end="")


if __name__ == "__main__":
    main()
