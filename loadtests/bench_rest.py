"""REST section: an authenticated read and write of the hub beside bare Starlette.

``python -m loadtests.bench_rest [--quick] [--duration S]`` prints the markdown
section; :func:`run` returns it (``loadtests.bench --only rest``).

- hub: :mod:`loadtests.bench_server` with the real authenticator and
  :data:`USERS` users with one real login session each (:mod:`loadtests.seed`:
  the session rows the login writes, tokens known only to the client);
- baseline: :mod:`loadtests.rest_baseline`, a bare Starlette app answering the
  same paths with a constant body of the same shape, on the same
  ``uvicorn_config``.

Endpoints: the read is ``GET /api/v1/session`` (authenticate the bearer token,
answer the session); the write is ``POST /api/v1/ws-ticket`` (authenticate,
mint a single-use WebSocket ticket in the broker: what every browser does
before each socket). The load generator (:mod:`loadtests.rest_client`, its
own process) offers :data:`RATE` requests/s open loop and measures from the
intended send time; then a search finds the saturation rate: the highest
offered rate whose p99 stays under :data:`SAT_P99_MS` with no error (doubling
from :data:`SAT_START`, or halving when that fails, then bisecting). Each round starts both servers
fresh, hub first then baseline.
"""

from __future__ import annotations

import argparse
import math
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
    footer,
    header,
    hub_args,
    loop_cells,
    loop_report,
    median,
    ratio,
    run_json,
    spread,
    verdict,
)
from loadtests.servers import ServerProcess, cpu_seconds, running

TITLE = "REST: authenticated read and write, open loop"
RATE = 800.0
DURATION_S = 30.0
QUICK_DURATION_S = 5.0
WARMUP_S = 1.0
ROUNDS = 3
USERS = 200
ENDPOINTS: dict[str, tuple[str, str]] = {
    "read": ("GET", "/api/v1/session"),
    "write": ("POST", "/api/v1/ws-ticket"),
}
#: Saturation search: p99 bound, first rate, growth, bisection steps, seconds per step.
SAT_P99_MS = 50.0
SAT_START = 200.0
SAT_MAX = 25_600.0
SAT_FLOOR = 25.0
SAT_BISECT = 2
SAT_STEP_S = 3.0
QUICK_SAT_STEP_S = 1.5
#: Targets (issue 8).
P99_TARGET_MS = 5.0
SAT_TARGET = 0.3
KINDS = ("hub", "starlette")


@dataclass
class Fixed:
    """One open-loop run at RATE."""

    kind: str
    endpoint: str
    result: dict[str, Any]
    server_cpu_us: float  #: server CPU per offered request (warm-up included)
    loop: LoopReport = field(default_factory=LoopReport)

    @property
    def errors(self) -> int:
        return int(sum(self.result["errors"].values()))


@dataclass
class Saturation:
    kind: str
    endpoint: str
    rate: float
    steps: list[tuple[float, float, int, float]]  #: (offered/s, p99 ms, errors, client CPU share)


@dataclass
class Results:
    fixed: list[Fixed] = field(default_factory=list)
    saturation: list[Saturation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fixed_of(self, kind: str, endpoint: str) -> list[Fixed]:
        return [f for f in self.fixed if f.kind == kind and f.endpoint == endpoint]

    def sat_of(self, kind: str, endpoint: str) -> list[float]:
        return [s.rate for s in self.saturation if s.kind == kind and s.endpoint == endpoint]


async def _client(
    server: ServerProcess, endpoint: str, rate: float, duration: float, work: Path
) -> dict[str, Any]:
    method, path = ENDPOINTS[endpoint]
    args = [
        "--port", str(server.port), "--method", method, "--path", path,
        "--tokens", str(work / "tokens.json"), "--rate", f"{rate:.1f}",
        "--duration", str(duration), "--warmup", str(WARMUP_S),
    ]  # fmt: skip
    timeout = duration + WARMUP_S + 60
    return await run_json("loadtests.rest_client", args, work / "client.log", timeout)


async def fixed_run(
    server: ServerProcess, endpoint: str, duration: float, work: Path
) -> tuple[Fixed, tuple[int, int]]:
    """RATE req/s for ``duration`` s; returns the run and its measured window (ns)."""
    cpu0 = cpu_seconds(server.pid)
    t0 = time.monotonic_ns()
    result = await _client(server, endpoint, RATE, duration, work)
    t1 = time.monotonic_ns()
    cpu = cpu_seconds(server.pid) - cpu0
    offered = RATE * (duration + WARMUP_S)
    start = t0 + int((WARMUP_S + 0.3) * 1e9)  # after the client's start-up and warm-up
    return Fixed(server.kind, endpoint, result, cpu / offered * 1e6), (start, t1)


def _passes(result: dict[str, Any]) -> bool:
    p99 = result["p99_ms"]
    return not result["errors"] and not math.isnan(p99) and p99 <= SAT_P99_MS


async def saturation(server: ServerProcess, endpoint: str, step_s: float, work: Path) -> Saturation:
    """The highest offered rate with p99 <= SAT_P99_MS and no error (see the module doc)."""
    steps: list[tuple[float, float, int, float]] = []

    async def ok(rate: float) -> bool:
        r = await _client(server, endpoint, rate, step_s, work)
        share = r["cpu_s"] / r["wall_s"] if r["wall_s"] else 0.0
        steps.append((rate, r["p99_ms"], int(sum(r["errors"].values())), share))
        return _passes(r)

    passed, failed, rate = 0.0, math.inf, SAT_START
    while rate <= SAT_MAX:
        if await ok(rate):
            passed, rate = rate, rate * 2
        else:
            failed = rate
            break
    while not passed and failed > SAT_FLOOR:  # below the first rate: halve until one passes
        rate = failed / 2
        if await ok(rate):
            passed = rate
        else:
            failed = rate
    if math.isfinite(failed) and passed:
        for _ in range(SAT_BISECT):
            mid = (passed + failed) / 2
            if await ok(mid):
                passed = mid
            else:
                failed = mid
    return Saturation(server.kind, endpoint, passed, steps)


async def measure(mode: Mode, duration: float, work: Path, results: Results) -> None:
    prepared = await seed.prepare(work / "db", users=USERS)
    seed.write_tokens(work / "tokens.json", prepared.tokens)
    settings = seed.hub_settings_file(work / "hub.json", prepared.secrets, prepared.db_path)
    step_s = QUICK_SAT_STEP_S if mode.quick else SAT_STEP_S
    for r in range(mode.rounds):
        for kind in KINDS:
            monitor = work / f"monitor-{r}-{kind}.json"
            extra = hub_args(settings, monitor) if kind == "hub" else ()
            windows: list[tuple[Fixed, tuple[int, int]]] = []
            async with running(kind, work, results.notes, extra) as server:
                for endpoint in ENDPOINTS:
                    windows.append(await fixed_run(server, endpoint, duration, work))
                for endpoint in ENDPOINTS:
                    results.saturation.append(await saturation(server, endpoint, step_s, work))
            for run_, (start, end) in windows:
                if kind == "hub":
                    run_.loop = loop_report(monitor, start, end)
                results.fixed.append(run_)


# -- the report ------------------------------------------------------------------------------------
def _fixed_row(f: Fixed, round_: int) -> str:
    r = f.result
    client_us = r["cpu_s"] / max(1, r["offered"]) * 1e6
    errs = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "0"
    return (
        f"| {f.kind} | {f.endpoint} | {round_} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f}"
        f" | {r['p99_ms']:.2f} | {r['max_ms']:.1f} | {errs} | {r['achieved_per_s']:,.0f}"
        f" | {r['send_lag_p99_ms']:.2f} | {f.server_cpu_us:.0f} | {client_us:.0f}"
        f" | {loop_cells(f.loop)} | {r['body_bytes']:.0f} |"
    )


def render(results: Results, mode: Mode, duration: float, elapsed: float) -> str:
    method = [
        f"hub: `loadtests/bench_server.py --real-auth` (the real app and authenticator, SQLite,"
        f" memory broker, default rate limits), {USERS} users each with one real login session"
        " (`loadtests/seed.py`), the tokens used in turn.",
        "baseline: `loadtests/rest_baseline.py`, bare Starlette, one route per path returning"
        " a constant JSON body shaped like the hub's, under the hub's own `uvicorn_config`.",
        "read: `GET /api/v1/session`; write: `POST /api/v1/ws-ticket` (mints a single-use"
        " WebSocket ticket in the broker: cheap, real, and done before every browser socket).",
        f"load: `loadtests/rest_client.py`, its own process (raw asyncio + httptools on uvloop,"
        f" keep-alive connections, no pipelining, at most 64), open loop: request k is due at"
        f" start + k/rate; latency from that intended time to the end of the response."
        f" {RATE:.0f} req/s for {duration:g} s after {WARMUP_S:g} s of warm-up.",
        f"saturation: the highest offered rate whose p99 stays <= {SAT_P99_MS:g} ms with no"
        f" error: {SAT_START:.0f} req/s doubled until it fails (halved until one passes if"
        f" the first fails, down to {SAT_FLOOR:g}), then {SAT_BISECT} bisection steps,"
        f" {QUICK_SAT_STEP_S if mode.quick else SAT_STEP_S:g} s each.",
        "CPU: server user+system time (`/proc/PID/stat`) over the client's run per offered"
        " request; client CPU per request (its own `process_time`) over the measured part.",
        LOOP_METHOD,
    ]
    out = header(TITLE, "rest", elapsed, mode, method)
    out += [
        "",
        f"### {RATE:.0f} requests/s offered, {duration:g} s",
        "",
        "| server | endpoint | round | p50 ms | p90 ms | p99 ms | max ms | errors | answered/s"
        " | client send lag p99 ms | server CPU µs/req | client CPU µs/req"
        " | hub loop lag p99 / max ms | body bytes |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|",
    ]
    for kind in KINDS:
        for endpoint in ENDPOINTS:
            for i, f in enumerate(results.fixed_of(kind, endpoint)):
                out.append(_fixed_row(f, i + 1))
    out += [
        "",
        "| server | endpoint | p99 ms median (spread) | p50 ms median | errors (all rounds) |",
    ]
    out += ["|---|---|---|---:|---:|"]
    for kind in KINDS:
        for endpoint in ENDPOINTS:
            runs = results.fixed_of(kind, endpoint)
            p99s = [f.result["p99_ms"] for f in runs]
            out.append(
                f"| {kind} | {endpoint} | {median(p99s):.2f} ({spread(p99s, '{:.2f}')})"
                f" | {median([f.result['p50_ms'] for f in runs]):.2f}"
                f" | {sum(f.errors for f in runs)} |"
            )
    out += [
        "",
        f"### Saturation (p99 <= {SAT_P99_MS:g} ms, no error)",
        "",
        "| server | endpoint | round | saturation req/s | steps: offered/s -> p99 ms"
        " (errors, client CPU share) |",
        "|---|---|---:|---:|---|",
    ]
    for kind in KINDS:
        for endpoint in ENDPOINTS:
            sats = [s for s in results.saturation if s.kind == kind and s.endpoint == endpoint]
            for i, s in enumerate(sats):
                steps = "; ".join(f"{o:,.0f} -> {p:.1f} ({e}, {c:.0%})" for o, p, e, c in s.steps)
                out.append(f"| {kind} | {endpoint} | {i + 1} | {s.rate:,.0f} | {steps} |")
    out += ["", "Targets (median of rounds):", ""]
    for endpoint in ENDPOINTS:
        runs = results.fixed_of("hub", endpoint)
        p99 = median([f.result["p99_ms"] for f in runs])
        errors = sum(f.errors for f in runs)
        out.append(
            f"- hub {endpoint} p99 at {RATE:.0f} req/s: **{p99:.2f} ms** (target <="
            f" {P99_TARGET_MS:g} ms, no error): {verdict(p99 <= P99_TARGET_MS and not errors)}"
            f" ({errors} errors; baseline p99"
            f" {median([f.result['p99_ms'] for f in results.fixed_of('starlette', endpoint)]):.2f}"
            " ms)."
        )
    for endpoint in ENDPOINTS:
        hub, base = (
            median(results.sat_of("hub", endpoint)),
            median(results.sat_of("starlette", endpoint)),
        )
        share = ratio(hub, base)
        out.append(
            f"- hub {endpoint} saturation: **{hub:,.0f} req/s** = **{share:.0%}** of bare"
            f" Starlette's {base:,.0f} (target >= {SAT_TARGET:.0%}):"
            f" {verdict(share >= SAT_TARGET)}. Rounds: hub"
            f" {spread(results.sat_of('hub', endpoint), '{:,.0f}')}, Starlette"
            f" {spread(results.sat_of('starlette', endpoint), '{:,.0f}')}."
        )
    out += footer(results.notes)
    return "\n".join(out) + "\n"


async def run(quick: bool = False, duration: float | None = None) -> str:
    """Measure (about 12 minutes; ``quick``: about 1) and return the markdown section."""
    started = time.monotonic()
    mode = Mode.of(quick, ROUNDS)
    duration = duration or (QUICK_DURATION_S if quick else DURATION_S)
    results = Results()
    with tempfile.TemporaryDirectory(prefix="medhub-bench-rest-") as tmp:
        await measure(mode, duration, Path(tmp), results)
    return render(results, mode, duration, time.monotonic() - started)


def main(argv: list[str] | None = None) -> None:
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_rest", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, one round")
    parser.add_argument("--duration", type=float, help="seconds per fixed-rate run")
    args = parser.parse_args(argv)
    print(uvloop.run(run(args.quick, args.duration)), end="")


if __name__ == "__main__":
    main()
