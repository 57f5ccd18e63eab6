"""Chat fan-out section: 10, 100 and 1,000 members, the hub beside two baselines.

``python -m loadtests.bench_chat [--quick] [--sizes 100] [--rounds N]`` prints
the markdown section; :func:`run` returns it (``loadtests.bench --only chat``).

For each conversation size of :data:`SIZES` and each load of
:data:`~loadtests.bench_chat_run.LOADS` (1 message in flight per sender
socket, or 16 pipelined), the hub and ``websockets.broadcast`` are measured,
and python-socketio with the pipelined load; :data:`ROUNDS` rounds, each
measuring every cell once in that order (so noise falls on every server
alike). One measurement is :func:`loadtests.bench_chat_run.measure_server`:

- hub: :mod:`loadtests.bench_server` ``--real-auth``, the real app with SQLite
  (durable commits), the audit trail and the hub's default rate limits, on a
  fresh copy of a template database whose conversation already holds
  :data:`HISTORY` messages (seeded once by SQL, :mod:`loadtests.seed`), with
  the size's members and a fresh login session each; receivers follow with
  ``chat.sync`` from the last seq; senders send ``chat.send``, acked once
  committed;
- broadcast / socketio: :mod:`loadtests.bench_chat_servers`.

Issue 9's targets are checked in the report: hub server CPU per delivery at
most half of broadcast's at 100 and 1,000 members, the hub at least
:data:`SOCKETIO_TARGET` times python-socketio in every round, with 1 message
in flight at least 0.7x broadcast at 100 members and 0.5x at 10, and the
hub's event-loop lag.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from loadtests import seed
from loadtests.bench_chat_run import (
    BURST,
    HUB_CAPS,
    LOADS,
    RATE_PER_SOCKET,
    RECEIVER_PROCS,
    SENDERS_BY_SIZE,
    Load,
    Measurement,
    measure_server,
)
from loadtests.common import (
    LOOP_METHOD,
    Mode,
    footer,
    header,
    loop_cells,
    loop_target,
    median,
    ratio,
    verdict,
)
from loadtests.servers import package_version

TITLE = "Chat fan-out: 10, 100 and 1,000 members"
SIZES = (10, 100, 1_000)
ROUNDS = 5
HISTORY = 1_000_000
QUICK_HISTORY = 100_000
#: Targets (issue 9).
CPU_TARGET = 0.5  #: hub server CPU per delivery / broadcast's, at most (100 and 1,000)
SOCKETIO_TARGET = 5.0  #: hub delivered/s / python-socketio's, at least, every round
ONE_IN_FLIGHT_TARGETS = {100: 0.7, 10: 0.5}  #: hub / broadcast with 1 in flight, at least


def _kinds(load: Load) -> tuple[str, ...]:
    return ("hub", "broadcast", "socketio") if load.window > 1 else ("hub", "broadcast")


def _cell(ms: list[Measurement], kind: str, size: int, load: Load) -> list[Measurement]:
    return [m for m in ms if m.kind == kind and m.size == size and m.load == load]


def _row(kind: str, cell: list[Measurement]) -> str:
    rates = [m.rate for m in cell]
    best = cell[0]
    paced = " (sender-paced)" if any(m.paced for m in cell) else ""
    recv = median([m.receiver_cpu_s / m.cpu_wall_s for m in cell])
    send = median([m.sender_cpu_s / m.cpu_wall_s for m in cell])
    loops = ", ".join(loop_cells(m.loop) for m in cell) if kind == "hub" else "-"
    return (
        f"| {best.size:,} | {best.load.name} | {kind} | **{median(rates):,.0f}**{paced}"
        f" | {', '.join(f'{r:,.0f}' for r in rates)} | {median([m.msgs_per_s for m in cell]):,.0f}"
        f" | {median([m.server_cpu_s / m.cpu_wall_s for m in cell]):.0%}"
        f" | {median([m.server_us for m in cell]):.2f} | {median([m.client_us for m in cell]):.2f}"
        f" | {recv:.0%} / {send:.0%} | {best.frame_bytes:.0f} | {loops} |"
    )


def _targets(ms: list[Measurement]) -> list[str]:
    out = []
    pipelined = next(load for load in LOADS if load.window > 1)
    single = next(load for load in LOADS if load.window == 1)
    measured = {m.size for m in ms}
    for size in (100, 1_000):
        if size not in measured:
            continue
        hub = median([m.server_us for m in _cell(ms, "hub", size, pipelined)])
        base = median([m.server_us for m in _cell(ms, "broadcast", size, pipelined)])
        r = ratio(hub, base)
        out.append(
            f"- {size:,} members, pipelined: hub server CPU per delivery **{hub:.2f} µs** ="
            f" **{r:.2f}x** broadcast's {base:.2f} µs (target <= {CPU_TARGET}x):"
            f" {verdict(r <= CPU_TARGET)}."
        )
    for size in sorted(measured):
        hubs = _cell(ms, "hub", size, pipelined)
        sios = _cell(ms, "socketio", size, pipelined)
        per_round = [ratio(h.rate, s.rate) for h, s in zip(hubs, sios, strict=False)]
        ok = bool(per_round) and all(r >= SOCKETIO_TARGET for r in per_round)
        ratios = ", ".join(f"{r:.2f}x" for r in per_round)
        out.append(
            f"- {size:,} members, pipelined: hub / python-socketio delivered/s, median"
            f" **{median(per_round):.2f}x** (rounds: {ratios}; target >= {SOCKETIO_TARGET:g}x"
            f" in every round): {verdict(ok)}."
        )
    for size, target in ONE_IN_FLIGHT_TARGETS.items():
        if size not in measured:
            continue
        hub = median([m.rate for m in _cell(ms, "hub", size, single)])
        base = median([m.rate for m in _cell(ms, "broadcast", size, single)])
        r = ratio(hub, base)
        out.append(
            f"- {size:,} members, 1 in flight: hub / broadcast delivered/s **{r:.2f}x**"
            f" (target >= {target}x): {verdict(r >= target)}."
        )
    for size in sorted(measured):
        for load in LOADS:
            if load == single and size in ONE_IN_FLIGHT_TARGETS:
                continue
            hub = median([m.rate for m in _cell(ms, "hub", size, load)])
            base = median([m.rate for m in _cell(ms, "broadcast", size, load)])
            out.append(
                f"- {size:,} members, {load.name}: hub / broadcast delivered/s"
                f" {ratio(hub, base):.2f}x (no target)."
            )
    out.append(loop_target([m.loop for m in ms if m.kind == "hub"]))
    problems = [f"{m.kind} {m.size} {m.load.name}: {p}" for m in ms for p in m.problems()]
    if problems:
        out += [f"- **check failed**: {p}" for p in problems[:20]]
    else:
        out.append(
            "- checks: in every measurement every receiver got exactly the events sent, no"
            " socket was closed, no send was refused, and the hub's last event carried the"
            " conversation's last seq."
        )
    return out


def render(
    ms: list[Measurement], notes: list[str], mode: Mode, history: int, built_s: float,
    elapsed: float,
) -> str:  # fmt: skip
    senders = ", ".join(f"{n} at {size:,} members" for size, n in SENDERS_BY_SIZE.items())
    caps = ", ".join(f"`{k}` = {v}" for k, v in seed.known_settings(dict(HUB_CAPS)).items())
    method = [
        "hub: `bench_server.py --real-auth`: the real app and authenticator, SQLite with"
        " durable commits, the audit trail, the default rate limits (50 messages/s, burst 200"
        f" per socket). Its database is a fresh copy of a template whose conversation holds"
        f" {history:,} messages (seeded once by SQL, `loadtests/seed.py`; {built_s:.0f} s"
        " this run, then cached), with the run's members and a login session each. Raised for"
        f" these runs only: {caps} (the sender sockets of one member, and one client address"
        " holding every socket).",
        "broadcast: `bench_chat_servers.py broadcast` (`websockets.broadcast` of each sender"
        " frame, unchanged, then a 1-byte ack); socketio: python-socketio"
        f" {package_version('python-socketio')} `AsyncServer` (ASGI) under uvicorn with the"
        " hub's settings, `emit` to a room in the handler whose return value acks.",
        f"receivers: {RECEIVER_PROCS} processes (`bench_chat_client.py`, raw asyncio, frame"
        " headers only, last frame's seq checked), one socket per member.",
        f"senders: one process (`loadtests/chat_sender.py`, raw asyncio): {senders} sender"
        f" sockets (members' extra sockets), each paced to {RATE_PER_SOCKET:g} messages/s"
        f" (token bucket of {BURST}, under the hub's limit, so never refused) with 1 or 16"
        " unacknowledged messages at most; the same for the three servers. A rate marked"
        " sender-paced reached 90% of that pacing: the server was not saturated.",
        "delivered/s = events received in the measured phase / (last delivery - first"
        " measured send), CLOCK_MONOTONIC shared by the processes; a tenth of the messages"
        " is sent first as warm-up. Frames are the same size for the three servers.",
        "CPU: server process (all threads) over the measured phase, as a share of one core and"
        " per delivery; client CPU per delivery is the receivers' and the sender's together;"
        " receiver / sender columns are each a share of one core.",
        LOOP_METHOD,
    ]
    out = header(TITLE, "chat", elapsed, mode, method)
    out += [
        "",
        "| members | senders' load | server | delivered/s (median) | each round | messages/s"
        " | server CPU | server CPU µs/delivery | client CPU µs/delivery"
        " | receivers / sender CPU | frame bytes | hub loop lag p99 / max ms per round |",
        "|---:|---|---|---:|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for size in SIZES:
        for load in LOADS:
            for kind in _kinds(load):
                cell = _cell(ms, kind, size, load)
                if cell:
                    out.append(_row(kind, cell))
    out += ["", "Targets (median of rounds unless said):", ""]
    out += _targets(ms)
    out += footer(notes)
    return "\n".join(out) + "\n"


async def run(
    quick: bool = False, sizes: tuple[int, ...] = SIZES, rounds: int | None = None
) -> str:
    """Measure (about 15 minutes, plus the template's first build; ``quick``: 3) and return
    the markdown section."""
    started = time.monotonic()
    mode = Mode.of(quick, rounds or ROUNDS)
    history = QUICK_HISTORY if quick else HISTORY
    tpl, built_s = await seed.template(history)
    ms: list[Measurement] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="medhub-bench-chat-") as tmp:
        for _ in range(mode.rounds):
            for size in sizes:
                for load in LOADS:
                    for kind in _kinds(load):
                        ms.append(
                            await measure_server(kind, size, load, Path(tmp), tpl, notes, quick)
                        )
    if any(math.isnan(m.rate) for m in ms):
        notes.append("some measurement did not complete: see the checks above")
    return render(ms, notes, mode, history, built_s, time.monotonic() - started)


def main(argv: list[str] | None = None) -> None:
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_chat", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, one round")
    parser.add_argument("--sizes", type=int, nargs="+", choices=SIZES, help="members")
    parser.add_argument("--rounds", type=int, help="rounds (default 5; quick: 1)")
    args = parser.parse_args(argv)
    sizes = tuple(args.sizes or SIZES)
    print(uvloop.run(run(args.quick, sizes, args.rounds)), end="")


if __name__ == "__main__":
    main()
