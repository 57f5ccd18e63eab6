"""Connect section: sockets taken to ``welcome`` per second, the hub beside plain websockets.

``python -m loadtests.bench_connect [--quick]`` prints the markdown section;
:func:`run` returns it (``loadtests.bench --only connect``).

A client process (:mod:`loadtests.connect_client` ``churn``) keeps
:data:`CONCURRENCY` workers each looping: open a TCP connection, upgrade to a
WebSocket (``medhub.v1.msgpack``), send ``hello`` with a bearer session token
(auth method ``token``), wait for ``welcome``, close (the server closes TCP
first). The hub authenticates each token with its real authenticator against
:data:`USERS` seeded login sessions (:mod:`loadtests.seed`); the plain server
(:mod:`loadtests.plain_server`) answers the same ``hello`` with a
``welcome``-shaped map after ``websockets``' own accept. Each round starts both
servers fresh, hub first.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
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
    median,
    ratio,
    read_line,
    spread,
    start_client,
    stop,
    verdict,
)
from loadtests.servers import ServerProcess, cpu_seconds, running

TITLE = "Connect and authenticate: sockets to welcome per second"
USERS = 200
CONCURRENCY = 32
DURATION_S = 10.0
QUICK_DURATION_S = 3.0
WARMUP_S = 1.0
ROUNDS = 3
#: Target (issue 8): the hub at least this share of the plain server's rate.
TARGET = 0.5
KINDS = ("hub", "plain")


@dataclass
class Churn:
    kind: str
    result: dict[str, Any]
    server_cpu_s: float
    wall_s: float
    loop: LoopReport = field(default_factory=LoopReport)

    @property
    def rate(self) -> float:
        return float(self.result["per_s"])

    def server_us(self) -> float:
        cycles = self.result["cycles"]
        return self.server_cpu_s / cycles * 1e6 if cycles else 0.0

    def client_us(self) -> float:
        cycles = self.result["cycles"]
        return self.result["cpu_s"] / cycles * 1e6 if cycles else 0.0

    @property
    def errors(self) -> int:
        return int(sum(self.result["errors"].values()))


async def churn(
    server: ServerProcess, work: Path, duration: float, first: int = 0, count: int = USERS
) -> tuple[Churn, tuple[int, int]]:
    """One churn run against ``server``; (run, measured window in monotonic ns)."""
    log = work / "connect-client.log"
    args = [
        "churn", "--port", str(server.port), "--tokens", str(work / "tokens.json"),
        "--first", str(first), "--count", str(count), "--concurrency", str(CONCURRENCY),
        "--duration", str(duration), "--warmup", str(WARMUP_S),
    ]  # fmt: skip
    proc = await start_client("loadtests.connect_client", args, log)
    try:
        await expect(proc, "MEASURING", 60, log)
        cpu0, t0 = cpu_seconds(server.pid), time.monotonic_ns()
        await expect(proc, "DONE", duration + 30, log)
        cpu1, t1 = cpu_seconds(server.pid), time.monotonic_ns()
        result = json.loads(await read_line(proc, 60, log))
    finally:
        await stop(proc)
    return Churn(server.kind, result, cpu1 - cpu0, (t1 - t0) / 1e9), (t0, t1)


def row(label: str, round_: int, c: Churn) -> str:
    errs = ", ".join(f"{k} {v}" for k, v in c.result["errors"].items()) or "0"
    return (
        f"| {label} | {round_} | **{c.rate:,.0f}** | {c.result['welcome_p50_ms'] or 0:.1f}"
        f" | {c.result['welcome_p99_ms'] or 0:.1f} | {c.result['cycle_p99_ms'] or 0:.1f}"
        f" | {errs} | {c.server_cpu_s / c.wall_s:.0%} | {c.server_us():.0f}"
        f" | {c.client_us():.0f} | {loop_cells(c.loop)} |"
    )


TABLE_HEAD = [
    "| server | round | sockets/s | to welcome p50 ms | to welcome p99 ms | full cycle p99 ms"
    " | errors | server CPU | server CPU µs/socket | client CPU µs/socket"
    " | hub loop lag p99 / max ms |",
    "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
]


def render(runs: list[Churn], notes: list[str], mode: Mode, duration: float, elapsed: float) -> str:
    method = [
        f"client: `loadtests/connect_client.py churn`, one process (raw asyncio WebSocket on"
        f" uvloop, `loadtests/ws_client.py`), {CONCURRENCY} workers each looping: TCP connect,"
        " upgrade (`medhub.v1.msgpack`), `hello` with a bearer session token (auth method"
        " `token`), wait for `welcome`, close and wait for the server to close TCP."
        f" {WARMUP_S:g} s warm-up, then {duration:g} s measured; a socket counts when its whole"
        " cycle fell in the measured part.",
        f"hub: `bench_server.py --real-auth` (real authenticator: session lookup, user checks,"
        f" audit of the connect), {USERS} users with one real login session each, the tokens"
        " used in turn; default settings otherwise.",
        "plain: `loadtests/plain_server.py`, `websockets` accept + a `welcome`-shaped answer.",
        "CPU per socket: the server process's user+system time over the measured part"
        " (`/proc/PID/stat`), and the client process's own, divided by the sockets counted.",
        LOOP_METHOD,
    ]
    out = header(TITLE, "connect", elapsed, mode, method)
    out += ["", *TABLE_HEAD]
    for kind in KINDS:
        for i, c in enumerate(r for r in runs if r.kind == kind):
            out.append(row(kind, i + 1, c))
    hub = [c.rate for c in runs if c.kind == "hub"]
    plain = [c.rate for c in runs if c.kind == "plain"]
    share = ratio(median(hub), median(plain))
    cpu = ratio(
        median([c.server_us() for c in runs if c.kind == "hub"]),
        median([c.server_us() for c in runs if c.kind == "plain"]),
    )
    errors = sum(c.errors for c in runs if c.kind == "hub")
    out += [
        "",
        f"- hub: **{median(hub):,.0f} sockets/s** (rounds {spread(hub, '{:,.0f}')}), plain"
        f" {median(plain):,.0f} ({spread(plain, '{:,.0f}')}): **{share:.0%}** of plain (target"
        f" >= {TARGET:.0%}): {verdict(share >= TARGET and errors == 0)}; hub errors: {errors}.",
        f"- server CPU per socket, hub / plain: {cpu:.2f}x.",
    ]
    out += footer(notes)
    return "\n".join(out) + "\n"


async def run(quick: bool = False) -> str:
    """Measure (about 1 minute; ``quick``: 15 s) and return the markdown section."""
    started = time.monotonic()
    mode = Mode.of(quick, ROUNDS)
    duration = QUICK_DURATION_S if quick else DURATION_S
    runs: list[Churn] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="medhub-bench-connect-") as tmp:
        work = Path(tmp)
        prepared = await seed.prepare(work / "db", users=USERS)
        seed.write_tokens(work / "tokens.json", prepared.tokens)
        settings = seed.hub_settings_file(work / "hub.json", prepared.secrets, prepared.db_path)
        for r in range(mode.rounds):
            for kind in KINDS:
                monitor = work / f"monitor-{r}.json"
                extra = hub_args(settings, monitor) if kind == "hub" else ()
                async with running(kind, work, notes, extra) as server:
                    c, window = await churn(server, work, duration)
                if kind == "hub":
                    c.loop = loop_report(monitor, *window)
                runs.append(c)
    return render(runs, notes, mode, duration, time.monotonic() - started)


def main(argv: list[str] | None = None) -> None:
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_connect", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, one round")
    print(uvloop.run(run(parser.parse_args(argv).quick)), end="")


if __name__ == "__main__":
    main()
