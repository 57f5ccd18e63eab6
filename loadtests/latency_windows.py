"""Diagnostics: one long chat latency run, p50/p99 per window (to see a climb, and when).

``python -m loadtests.latency_windows [--kind hub|relay] [--rate 2000] [--duration 40]
[--history 1000000] [--window 4]`` runs :func:`loadtests.bench_chat_latency.one_run`
once (the section's servers, clients and seeded history) and prints, besides the
run's p50/p99, the p50/p99 of the messages due in each window of ``--window``
seconds (the warm-up included). Not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import tempfile
from array import array
from pathlib import Path
from typing import Any

from loadtests import bench_chat_latency as section
from loadtests import seed
from loadtests.common import percentile


def windows(samples: array[int], window_s: float) -> list[tuple[float, float]]:
    """(p50, p99) in ms of the (due time ns, latency ns) pairs, per window of due time."""
    by: dict[int, list[float]] = {}
    for i in range(0, len(samples), 2):
        by.setdefault(int(samples[i] // (window_s * 1e9)), []).append(samples[i + 1] / 1e6)
    return [(percentile(sorted(v), 50), percentile(sorted(v), 99)) for _, v in sorted(by.items())]


async def main(args: argparse.Namespace) -> None:
    summarise = section._summarise

    def with_windows(
        kind: str, rate: float, duration: float, samples: array[int], reports: list[dict[str, Any]]
    ) -> section.Run:
        cells = " ".join(f"{p50:.1f}/{p99:.1f}" for p50, p99 in windows(samples, args.window))
        print(f"{kind} {rate:.0f} msg/s, p50/p99 ms per {args.window:g} s: {cells}", flush=True)
        return summarise(kind, rate, duration, samples, reports)

    section._summarise = with_windows
    tpl, _ = await seed.template(args.history)
    with tempfile.TemporaryDirectory(prefix="medhub-latency-windows-") as tmp:
        notes: list[str] = []
        r = await section.one_run(args.kind, args.rate, args.duration, Path(tmp), tpl, notes)
    cpu = r.server_cpu_s / args.duration * 100
    print(f"run: p50 {r.p50:.1f} ms, p99 {r.p99:.1f} ms (first third {r.p99_first:.1f}, "
          f"last {r.p99_last:.1f}), server CPU {cpu:.0f}%; {r.loop}")  # fmt: skip
    for note in notes:
        print(note)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=section.KINDS, default="hub")
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--history", type=int, default=section.HISTORY)
    parser.add_argument("--window", type=float, default=4.0)
    import uvloop

    uvloop.run(main(parser.parse_args()))
