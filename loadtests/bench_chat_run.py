"""One measurement of the chat fan-out section (:mod:`loadtests.bench_chat`).

A measurement starts a server fresh (the hub on a fresh copy of the seeded
template, :func:`loadtests.seed.template`, with the run's members and
sessions), :data:`RECEIVER_PROCS` receiver processes
(:mod:`loadtests.bench_chat_client`, one socket per member, counting frames)
and one sender process (:mod:`loadtests.chat_sender`), sends the warm-up
messages, then the measured ones, and collects every process's figures.

With ``BENCH_CHAT_PROFILE=PATH`` in the environment the hub runs under
cProfile (stats written to PATH when it exits, overwritten by each hub run;
its figures are then not comparable): a diagnostic, never for ``make bench``.

Delivered messages/s = events received by the receivers in the measured
phase / (the last receiver's last event - the first measured send), both on
CLOCK_MONOTONIC (one clock for every process on Linux).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests import seed
from loadtests.bench_server import LoopReport
from loadtests.common import expect, hub_args, loop_report, read_line, start_client, stop, tell
from loadtests.servers import ServerProcess, cpu_seconds, running

RECEIVER_PROCS = 2
#: Sender sockets per conversation size: enough that the senders' pacing (45 msg/s each,
#: under the hub's default 50/s) offers more than any of the servers delivers.
SENDERS_BY_SIZE = {10: 300, 100: 128, 1_000: 64}
#: Measured messages per size (200,000 deliveries at 10 and 100 members, 1,000,000 at
#: 1,000); a quarter of it in quick mode. Warm-up: a tenth of it, not measured.
MESSAGES_BY_SIZE = {10: 20_000, 100: 2_000, 1_000: 1_000}
RATE_PER_SOCKET = 45.0
BURST = 20
#: Seconds to wait for sockets to be set up, and for progress while messages flow.
READY_TIMEOUT_S = 120.0
STALL_S = 15.0
#: Per-user and per-address socket caps of the hub for these runs (the defaults, 10 and
#: 256, are below the sender sockets of one member at 10 members, and the sockets of one
#: client address at 1,000 members).
HUB_CAPS = {"ws_max_connections_per_user": 64, "max_connections_per_address": 4096}


@dataclass(frozen=True)
class Load:
    """Sender sockets and unacknowledged messages per sender socket at most."""

    name: str
    window: int


LOADS = (Load("1 in flight", 1), Load("pipelined", 16))


@dataclass
class Measurement:
    kind: str
    size: int
    load: Load
    senders: int
    messages: int
    delivered: int
    expected: int
    seconds: float  #: first measured send -> last delivery
    ack_seconds: float
    server_cpu_s: float
    cpu_wall_s: float
    receiver_cpu_s: float
    sender_cpu_s: float
    cap_per_s: float
    complete: int
    closed: int
    errors: dict[str, int]
    seq_ok: bool
    frame_bytes: float
    loop: LoopReport = field(default_factory=LoopReport)

    @property
    def rate(self) -> float:
        """Delivered events per second."""
        return self.delivered / self.seconds if self.seconds > 0 else math.nan

    @property
    def msgs_per_s(self) -> float:
        return self.rate / self.size

    @property
    def server_us(self) -> float:
        return self.server_cpu_s / self.delivered * 1e6 if self.delivered else math.nan

    @property
    def client_us(self) -> float:
        cpu = self.receiver_cpu_s + self.sender_cpu_s
        return cpu / self.delivered * 1e6 if self.delivered else math.nan

    @property
    def paced(self) -> bool:
        """The senders' pacing, not the server, set the rate (within 10%)."""
        return self.msgs_per_s >= 0.9 * self.cap_per_s

    def problems(self) -> list[str]:
        out = []
        if self.complete != self.size or self.delivered != self.expected:
            out.append(
                f"{self.complete}/{self.size} receivers complete,"
                f" {self.delivered:,} of {self.expected:,} events"
            )
        if self.closed:
            out.append(f"{self.closed} sockets closed")
        if self.errors:
            out.append(f"send errors {self.errors}")
        if not self.seq_ok:
            out.append("last seq check failed")
        return out


async def _start(module: str, args: list[str], log: Path) -> asyncio.subprocess.Process:
    return await start_client(module, args, log)


async def measure(
    server: ServerProcess, size: int, load: Load, conv: str, after: int, work: Path, quick: bool
) -> tuple[Measurement, tuple[int, int]]:
    """Warm up, then time the measured messages; (measurement, window in monotonic ns)."""
    kind = server.kind
    messages = MESSAGES_BY_SIZE[size] // (4 if quick else 1)
    warm = max(10, messages // 10)
    senders = SENDERS_BY_SIZE[size]
    tokens = str(work / "tokens.json")
    per = size // RECEIVER_PROCS
    recv_logs = [work / f"receivers-{kind}-{p}.log" for p in range(RECEIVER_PROCS)]
    send_log = work / f"sender-{kind}.log"
    procs: list[asyncio.subprocess.Process] = []
    try:
        for p in range(RECEIVER_PROCS):
            count = per if p < RECEIVER_PROCS - 1 else size - per * p
            args = [
                "--kind", kind, "--port", str(server.port), "--first", str(per * p),
                "--count", str(count), "--conv", conv, "--warm", str(warm),
                "--total", str(warm + messages), "--stall", str(STALL_S), "--after", str(after),
            ] + (["--tokens", tokens] if kind == "hub" else [])  # fmt: skip
            procs.append(await _start("loadtests.bench_chat_client", args, recv_logs[p]))
        args = [
            "--kind", kind, "--port", str(server.port), "--conv", conv, "--members", str(size),
            "--senders", str(senders), "--window", str(load.window),
            "--rate-per-socket", str(RATE_PER_SOCKET), "--burst", str(BURST),
            "--warm", str(warm), "--messages", str(messages),
        ] + (["--tokens", tokens] if kind == "hub" else [])  # fmt: skip
        sender = await _start("loadtests.chat_sender", args, send_log)
        procs.append(sender)
        for proc, log in zip(procs[:-1], recv_logs, strict=True):
            await expect(proc, "READY", READY_TIMEOUT_S, log)
        await expect(sender, "READY", READY_TIMEOUT_S, send_log)
        await tell(sender, "WARM")
        await expect(sender, "WARMED", READY_TIMEOUT_S, send_log)
        for proc, log in zip(procs[:-1], recv_logs, strict=True):
            await expect(proc, "WARM", STALL_S * 3, log)
        cpu0, t0_ns = cpu_seconds(server.pid), time.monotonic_ns()
        await tell(sender, "GO")
        sent = json.loads(await read_line(sender, READY_TIMEOUT_S * 3, send_log))
        reports = [
            json.loads(await expect(proc, "{", STALL_S * 6, log))
            for proc, log in zip(procs[:-1], recv_logs, strict=True)
        ]
        server_cpu, t1_ns = cpu_seconds(server.pid) - cpu0, time.monotonic_ns()
    finally:
        for proc in procs:
            await stop(proc)
    return _measurement(kind, size, load, senders, messages, after + warm + messages, sent,
                        reports, server_cpu, (t1_ns - t0_ns) / 1e9), (t0_ns, t1_ns)  # fmt: skip


def _measurement(
    kind: str, size: int, load: Load, senders: int, messages: int, last_seq: int,
    sent: dict[str, Any], reports: list[dict[str, Any]], server_cpu: float, cpu_wall: float,
) -> Measurement:  # fmt: skip
    done_at = max(r["done_at"] for r in reports)
    complete = sum(r["complete"] for r in reports)
    seqs = [r[k] for r in reports for k in ("last_seq_min", "last_seq_max")]
    # The hub delivers in seq order: every receiver's last event is the conversation's last.
    seq_ok = all(s == last_seq if kind == "hub" else s is not None for s in seqs)
    frames = sum(r["frames"] for r in reports)
    return Measurement(
        kind=kind, size=size, load=load, senders=senders, messages=messages,
        delivered=sum(r["measured_frames"] for r in reports), expected=messages * size,
        seconds=(done_at - sent["t0"]) if complete == size else math.nan,
        ack_seconds=sent["acked_at"] - sent["t0"], server_cpu_s=server_cpu, cpu_wall_s=cpu_wall,
        receiver_cpu_s=sum(r["cpu_s"] for r in reports), sender_cpu_s=sent["cpu_s"],
        cap_per_s=sent["cap_per_s"], complete=complete,
        closed=sum(r["closed"] for r in reports) + sent["closed"], errors=sent["errors"],
        seq_ok=seq_ok and not any(r["last_seq_bad"] for r in reports),
        frame_bytes=sum(r["bytes"] for r in reports) / frames if frames else 0.0,
    )  # fmt: skip


async def measure_server(
    kind: str, size: int, load: Load, work: Path, tpl: seed.Template, notes: list[str],
    quick: bool,
) -> Measurement:  # fmt: skip
    """Start ``kind`` fresh, set it up, measure, stop it."""
    if kind != "hub":
        async with running(kind, work, notes) as server:
            m, _ = await measure(server, size, load, "", 0, work, quick)
        return m
    prepared = await seed.prepare(work / "db", users=size, members=size, from_template=tpl)
    seed.write_tokens(work / "tokens.json", prepared.tokens)
    settings = seed.hub_settings_file(
        work / "hub.json", prepared.secrets, prepared.db_path, **HUB_CAPS
    )
    monitor = work / f"monitor-{size}-{load.window}.json"
    extra = hub_args(settings, monitor)
    if profile := os.environ.get("BENCH_CHAT_PROFILE"):  # diagnostics only, never make bench
        extra += ("--profile", profile)
    try:
        async with running("hub", work, notes, extra) as server:
            m, window = await measure(server, size, load, seed.CONV, prepared.last_seq, work, quick)
    finally:
        seed.remove(prepared.db_path)
    m.loop = loop_report(monitor, *window)
    return m
