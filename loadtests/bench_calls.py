"""Calls section: invite-to-connected time of aiortc peers, and the signalling relay beside PeerJS.

``python -m loadtests.bench_calls [--quick]`` prints the markdown section;
:func:`run` returns it (``loadtests.bench --only calls``).

1. **Invite to connected** (:mod:`loadtests.calls_connect_client`): two aiortc
   peers in one client process, each driven through the Python SDK with its
   own socket, place calls one after the other through a real hub over
   loopback (host candidates on 127.0.0.1, trickled through the hub).
2. **Relay throughput** (:mod:`loadtests.calls_client`): 50 pairs of client
   sockets bounce an offer, an answer and 8 candidates at each other
   (closed loop, 32 in flight per socket) through the hub (``call`` stream
   frames over answered calls) and through the PeerJS server (npm package
   ``peer``, its own JSON protocol), each started fresh per round, alternating.

PeerJS is installed with the machine's npm into ``$MEDHUB_BENCH_CACHE/peerjs``
(outside the repository) the first time, and started with the machine's node.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests import seed
from loadtests.common import (
    Mode,
    expect,
    footer,
    header,
    hub_args,
    median,
    percentile,
    ratio,
    read_line,
    run_json,
    spread,
    start_client,
    stop,
    verdict,
)
from loadtests.servers import BenchError, cpu_seconds, free_port, running
from server.config import Settings

TITLE = "Calls: invite to connected (aiortc), signalling relay beside PeerJS"
PAIRS = 50
WINDOW = 32
DURATION_S = 10.0
QUICK_DURATION_S = 4.0
WARMUP_S = 2.0
ROUNDS = 3
CALLS = 30
QUICK_CALLS = 5
#: Target (issue 13): the hub relays at least this share of PeerJS's messages per second.
TARGET = 0.5
PEERJS_VERSION = "1.0.2"
PEERJS_DIR = seed.CACHE_DIR / "peerjs"
PEERJS_BIN = PEERJS_DIR / "node_modules" / "peer" / "dist" / "bin" / "peerjs.js"
#: The bench lifts the hub's per-socket stream budget: PeerJS has none.
HUB_EXTRA = {"ws_stream_rate_per_s": 1_000_000.0, "ws_stream_rate_burst": 1_000_000}


@dataclass
class Relay:
    kind: str
    result: dict[str, Any]
    server_cpu_s: float
    wall_s: float

    @property
    def rate(self) -> float:
        return float(self.result["per_s"])

    def server_us(self) -> float:
        n = self.result["received"]
        return self.server_cpu_s / n * 1e6 if n else 0.0

    def client_us(self) -> float:
        n = self.result["received"]
        return self.result["cpu_s"] / n * 1e6 if n else 0.0


# -- PeerJS ----------------------------------------------------------------------------------------
async def install_peerjs() -> str:
    """The PeerJS server's script, installed with npm into the cache when missing."""
    if PEERJS_BIN.exists():
        return str(PEERJS_BIN)
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise BenchError("PeerJS needs the machine's node and npm (apt-get install nodejs npm)")
    PEERJS_DIR.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        npm, "install", "--no-audit", "--no-fund", "--prefix", str(PEERJS_DIR),
        f"peer@{PEERJS_VERSION}", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 300)
    if proc.returncode != 0 or not PEERJS_BIN.exists():
        raise BenchError(f"npm install peer failed:\n{out.decode()[-2000:]}")
    return str(PEERJS_BIN)


async def _answers(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 2)
        return status.startswith(b"HTTP/1.1 200")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def peerjs(work: Path, script: str) -> Any:
    """A fresh PeerJS server on a free port: (pid, port)."""
    port = free_port()
    log = (work / f"peerjs-{port}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        "node", script, "--port", str(port), "--path", "/", stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 30
        while not await _answers(port):
            if proc.returncode is not None or time.monotonic() > deadline:
                raise BenchError(f"PeerJS did not start (exit {proc.returncode})")
            await asyncio.sleep(0.05)
        yield proc.pid, port
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        log.close()


# -- measurements ---------------------------------------------------------------------------------
async def relay_run(kind: str, pid: int, port: int, work: Path, duration: float) -> Relay:
    log = work / f"relay-{kind}.log"
    args = [
        "--server", kind, "--port", str(port), "--pairs", str(PAIRS), "--window", str(WINDOW),
        "--duration", str(duration), "--warmup", str(WARMUP_S),
    ]  # fmt: skip
    if kind == "hub":
        args += ["--tokens", str(work / "tokens.json")]
    proc = await start_client("loadtests.calls_client", args, log)
    try:
        await expect(proc, "MEASURING", 120, log)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        await expect(proc, "DONE", duration + 30, log)
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
        result = json.loads(await read_line(proc, 60, log))
    finally:
        await stop(proc)
    if result["closed_sockets"]:
        raise BenchError(f"{kind}: {result['closed_sockets']} sockets closed during the run")
    if result["unexpected"]:
        raise BenchError(f"{kind}: {result['unexpected']} frames were not relayed messages")
    return Relay(kind, result, cpu1 - cpu0, t1 - t0)


def _stats(values: list[float]) -> str:
    v = sorted(values)
    return (
        f"{statistics.median(v):.0f} | {percentile(v, 90):.0f} | {max(v):.0f}"
        if v else "- | - | -"
    )  # fmt: skip


def render(
    calls: list[dict[str, float]], relays: list[Relay], notes: list[str], mode: Mode,
    duration: float, elapsed: float,
) -> str:  # fmt: skip
    method = [
        "invite to connected: `loadtests/calls_connect_client.py`, one process, two aiortc peers"
        " (synthetic 256x192 video and a tone) each through the Python SDK"
        " (`clients/calls.py`) with its own socket, host candidates on 127.0.0.1 only, no"
        " STUN/TURN, candidates trickled through the hub; calls one after the other, after 2"
        " warm-up calls. Times from the invite being sent (after gathering) on the client's"
        " monotonic clock.",
        f"relay: `loadtests/calls_client.py`, one process, {PAIRS} pairs of sockets; each"
        f" socket keeps {WINDOW} messages in flight to its partner, cycling an SDP offer"
        f" ({len(_sdp())} bytes), an SDP answer and 8 candidates (about 170 bytes), and sends"
        " its next message whenever one arrives. Frames are built and masked once.",
        "hub: `bench_server.py --real-auth` with seeded accounts, one direct conversation and"
        " one answered call per pair; messages are `call` stream frames (relayed unchanged)."
        " The per-socket stream budget is lifted for the run (`ws_stream_rate_per_s`;"
        " PeerJS has no such limit); everything else default.",
        f"PeerJS: `peer` {PEERJS_VERSION} from npm (node"
        f" {_node_version()}), `peerjs --port P --path /`, its JSON protocol"
        " (`{type, payload, dst}`; it parses each message, adds `src`, re-serialises).",
        f"{duration:g} s measured after {WARMUP_S:g} s of warm-up; server CPU: user+system time"
        " of the server process over the measured part, per message received.",
    ]
    out = header(TITLE, "calls", elapsed, mode, method)
    out += ["", "### Invite to connected (aiortc peers over loopback)", ""]
    out += [
        "| step | p50 ms | p90 ms | max ms |",
        "|---|---:|---:|---:|",
        f"| gathering (before the invite) | {_stats([c['gather_ms'] for c in calls])} |",
        f"| invite -> ring on the callee | {_stats([c['ring_ms'] for c in calls])} |",
        f"| invite -> answer at the caller | {_stats([c['answer_ms'] for c in calls])} |",
        f"| **invite -> connected** (ICE + DTLS) | {_stats([c['connected_ms'] for c in calls])} |",
        f"| invite -> first video frame | {_stats([c['media_ms'] for c in calls])} |",
        "",
        f"{len(calls)} calls.",
        "",
        "### Signalling relay: 50 pairs, offer + answer + candidates",
        "",
        "| server | round | messages/s | server CPU | server CPU µs/message"
        " | client CPU µs/message |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in ("hub", "peerjs"):
        for i, r in enumerate(x for x in relays if x.kind == kind):
            out.append(
                f"| {kind} | {i + 1} | **{r.rate:,.0f}** | {r.server_cpu_s / r.wall_s:.0%}"
                f" | {r.server_us():.1f} | {r.client_us():.1f} |"
            )
    hub = [r.rate for r in relays if r.kind == "hub"]
    pj = [r.rate for r in relays if r.kind == "peerjs"]
    share = ratio(median(hub), median(pj))
    cpu = ratio(
        median([r.server_us() for r in relays if r.kind == "hub"]),
        median([r.server_us() for r in relays if r.kind == "peerjs"]),
    )
    out += [
        "",
        f"- hub: **{median(hub):,.0f} messages/s** (rounds {spread(hub, '{:,.0f}')}), PeerJS"
        f" {median(pj):,.0f} ({spread(pj, '{:,.0f}')}): **{share:.2f}x** PeerJS (target"
        f" >= {TARGET:.1f}x, parity the aim): {verdict(share >= TARGET)}, with the hub's"
        " per-socket stream budget lifted for the run. With the default"
        f" ({Settings().ws_stream_rate_per_s:,.0f} frames/s per socket) these"
        f" {2 * PAIRS} sockets may send at most"
        f" {2 * PAIRS * Settings().ws_stream_rate_per_s:,.0f} messages/s in all.",
        f"- server CPU per message, hub / PeerJS: {cpu:.2f}x. The client process shares the"
        f" machine's {os.cpu_count()} cores with the server (client CPU per message in the"
        " table).",
    ]
    out += footer(notes)
    return "\n".join(out) + "\n"


def _sdp() -> str:
    from loadtests.calls_client import OFFER_SDP

    return OFFER_SDP


def _node_version() -> str:
    import subprocess

    try:
        return subprocess.run(
            ["node", "--version"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


async def run(quick: bool = False) -> str:
    """Measure (about 2 minutes; ``quick``: 30 s) and return the markdown section."""
    started = time.monotonic()
    mode = Mode.of(quick, ROUNDS)
    duration = QUICK_DURATION_S if quick else DURATION_S
    notes: list[str] = []
    relays: list[Relay] = []
    script = await install_peerjs()
    with tempfile.TemporaryDirectory(prefix="medhub-bench-calls-") as tmp:
        work = Path(tmp)
        prepared = await seed.prepare(work / "db", users=2 * PAIRS)
        seed.write_tokens(work / "tokens.json", prepared.tokens)
        settings = seed.hub_settings_file(
            work / "hub.json", prepared.secrets, prepared.db_path, **HUB_EXTRA
        )
        async with running("hub", work, notes, hub_args(settings, work / "mon.json")) as server:
            result = await run_json(
                "loadtests.calls_connect_client",
                ["--port", str(server.port), "--tokens", str(work / "tokens.json"),
                 "--calls", str(QUICK_CALLS if quick else CALLS)],
                work / "connect-client.log", 300,
            )  # fmt: skip
        calls: list[dict[str, float]] = result["calls"]
        for r in range(mode.rounds):
            monitor = work / f"mon-{r}.json"
            async with running("hub", work, notes, hub_args(settings, monitor)) as server:
                relays.append(await relay_run("hub", server.pid, server.port, work, duration))
            async with peerjs(work, script) as (pid, port):
                relays.append(await relay_run("peerjs", pid, port, work, duration))
    return render(calls, relays, notes, mode, duration, time.monotonic() - started)


def main(argv: list[str] | None = None) -> None:
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_calls", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, one round")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print(uvloop.run(run(parser.parse_args(argv).quick)), end="")


if __name__ == "__main__":
    main()
