"""Chat fan-out benchmark: one conversation with 100 members, the hub beside two baselines.

``python -m loadtests.bench_chat`` prints the markdown section; :func:`run`
returns it (``loadtests.bench`` writes it to docs/benchmarks.md). Issue 5's
targets: delivered messages/s of the hub at least :data:`BROADCAST_TARGET`
times a plain ``websockets.broadcast`` server's, and at least
:data:`SOCKETIO_TARGET` times python-socketio's room emit.

Each server runs as its own subprocess on a free loopback port, started fresh:

- hub: :mod:`loadtests.bench_server` (the real app, SQLite in a temporary
  directory, durable commits, the audit trail). Before the measurement the
  benchmark inserts organisation ``bench`` and users ``u0``..``u99``
  (practitioners) into the hub's database, as tests/chat/helpers.py does,
  and a setup socket of ``u0`` creates the group conversation with
  ``chat.create``. Receivers follow it with ``chat.sync``; senders send
  ``chat.send`` (each persisted, then acked with its seq).
- broadcast / socketio: :mod:`loadtests.bench_chat_servers`.

The client side is the same for the three servers:

- :data:`RECEIVER_PROCS` receiver processes (:mod:`loadtests.bench_chat_client`)
  hold :data:`MEMBERS` sockets between them, one per member, and only count
  frames (a raw frame-header parser; the last frame's ``seq`` is checked);
- :data:`SENDERS` sender sockets in this process send :data:`MESSAGES`
  messages after :data:`WARMUP` warm-up ones, each socket with at most
  :data:`WINDOW` unacknowledged messages. The hub acks after the commit;
  the baselines ack after broadcasting.

Every server is measured :data:`ROUNDS` times, alternating, and the best rate
of each is compared. The hub is then measured once more with
:data:`DIAG_SENDERS` sender sockets (a diagnostic: how the rate moves when
the messages in flight come from more sockets).

Delivered messages/s = events received by the receivers during the measured
phase / (the last receiver's last event - the first measured send), both
``time.monotonic()`` (one clock for every process on Linux). Frames are the
same size for the three servers: the broadcast senders send the hub's own
event frame (``protocol`` encoder, same fields), the Socket.IO text is cut
so that its ``42["chat",{...}]`` frame has the hub frame's length.

Diagnostics (never used by ``make bench``): ``python -m loadtests.bench_chat
--only hub --rounds 1 --no-diagnostic --messages N --senders S --window W``
runs a part; with ``BENCH_CHAT_PROFILE=PATH`` in the environment the hub runs
under cProfile (stats written to PATH when it exits, overwritten by each hub
run; the hub's figure is then not comparable).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect

from loadtests.bench_server import bench_token, raise_nofile_limit
from loadtests.bench_ws import (
    START_TIMEOUT_S,
    BenchError,
    ServerProcess,
    _healthz,
    _is_problem,
    cpu_seconds,
    free_port,
    machine_facts,
    package_version,
    running,
    stop_server,
)
from protocol.chat import ChatEvent, channel_of
from protocol.codec import SUBPROTOCOL_MSGPACK, MsgpackCodec
from protocol.messages import Event

#: Members of the conversation = receiver sockets, split over RECEIVER_PROCS processes.
MEMBERS = 100
RECEIVER_PROCS = 2
#: Measured messages, sent after WARMUP warm-up messages (not measured).
MESSAGES = 2_000
WARMUP = 100
#: Sender sockets, and unacknowledged messages per sender socket at most.
SENDERS = 4
WINDOW = 16
#: The hub is measured once more with many senders (bigger commit batches), as a diagnostic.
DIAG_SENDERS = 32
DIAG_WINDOW = 4
#: Every server is measured ROUNDS times, alternating; the best rate of each is compared.
ROUNDS = 2
#: The message text (the Socket.IO one is cut to give the same frame length).
TEXT = (
    "BP 128/82, pulse 71, SpO2 97%. Patient reports mild headache since this morning;"
    " no fever. Please review the EEG before 14:00."
)
#: Targets of issue 5.
BROADCAST_TARGET = 0.7
SOCKETIO_TARGET = 4.0
#: Seconds to wait for receivers to connect, and for progress while messages flow.
READY_TIMEOUT_S = 60.0
STALL_S = 10.0

KINDS = ("hub", "broadcast", "socketio")
BASELINE_MODULE = "loadtests.bench_chat_servers"
SIO_PATH = "/socket.io/?EIO=4&transport=websocket"
_MSGPACK = MsgpackCodec()


# -- servers --------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def running_baseline(
    kind: str, workdir: Path, notes: list[str]
) -> AsyncIterator[ServerProcess]:
    """A baseline server of :mod:`loadtests.bench_chat_servers`, stopped on exit.

    Like ``bench_ws.running`` (which only knows the hub and the plain server).
    """
    port = free_port()
    data_dir = workdir / f"{kind}-{port}"
    data_dir.mkdir(parents=True)
    log_path = data_dir / "server.log"
    cmd = [sys.executable, "-m", BASELINE_MODULE, kind, "--port", str(port)]
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, cwd=os.getcwd()
        )
    server = ServerProcess(kind, port, process, log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not await _healthz(port):
            if process.returncode is not None or time.monotonic() > deadline:
                tail = "\n".join(server.log_lines()[-20:])
                raise BenchError(f"{kind} server did not start on port {port}:\n{tail}")
            await asyncio.sleep(0.05)
        yield server
    finally:
        code = await stop_server(server)
        if code not in (0, -signal.SIGTERM):
            notes.append(f"{kind} server exited with code {code}")
        notes.extend(
            f"{kind} server log: {line[:300]}" for line in server.log_lines() if _is_problem(line)
        )


async def seed_hub(server: ServerProcess, workdir: Path) -> None:
    """Insert org ``bench`` and users ``u0``..: the hub has migrated its database by now."""
    import sqlalchemy as sa

    from server.accounts.tables import orgs, users
    from server.store.db import Database

    path = (workdir / f"hub-{server.port}" / "medhub.db").resolve()
    async with Database(f"sqlite+aiosqlite:///{path}") as db, db.begin() as conn:
        await conn.execute(
            sa.insert(orgs).values(id="bench", name="bench", disabled=False, created_us=1)
        )
        await conn.execute(
            sa.insert(users),
            [
                # Identity columns are envelopes only the accounts sidecar opens; chat
                # reads role and organisation, so placeholders do here.
                {"id": f"u{n}", "org_id": "bench", "role": "practitioner", "name_enc": b"-",
                 "email_enc": b"-", "phone_enc": b"-", "email_index": f"u{n}".encode(),
                 "status": "active", "totp_last_step": -1, "created_us": 1, "version": 1}
                for n in range(MEMBERS)
            ],
        )  # fmt: skip


async def create_conversation(server: ServerProcess) -> str:
    """``u0`` creates the group conversation of the MEMBERS users; returns its id."""
    ws = await open_sender("hub", server.port, 0)
    try:
        await ws.send(
            msgpack.packb(
                {"type": "chat.create", "id": 2, "kind": "group", "title": "bench",
                 "members": [f"u{n}" for n in range(1, MEMBERS)]}
            )
        )  # fmt: skip
        while True:
            reply = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 10))
            if reply.get("id") == 2:
                break
        if reply.get("type") != "result":
            raise BenchError(f"chat.create failed: {reply}")
        conv: str = reply["data"]["conv"]
        return conv
    finally:
        await ws.close()


# -- frames ------------------------------------------------------------------------------------
def event_frame(conv: str, seq: int, sender: str, at_ms: int, text: str = TEXT) -> bytes:
    """The hub's msgpack ``event`` frame of a chat message (as ``fanout.encode_event``)."""
    data = ChatEvent(
        seq=seq, kind="message", sender=sender, client_msg_id=f"b{seq:07d}", at=at_ms,
        text=text, version=1,
    )  # fmt: skip
    return _MSGPACK.encode(Event(ch=channel_of(conv), seq=seq, kind="message", data=data))


def _sio_event(conv: str, seq: int, sender: str, at_ms: int, text: str) -> dict[str, Any]:
    return {
        "type": "event", "ch": channel_of(conv), "seq": seq, "kind": "message",
        "data": {"seq": seq, "kind": "message", "sender": sender,
                 "client_msg_id": f"b{seq:07d}", "at": at_ms, "text": text, "version": 1},
    }  # fmt: skip


def sio_text(conv: str, target_len: int, at_ms: int) -> str:
    """TEXT cut so that the emitted ``42["chat",{...}]`` frame is ``target_len`` bytes."""
    seq = WARMUP + MESSAGES // 2
    emitted = "42" + json.dumps(
        ["chat", _sio_event(conv, seq, "u0", at_ms, TEXT)], separators=(",", ":")
    )
    excess = len(emitted.encode()) - target_len
    return TEXT[: len(TEXT) - max(0, excess)]


class Frames:
    """What the senders send for message ``seq`` (1-based, warm-up first) to server ``kind``."""

    def __init__(self, kind: str, conv: str) -> None:
        self.kind, self.conv = kind, conv
        self.fake_conv = "c-0123456789abcdef"  # the baselines' channel: a hub-shaped id
        self.at_ms = int(time.time() * 1000)
        hub_len = len(event_frame(self.fake_conv, WARMUP + MESSAGES // 2, "u0", self.at_ms))
        self.sio_text = sio_text(self.fake_conv, hub_len, self.at_ms)

    def frame(self, seq: int, sender: int) -> bytes | str:
        if self.kind == "hub":
            return msgpack.packb(
                {"type": "chat.send", "id": seq, "conv": self.conv,
                 "client_msg_id": f"b{seq:07d}", "text": TEXT}
            )  # fmt: skip
        if self.kind == "broadcast":
            return event_frame(self.fake_conv, seq, f"u{sender}", self.at_ms)
        body = _sio_event(self.fake_conv, seq, f"u{sender}", self.at_ms, self.sio_text)
        return f"42{seq}" + json.dumps(["msg", body], separators=(",", ":"))

    def split(self, first: int, count: int, senders: int) -> list[list[bytes | str]]:
        """Messages ``first``..``first+count-1``, dealt round-robin to ``senders`` sockets."""
        out: list[list[bytes | str]] = [[] for _ in range(senders)]
        for seq in range(first, first + count):
            k = seq % senders
            out[k].append(self.frame(seq, k))
        return out


# -- senders ----------------------------------------------------------------------------------
async def open_sender(kind: str, port: int, user: int) -> ClientConnection:
    """A sender socket, handshake done (hub: ``hello`` as ``u<user>``, a member)."""
    if kind == "socketio":
        ws = await connect(f"ws://127.0.0.1:{port}{SIO_PATH}", compression=None, ping_interval=None)
        opened = await asyncio.wait_for(ws.recv(), 10)
        if not str(opened).startswith("0"):
            raise BenchError(f"socketio: engine.io open expected, got {opened!r}")
        await ws.send('40{"role":"sender"}')
        while not str(await asyncio.wait_for(ws.recv(), 10)).startswith("40"):
            pass
        return ws
    ws = await connect(
        f"ws://127.0.0.1:{port}/ws",
        subprotocols=[SUBPROTOCOL_MSGPACK],  # type: ignore[list-item]
        compression=None,
        ping_interval=None,
        max_size=2**22,
    )
    if kind == "hub":
        auth = {"method": "token", "token": bench_token(user)}
        await ws.send(msgpack.packb({"type": "hello", "id": 1, "auth": auth}))
        welcome = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 10))
        if welcome.get("type") != "welcome":
            raise BenchError(f"hub refused the sender's hello: {welcome}")
    else:
        await ws.send(msgpack.packb({"type": "hello", "role": "sender"}))
        await asyncio.wait_for(ws.recv(), 10)
    return ws


class Sender:
    """One sender socket: sends with at most ``window`` unacknowledged messages."""

    def __init__(self, kind: str, ws: ClientConnection, window: int) -> None:
        self.kind, self.ws = kind, ws
        self.slots = asyncio.Semaphore(window)
        self.acked = 0
        self.error: str | None = None
        self.progress = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for frame in self.ws:
                if self._is_ack(frame):
                    self.acked += 1
                    self.slots.release()
                    self.progress.set()
        self.error = self.error or "sender socket closed"
        self.progress.set()

    def _is_ack(self, frame: bytes | str) -> bool:
        if self.kind == "broadcast":
            return True
        if self.kind == "socketio":
            if frame == "2":
                asyncio.get_running_loop().create_task(self.ws.send("3"))
            return isinstance(frame, str) and frame.startswith("43")
        reply = msgpack.unpackb(frame)
        kind = reply.get("type")
        if kind == "heartbeat":
            asyncio.get_running_loop().create_task(
                self.ws.send(msgpack.packb({"type": "heartbeat"}))
            )
        elif kind == "error":
            self.error = f"hub error: {reply}"
            return True
        return kind == "result"

    async def send_all(self, frames: list[bytes | str]) -> None:
        """Send ``frames`` and wait until every one is acknowledged."""
        target = self.acked + len(frames)
        for frame in frames:
            await self.slots.acquire()
            await self.ws.send(frame)
        while self.acked < target and self.error is None:
            self.progress.clear()
            await self.progress.wait()
        if self.error is not None:
            raise BenchError(self.error)

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


# -- receivers ----------------------------------------------------------------------------------
class Receivers:
    """The receiver processes of one measurement."""

    def __init__(self, kind: str, procs: list[asyncio.subprocess.Process]) -> None:
        self.kind, self.procs = kind, procs

    @classmethod
    async def start(cls, kind: str, port: int, conv: str, workdir: Path) -> Receivers:
        per = MEMBERS // RECEIVER_PROCS
        procs = []
        for p in range(RECEIVER_PROCS):
            count = per if p < RECEIVER_PROCS - 1 else MEMBERS - per * p
            cmd = [
                sys.executable, "-m", "loadtests.bench_chat_client", "--kind", kind,
                "--port", str(port), "--first", str(per * p), "--count", str(count),
                "--conv", conv, "--warm", str(WARMUP), "--total", str(WARMUP + MESSAGES),
                "--stall", str(STALL_S),
            ]  # fmt: skip
            with (workdir / f"receivers-{kind}-{p}.log").open("wb") as log:
                procs.append(
                    await asyncio.create_subprocess_exec(
                        *cmd,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=log,
                        cwd=os.getcwd(),
                    )
                )
        receivers = cls(kind, procs)
        await receivers.expect("READY", READY_TIMEOUT_S, workdir)
        return receivers

    async def expect(self, word: str, wait_s: float, workdir: Path) -> list[str]:
        lines = []
        for i, proc in enumerate(self.procs):
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), wait_s)).decode().strip()
            if not line.startswith(word):
                log = workdir / f"receivers-{self.kind}-{i}.log"
                tail = "\n".join(log.read_text().splitlines()[-10:]) if log.exists() else ""
                raise BenchError(f"receiver process {i}: expected {word}, got {line!r}\n{tail}")
            lines.append(line)
        return lines

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for proc in self.procs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


def thread_cpu_seconds(pid: int) -> float:
    """User + system CPU time of the main thread (the event loop) of process ``pid``."""
    stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- one measurement ------------------------------------------------------------------------
@dataclass(frozen=True)
class Load:
    """Sender sockets, and unacknowledged messages per sender socket at most."""

    senders: int
    window: int

    def __str__(self) -> str:
        return f"{self.senders} senders x {self.window}"


@dataclass
class Measurement:
    kind: str
    load: Load
    messages: int
    delivered: int  #: events received during the measured phase, all receivers
    expected: int
    seconds: float  #: first measured send -> last delivery
    ack_seconds: float  #: first measured send -> last ack
    frame_bytes: float
    server_cpu_s: float  #: all threads of the server process
    loop_cpu_s: float  #: its main thread (the event loop)
    cpu_wall_s: float  #: the wall time over which the server CPU was sampled
    receiver_cpu_s: list[float]
    receiver_wall_s: list[float]
    sender_cpu_s: float
    complete: int
    closed: int
    close_codes: list[int]
    seq_ok: bool
    last_seqs: tuple[Any, Any]

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0


async def measure(
    kind: str, server: ServerProcess, conv: str, workdir: Path, load: Load
) -> Measurement:
    """Warm up, then time MESSAGES messages from ``load.senders`` sockets to MEMBERS receivers."""
    frames = Frames(kind, conv)
    pid = server.pid
    receivers = await Receivers.start(kind, server.port, conv, workdir)
    senders: list[Sender] = []
    try:
        for k in range(load.senders):
            senders.append(Sender(kind, await open_sender(kind, server.port, k), load.window))
        warm = frames.split(1, WARMUP, load.senders)
        await asyncio.gather(*(s.send_all(f) for s, f in zip(senders, warm, strict=True)))
        await receivers.expect("WARM", STALL_S * 3, workdir)
        batches = frames.split(WARMUP + 1, MESSAGES, load.senders)
        cpu0, loop0, self0 = cpu_seconds(pid), thread_cpu_seconds(pid), time.process_time()
        t0 = time.monotonic()
        await asyncio.gather(*(s.send_all(f) for s, f in zip(senders, batches, strict=True)))
        acked_at = time.monotonic()
        sender_cpu = time.process_time() - self0
        lines = await receivers.expect("{", STALL_S * 6, workdir)
        # Sampled once every receiver reported (within 0.25 s of the last delivery).
        server_cpu, loop_cpu = cpu_seconds(pid) - cpu0, thread_cpu_seconds(pid) - loop0
        cpu_wall = time.monotonic() - t0
        reports = [json.loads(line) for line in lines]
    finally:
        for s in senders:
            await s.close()
        await receivers.stop()
    done_at = max(r["done_at"] for r in reports)
    complete = sum(r["complete"] for r in reports)
    total = WARMUP + MESSAGES
    seq_min = min(
        (r["last_seq_min"] for r in reports if r["last_seq_min"] is not None), default=None
    )
    seq_max = max(
        (r["last_seq_max"] for r in reports if r["last_seq_max"] is not None), default=None
    )
    if kind == "hub":
        seq_ok = seq_min == seq_max == total  # the hub delivers in seq order
    else:  # several senders: the last broadcast is one of the last in flight
        seq_ok = seq_min is not None and seq_min > total - load.senders * load.window
    seq_ok = seq_ok and not any(r["last_seq_bad"] for r in reports)
    frames_all = sum(r["frames"] for r in reports)
    return Measurement(
        kind=kind,
        load=load,
        messages=MESSAGES,
        delivered=sum(r["measured_frames"] for r in reports),
        expected=MESSAGES * MEMBERS,
        seconds=(done_at - t0) if complete == MEMBERS else float("nan"),
        ack_seconds=acked_at - t0,
        frame_bytes=sum(r["bytes"] for r in reports) / frames_all if frames_all else 0.0,
        server_cpu_s=server_cpu,
        loop_cpu_s=loop_cpu,
        cpu_wall_s=cpu_wall,
        receiver_cpu_s=[r["cpu_s"] for r in reports],
        receiver_wall_s=[r["wall_s"] for r in reports],
        sender_cpu_s=sender_cpu,
        complete=complete,
        closed=sum(r["closed"] for r in reports),
        close_codes=sorted({c for r in reports for c in r["close_codes"]}),
        seq_ok=seq_ok,
        last_seqs=(seq_min, seq_max),
    )


async def measure_server(kind: str, workdir: Path, notes: list[str], load: Load) -> Measurement:
    """Start server ``kind`` fresh, set it up, measure, stop it."""
    if kind != "hub":
        async with running_baseline(kind, workdir, notes) as server:
            return await measure(kind, server, "", workdir, load)
    profile = os.environ.get("BENCH_CHAT_PROFILE")
    extra = ("--profile", profile, "--log-level", "warning") if profile else ()
    async with running("hub", workdir, notes, extra) as server:
        await seed_hub(server, workdir)
        conv = await create_conversation(server)
        return await measure("hub", server, conv, workdir, load)


@dataclass
class Results:
    """Every measurement of the run: ROUNDS per server, then the hub's diagnostic one."""

    rounds: dict[str, list[Measurement]] = field(default_factory=dict)
    diagnostic: Measurement | None = None
    notes: list[str] = field(default_factory=list)

    def best(self, kind: str) -> Measurement | None:
        """The measurement of ``kind`` with the highest rate (noise only ever slows down)."""
        ms = [m for m in self.rounds.get(kind, []) if m.seconds == m.seconds]
        return max(ms, key=lambda m: m.rate) if ms else None


# -- the report ----------------------------------------------------------------------------
def _row(label: str, m: Measurement, others: list[Measurement]) -> str:
    busy = m.server_cpu_s / m.cpu_wall_s * 100
    loop_busy = m.loop_cpu_s / m.cpu_wall_s * 100
    per = m.server_cpu_s / m.delivered * 1e6 if m.delivered else 0.0
    recv = ", ".join(
        f"{c / w * 100:.0f}%" if w else "-"
        for c, w in zip(m.receiver_cpu_s, m.receiver_wall_s, strict=True)
    )
    rounds = ", ".join(f"{o.rate:,.0f}" for o in others)
    return (
        f"| {label} | {m.load} | {m.delivered:,} | {m.frame_bytes:.0f} | {m.seconds:.2f}"
        f" | **{m.rate:,.0f}** | {rounds} | {busy:.0f}% | {loop_busy:.0f}% | {per:.1f}"
        f" | {recv} | {m.messages / m.ack_seconds:,.0f} |"
    )


def _check(m: Measurement) -> str | None:
    problems = []
    if m.complete != MEMBERS or m.delivered != m.expected:
        problems.append(
            f"{m.complete}/{MEMBERS} receivers complete, {m.delivered:,} of {m.expected:,} events"
        )
    if m.closed:
        problems.append(f"{m.closed} receiver sockets closed (codes {m.close_codes})")
    if not m.seq_ok:
        problems.append(f"last seq check failed (min/max {m.last_seqs})")
    return "; ".join(problems) if problems else None


def render(results: Results, facts: list[str], elapsed: float) -> str:
    """The markdown section for docs/benchmarks.md."""
    load = Load(SENDERS, WINDOW)
    out = [
        f"## Chat fan-out: one conversation, {MEMBERS} members",
        "",
        "Produced by `make bench` (this section alone:"
        f" `.venv/bin/python -m loadtests.bench --only chat`), in {elapsed:.0f} s. Each server"
        " runs as a subprocess on loopback, started fresh for each measurement, on the same"
        f" machine as the clients. The three servers are measured {ROUNDS} times, alternating;"
        " the best rate of each is compared (other load on the machine only slows a run down).",
        "",
        "- hub: `loadtests/bench_server.py` (the real app: SQLite with durable commits, audit"
        f" trail, bench authenticator). Org `bench` and users `u0`..`u{MEMBERS - 1}` are inserted"
        " into its database; `u0` creates the group conversation with `chat.create`; each"
        " receiver follows it with `chat.sync`; senders send `chat.send` (sockets of members"
        " that do not follow), each acked once committed.",
        "- broadcast: `loadtests/bench_chat_servers.py broadcast`, `websockets.asyncio.server` on"
        " uvloop (compression and pings off): `websockets.broadcast(receivers, frame)` of each"
        " sender frame, unchanged, then a 1-byte ack to the sender.",
        f"- socketio: python-socketio {package_version('python-socketio')} `AsyncServer`"
        " (ASGI, websocket transport only) under uvicorn with the hub's settings"
        " (uvloop, httptools, websockets-sansio): `await sio.emit('chat', data, room=...)`"
        " in the `msg` handler, whose return value acks the sender.",
        f"- clients, the same for the three: {MEMBERS} receiver sockets (msgpack subprotocol for"
        f" the hub and broadcast, Engine.IO 4 for Socket.IO) in {RECEIVER_PROCS} processes that"
        " only parse frame headers and count (raw asyncio protocol; the last frame's `seq` is"
        f" checked); {load.senders} sender sockets (`websockets` client) in the driver process,"
        f" each with at most {load.window} unacknowledged messages; {WARMUP} warm-up messages,"
        f" then {MESSAGES:,} measured. Frames are the same size for the three servers (the"
        " broadcast senders send the hub's own event frame; the Socket.IO text is cut to the"
        " same frame length).",
        "- delivered/s = events received by all receivers in the measured phase / (last"
        " delivery - first measured send), on CLOCK_MONOTONIC shared by the processes."
        " Server CPU: user + system time of the server process (all threads; the hub's SQLite"
        " driver runs in a thread) and of its main thread (the event loop) over the same"
        " phase, as a share of one core. Receiver CPU: each receiver process, same phase.",
        "",
        "Machine:",
        "",
    ]
    out += [f"- {fact}" for fact in facts]
    out += [
        "",
        "| server | senders x in flight | delivered | frame bytes | seconds | delivered/s (best)"
        " | each round | server CPU | event-loop thread | server CPU µs/delivery"
        " | receiver CPU | messages/s acked |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for kind in KINDS:
        m = results.best(kind)
        if m is not None:
            out.append(_row(kind, m, results.rounds[kind]))
    if results.diagnostic is not None:
        d = results.diagnostic
        out.append(_row("hub (diagnostic)", d, [d]))
    out.append("")
    hub = results.best("hub")
    for base, target in (("broadcast", BROADCAST_TARGET), ("socketio", SOCKETIO_TARGET)):
        other = results.best(base)
        if hub is None or other is None or not other.rate:
            out.append(f"- hub / {base}: not measured.")
            continue
        ratio = hub.rate / other.rate
        verdict = "**met**" if ratio >= target else "**missed**"
        out.append(f"- hub / {base}: **{ratio:.2f}x** (target at least {target:g}x): {verdict}.")
    if results.diagnostic is not None and hub is not None:
        d = results.diagnostic
        out.append(
            f"- diagnostic: the hub with {d.load} (more sender sockets, fewer messages each"
            f" in flight; more sends share each commit batch):"
            f" {d.rate:,.0f}/s,"
            f" {d.rate / hub.rate:.2f}x the hub's figure above"
            + "".join(
                f", {d.rate / b.rate:.2f}x {k}'s"
                for k in ("broadcast", "socketio")
                if (b := results.best(k)) is not None and b.rate
            )
            + "."
        )
    every = [m for ms in results.rounds.values() for m in ms]
    if results.diagnostic is not None:
        every.append(results.diagnostic)
    problems = [f"{m.kind} ({m.load}): {p}" for m in every if (p := _check(m)) is not None]
    if problems:
        out += [f"- **check failed**: {p}" for p in problems]
    else:
        out.append(
            "- checks: in every measurement every receiver got exactly the number of events"
            " sent, none was closed, and its last frame's seq was right (the hub's: the"
            " conversation's last seq, as it delivers in seq order)."
        )
    loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    out += ["", f"Load average (1, 5, 15 min) at the end: {loadavg}.", "", "Server logs:", ""]
    notes = results.notes
    if notes:
        out += [f"- {note}" for note in notes[:20]]
        if len(notes) > 20:
            out.append(f"- ... and {len(notes) - 20} more")
    else:
        out.append("No warning or error in any server's log; every server exited cleanly.")
    return "\n".join(out) + "\n"


async def run(only: tuple[str, ...] = KINDS, rounds: int = ROUNDS, diagnostic: bool = True) -> str:
    """Measure the hub and both baselines (about a minute); return the markdown section."""
    raise_nofile_limit()
    started = time.monotonic()
    facts = machine_facts()
    facts.append(
        f"Packages: python-socketio {package_version('python-socketio')},"
        f" python-engineio {package_version('python-engineio')}"
    )
    results = Results()
    load = Load(SENDERS, WINDOW)
    with tempfile.TemporaryDirectory(prefix="medhub-bench-chat-") as tmp:
        workdir = Path(tmp)
        for _ in range(rounds):
            for kind in only:
                m = await measure_server(kind, workdir, results.notes, load)
                results.rounds.setdefault(kind, []).append(m)
        if diagnostic and "hub" in only:
            results.diagnostic = await measure_server(
                "hub", workdir, results.notes, Load(DIAG_SENDERS, DIAG_WINDOW)
            )
    return render(results, facts, time.monotonic() - started)


def main(argv: list[str] | None = None) -> None:
    import uvloop

    global MESSAGES, SENDERS, WINDOW
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_chat")
    parser.add_argument("--only", action="append", choices=KINDS, help="measure only these")
    parser.add_argument("--messages", type=int, default=MESSAGES, help="measured messages")
    parser.add_argument("--senders", type=int, default=SENDERS, help="sender sockets")
    parser.add_argument("--window", type=int, default=WINDOW, help="in flight per sender")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="measurements per server")
    parser.add_argument("--no-diagnostic", action="store_true", help="skip the hub diagnostic")
    args = parser.parse_args(argv)
    MESSAGES, SENDERS, WINDOW = args.messages, args.senders, args.window
    section = run(tuple(args.only or KINDS), args.rounds, not args.no_diagnostic)
    print(uvloop.run(section), end="")


if __name__ == "__main__":
    main()
