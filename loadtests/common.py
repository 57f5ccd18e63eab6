"""Helpers shared by the newer benchmark sections (rest, connect, chat_latency, chat, presence).

Servers, machine facts and CPU come from :mod:`loadtests.bench_ws`; this
module adds what those sections have in common: the quick mode, client
subprocesses that end with one JSON line, the real hub's command-line
options (seeded settings, real authenticator, loop monitor), and the pieces
of every report (median and spread of rounds, met / missed, server logs,
event-loop lag).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.bench_server import LoopReport, read_monitor
from loadtests.servers import BenchError, machine_facts

#: Targets on the hub's event loop during chat runs (issue 9).
LOOP_LAG_P99_MS = 5.0
LOOP_LAG_MAX_MS = 50.0


@dataclass(frozen=True)
class Mode:
    """How a section runs: the full run or ``--quick``, its rounds, the machine at its start."""

    quick: bool
    rounds: int
    facts: tuple[str, ...]

    @classmethod
    def of(cls, quick: bool, rounds: int) -> Mode:
        """Call when the section starts (the machine facts include the load average)."""
        return cls(quick, 1 if quick else rounds, tuple(machine_facts()))


# -- subprocesses --------------------------------------------------------------------------
async def start_client(module: str, args: Sequence[str], log: Path) -> asyncio.subprocess.Process:
    """Start ``python -m module args``: stdin and stdout piped, stderr to ``log``."""
    with log.open("ab") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
            cwd=os.getcwd(),
        )  # fmt: skip


def tail_of(log: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file ("" when there is none)."""
    if not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


async def read_line(proc: asyncio.subprocess.Process, wait_s: float, log: Path) -> str:
    """The next stdout line of ``proc``; raises :class:`BenchError` (with the log's tail)
    when it ends or stays silent for ``wait_s`` seconds."""
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), wait_s)
    except TimeoutError:
        line = b""
    if not line:
        raise BenchError(
            f"client process {proc.pid} gave no line within {wait_s:.0f} s:\n{tail_of(log)}"
        )
    return line.decode().strip()


async def expect(proc: asyncio.subprocess.Process, word: str, wait_s: float, log: Path) -> str:
    """Read lines until one starts with ``word`` (returned); :class:`BenchError` otherwise."""
    while True:
        line = await read_line(proc, wait_s, log)
        if line.startswith(word):
            return line


async def run_json(module: str, args: Sequence[str], log: Path, wait_s: float) -> dict[str, Any]:
    """Run a client to its end (at most ``wait_s``); its last stdout line parsed as JSON."""
    proc = await start_client(module, args, log)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), wait_s)
    except TimeoutError:
        await stop(proc)
        raise BenchError(f"{module} did not finish within {wait_s:.0f} s") from None
    lines = out.decode().strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise BenchError(f"{module} failed (exit {proc.returncode}):\n{tail_of(log)}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def tell(proc: asyncio.subprocess.Process, line: str) -> None:
    """Write one line to the client's stdin."""
    assert proc.stdin is not None
    proc.stdin.write(line.encode() + b"\n")
    await proc.stdin.drain()


async def stop(proc: asyncio.subprocess.Process, wait_s: float = 10.0) -> None:
    """Terminate a client (kill it after ``wait_s``)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), wait_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def hub_args(settings_file: Path, monitor: Path, log_level: str = "info") -> tuple[str, ...]:
    """``bench_server`` options of a real hub: seeded settings, real auth, loop monitor."""
    return (
        "--settings", str(settings_file), "--real-auth", "--monitor", str(monitor),
        "--log-level", log_level,
    )  # fmt: skip


def loop_report(monitor: Path, start_ns: int | None, end_ns: int | None) -> LoopReport:
    """The hub's loop lag and GC pauses over ``[start_ns, end_ns]`` (after it exited)."""
    return read_monitor(monitor, start_ns, end_ns)


# -- figures -------------------------------------------------------------------------------------
def median(values: Sequence[float]) -> float:
    """Median of the finite values (NaN when there are none)."""
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def spread(values: Sequence[float], fmt: str = "{:,.1f}") -> str:
    """``min-max`` of the finite values, formatted."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return "-"
    if len(finite) == 1:
        return fmt.format(finite[0])
    return f"{fmt.format(min(finite))}-{fmt.format(max(finite))}"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


def percentile(sorted_values: Sequence[int | float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0..100) of an ascending sequence (NaN if empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def loop_cells(report: LoopReport) -> str:
    """``p99 / max ms`` of a loop report for a table cell."""
    if not report.measured:
        return "-"
    return f"{report.lag_p99_us / 1000:.1f} / {report.lag_max_us / 1000:.1f}"


def loop_target(reports: Sequence[LoopReport]) -> str:
    """One line checking the loop-lag targets over the hub runs of a section."""
    measured = [r for r in reports if r.measured]
    if not measured:
        return "- event-loop lag: not measured (no monitor file)."
    p99 = median([r.lag_p99_us / 1000 for r in measured])
    worst = max(r.lag_max_us / 1000 for r in measured)
    gcs = "; ".join(r.gc_text() for r in measured[:3])
    return (
        f"- hub event-loop lag (median of runs' p99): **{p99:.1f} ms** (target < "
        f"{LOOP_LAG_P99_MS:g} ms): {verdict(p99 < LOOP_LAG_P99_MS)}; worst max"
        f" **{worst:.1f} ms** (target < {LOOP_LAG_MAX_MS:g} ms):"
        f" {verdict(worst < LOOP_LAG_MAX_MS)}. GC during the first runs: {gcs}."
    )


LOOP_METHOD = (
    "Event-loop lag: inside the hub process (`bench_server.py --monitor`), a task sleeps 1 ms"
    " in a loop and records how late it wakes (uvloop's timers have 1 ms resolution, so"
    " about 1 ms of it is the timer); `gc.callbacks` times every collection. Both are"
    " written to a file at exit and cut to the measured window on the shared"
    " CLOCK_MONOTONIC."
)


def header(title: str, name: str, elapsed_s: float, mode: Mode, method: list[str]) -> list[str]:
    """The top of a section: title, how to reproduce, how it measures, the machine."""
    quick = (
        " **Quick mode** (`--quick`: short runs, 1 round; figures indicative only)."
        if (mode.quick)
        else ""
    )
    out = [
        f"## {title}",
        "",
        f"Produced by `make bench` (this section alone: `.venv/bin/python -m loadtests.bench"
        f" --only {name}`), in {elapsed_s:.0f} s, {mode.rounds} round(s).{quick}",
        "",
    ]
    out += [f"- {m}" for m in method]
    out += ["", "Machine:", ""]
    out += [f"- {fact}" for fact in mode.facts]
    return out


def footer(notes: Sequence[str]) -> list[str]:
    """Load average and the servers' warnings and errors."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    out = ["", f"Load average (1, 5, 15 min) at the end: {load}.", "", "Server logs:", ""]
    if notes:
        out += [f"- {note}" for note in notes[:20]]
        if len(notes) > 20:
            out.append(f"- ... and {len(notes) - 20} more")
    else:
        out.append("No warning or error in any server's log; every server exited cleanly.")
    return out
