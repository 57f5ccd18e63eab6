"""EEG section: recorder-to-viewer latency and hub CPU, beside a plain websockets fan-out.

``python -m loadtests.bench_eeg [--quick]`` prints the markdown section; :func:`run`
returns it (``loadtests.bench --only eeg``).

Two cases (issue 14), each against two servers in the same run:

- (a) 21 channels x 256 Hz int16 (frames of 1/8 s: 1,364 bytes) to 200 viewers;
- (b) 256 channels x 2048 Hz int32 (frames of 1/8 s: 262,164 bytes) to 20 viewers.

Servers (each a fresh subprocess on a free loopback port):

- hub: the real app (``build_app``, ``uvicorn_config``, ``HubServer``: ``python -m
  loadtests.bench_eeg hub``) with an exam seeded in its SQLite database and a bench
  authenticator (the technician, and viewer ``n`` as interpreter ``u-v<n>`` of the
  exam); samples are checked, stored (sealed, committed every 0.5 s), put in the
  ring and sent as raw ``eeg.view`` frames on the view's LOSSY channel;
- plain: ``python -m loadtests.bench_eeg plain``, a ``websockets`` server on uvloop
  that ``broadcast``\\ s each recorder frame as it is to every viewer: the same bytes,
  no checks, no storage.

Clients (:mod:`loadtests.eeg_client`, their own processes): one recorder sending in real
time for the run, and one process holding every viewer socket. Latency is each frame's
arrival minus its send time (the frame's device field, CLOCK_MONOTONIC, shared by local
processes), after a one-second warm-up; CPU is the server process's user + system time
over the run; delivered bytes/s is what the viewers received over the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.common import (
    Mode,
    expect,
    footer,
    header,
    median,
    percentile,
    ratio,
    spread,
    start_client,
    stop,
    tell,
    verdict,
)
from loadtests.servers import SERVER_COMMANDS, ServerProcess, cpu_seconds, running

TITLE = "EEG: recorder-to-viewer latency, 21 ch to 200 viewers and 256 ch to 20 viewers"
EXAM = "e-00000000000000000be0"
SECONDS, QUICK_SECONDS = 15.0, 5.0
ROUNDS = 2


@dataclass(frozen=True)
class Case:
    name: str
    channels: int
    rate: int
    format: str
    viewers: int
    p99_target_ms: float


CASES = (
    Case("a", 21, 256, "int16", 200, 25.0),
    Case("b", 256, 2048, "int32", 20, 50.0),
)
#: Delivered bytes/s of the hub, at least this share of the plain fan-out's (issue 14).
BYTES_TARGET = 0.70

SERVER_COMMANDS.setdefault("eeg-hub", ("loadtests.bench_eeg", "hub"))
SERVER_COMMANDS.setdefault("eeg-plain", ("loadtests.bench_eeg", "plain"))


@dataclass
class Run:
    case: str
    kind: str
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_pct: float
    bytes_per_s: float
    frames: int
    missed: int
    gap_events: int
    client_cpu_s: float


async def one_run(case: Case, kind: str, seconds: float, work: Path, notes: list[str]) -> Run:
    mode = "hub" if kind == "eeg-hub" else "plain"
    extra = ("--viewers", str(case.viewers)) if mode == "hub" else ()
    async with running(kind, work, notes, extra) as server:
        return await measure(server, case, mode, seconds, work)


async def measure(server: ServerProcess, case: Case, mode: str, seconds: float, work: Path) -> Run:
    common = ["--port", str(server.port), "--mode", mode]
    log = work / f"client-{case.name}-{mode}.log"
    rec = await start_client(
        "loadtests.eeg_client",
        [
            "recorder",
            *common,
            "--exam",
            EXAM,
            "--channels",
            str(case.channels),
            "--rate",
            str(case.rate),
            "--format",
            case.format,
            "--seconds",
            str(seconds),
        ],
        log,
    )
    views = None
    try:
        sid = (await expect(rec, "STREAM", 60, log)).split()[1]
        views = await start_client(
            "loadtests.eeg_client",
            ["viewers", *common, "--stream", sid, "--count", str(case.viewers)],
            log,
        )
        await expect(views, "READY", 120, log)
        cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
        await tell(rec, "GO")
        json.loads(await expect(rec, "{", seconds + 60, log))
        await asyncio.sleep(0.5)  # the last frames reach the viewers
        cpu1, t1 = cpu_seconds(server.pid), time.monotonic()
        await tell(views, "STOP")
        got: dict[str, Any] = json.loads(await expect(views, "{", 60, log))
    finally:
        await stop(rec)
        if views is not None:
            await stop(views)
    lat = got["latencies_us"]
    wall = t1 - t0
    return Run(
        case.name,
        mode,
        percentile(lat, 50) / 1000,
        percentile(lat, 99) / 1000,
        (got["max_us"] or math.nan) / 1000,
        100 * (cpu1 - cpu0) / wall,
        got["bytes"] / wall,
        got["frames"],
        got["missed"],
        got["gap_events"],
        got["cpu_s"],
    )


@dataclass
class Backfill:
    seconds: float
    samples: int
    wanted: int
    megabytes: float
    pages: int


async def late_viewer(work: Path, notes: list[str]) -> Backfill:
    """Ten minutes of 21 channels recorded, then one viewer reads all of it back."""
    async with running("eeg-hub", work, notes, ("--viewers", "1")) as server:
        log = work / "client-backfill.log"
        proc = await start_client(
            "loadtests.eeg_client",
            ["backfill", "--port", str(server.port), "--exam", EXAM, "--seconds", "600"],
            log,
        )
        try:
            got = json.loads(await expect(proc, "{", 120, log))
        finally:
            await stop(proc)
    return Backfill(got["seconds"], got["samples"], got["wanted"], got["bytes"] / 1e6, got["pages"])


def render(
    runs: list[Run],
    fills: list[Backfill],
    notes: list[str],
    mode: Mode,
    seconds: float,
    elapsed: float,
) -> str:
    method = [
        f"each run: the recorder sends {seconds:g} s of frames of 1/8 s in real time; one"
        " client process holds every viewer socket (raw asyncio, frames parsed by header);"
        " hub and plain server alternate, fresh processes, in one run.",
        "latency: arrival - send time of every frame at every viewer (CLOCK_MONOTONIC shared"
        " by the processes), after 1 s of warm-up; p50 / p99 / max.",
        "hub CPU: the server process's user + system time over the run / wall time.",
        "delivered: bytes the viewers received per second (the hub's frames carry a 24-byte"
        " view header, the plain server's the recorder's 20-byte one).",
        "hub: SQLite (samples sealed and committed every 0.5 s), in-memory broker, default"
        " limits; raw view (no decimation).",
    ]
    out = header(TITLE, "eeg", elapsed, mode, method)
    out += [
        "",
        "| case | server | round | p50 ms | p99 ms | max ms | server CPU % | delivered MB/s"
        " | frames | missed | gap events |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rounds: dict[tuple[str, str], int] = {}
    for r in runs:
        k = rounds[(r.case, r.kind)] = rounds.get((r.case, r.kind), 0) + 1
        out.append(
            f"| {r.case} | {r.kind} | {k} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.max_ms:.1f} |"
            f" {r.cpu_pct:.1f} | {r.bytes_per_s / 1e6:.2f} | {r.frames:,} | {r.missed} |"
            f" {r.gap_events} |"
        )
    out.append("")
    for case in CASES:
        hub = [r for r in runs if r.case == case.name and r.kind == "hub"]
        plain = [r for r in runs if r.case == case.name and r.kind == "plain"]
        p99 = median([r.p99_ms for r in hub])
        share = ratio(median([r.bytes_per_s for r in hub]), median([r.bytes_per_s for r in plain]))
        out += [
            f"- ({case.name}) {case.channels} ch x {case.rate} Hz {case.format} to"
            f" {case.viewers} viewers: hub p50 {median([r.p50_ms for r in hub]):.2f} ms, p99"
            f" **{p99:.2f} ms** (spread {spread([r.p99_ms for r in hub], '{:.2f}')}; target <="
            f" {case.p99_target_ms:g} ms): {verdict(p99 <= case.p99_target_ms)}; plain p99"
            f" {median([r.p99_ms for r in plain]):.2f} ms. Hub CPU"
            f" {median([r.cpu_pct for r in hub]):.1f} % (plain"
            f" {median([r.cpu_pct for r in plain]):.1f} %). Delivered bytes/s: hub"
            f" **{share:.0%}** of plain (target >= {BYTES_TARGET:.0%}):"
            f" {verdict(share >= BYTES_TARGET)}.",
        ]
    times = [f.seconds * 1000 for f in fills]
    complete = all(f.samples == f.wanted == 600 * 256 for f in fills)
    out += [
        f"- late viewer: 10 minutes of 21 ch x 256 Hz int16 recorded, then `eeg.watch` and every"
        f" `eeg.backfill` page to the live edge ({fills[0].pages if fills else 0} pages,"
        f" {fills[0].megabytes if fills else 0:.1f} MB, 4 in flight): **{median(times):,.0f} ms**"
        f" (spread {spread(times, '{:,.0f}')}; target within 1 s):"
        f" {verdict(median(times) <= 1000 and complete)}; complete: {complete}.",
    ]
    out += footer(notes)
    return "\n".join(out) + "\n"


async def run(quick: bool = False) -> str:
    """Measure (about 3 minutes; ``quick``: under a minute) and return the markdown section."""
    started = time.monotonic()
    mode = Mode.of(quick, ROUNDS)
    seconds = QUICK_SECONDS if quick else SECONDS
    runs: list[Run] = []
    fills: list[Backfill] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="medhub-bench-eeg-") as tmp:
        for case in CASES:
            for _ in range(mode.rounds):
                for kind in ("eeg-hub", "eeg-plain"):
                    runs.append(await one_run(case, kind, seconds, Path(tmp), notes))
        for _ in range(mode.rounds):
            fills.append(await late_viewer(Path(tmp), notes))
    return render(runs, fills, notes, mode, seconds, time.monotonic() - started)


# -- the servers ---------------------------------------------------------------------------
def serve_hub(port: int, data_dir: str, viewers: int) -> None:
    """The real hub with the bench exam and authenticator (``running`` starts it)."""
    from loadtests.bench_server import bench_overrides, raise_nofile_limit
    from loadtests.eeg_client import TECH_TOKEN
    from protocol.errors import ErrorCode
    from server.app import build_app
    from server.auth import AuthError, Principal
    from server.config import Settings, load_settings
    from server.logs import configure_logging
    from server.serve import HubServer, uvicorn_config

    class EegBenchAuthenticator:
        """The technician's token, and viewer ``n``'s: interpreter ``u-v<n>``."""

        async def authenticate(self, auth: Any, info: Any) -> Principal:
            token = auth.token or ""
            if token == TECH_TOKEN:
                return Principal("u-tech", "bench", "technician", "s-tech")
            number = token.removeprefix("eeg-bench-v").rstrip("x")
            if not token.startswith("eeg-bench-v") or not number.isdigit():
                raise AuthError(ErrorCode.AUTH_FAILED, "not a bench token")
            return Principal(f"u-v{number}", "bench", "interpreter", f"s-v{number}")

    raise_nofile_limit()
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    overrides = bench_overrides(data_dir, "warning")
    # users' limits: the bench client's raised message budget is not needed here (a viewer
    # sends a few requests; samples travel in stream frames, whose budget is the default)
    for name in ("ws_rate_per_s", "ws_rate_burst"):
        overrides[name] = getattr(Settings(), name)
    settings = load_settings(environ={}, overrides=overrides)
    configure_logging(settings.log_level, settings.log_json)
    asyncio.run(_seed(settings, viewers))
    app = build_app(settings, authenticator=EegBenchAuthenticator(), migrate=False)
    HubServer(uvicorn_config(settings, app, "127.0.0.1", port), app.state.components.hub).run()


async def _seed(settings: Any, viewers: int) -> None:
    from server import policy
    from server.eeg import store
    from server.security.at_rest import settings_keyring
    from server.store.db import Database
    from server.store.migrate import upgrade_to_head_async

    url = settings.effective_database_url
    await upgrade_to_head_async(url, at_rest_key=settings.secret_at_rest_key)
    keys = settings_keyring(settings)
    people = policy.Exam(
        EXAM, "bench", "u-pat", "u-doc", "u-tech", frozenset(f"u-v{n}" for n in range(viewers))
    )
    row = store.ExamRow(people, "planned", "", 1, 1, 1)
    async with Database(url) as db:
        await db.run(lambda c: store.create_exam(c, keys, row, None))


def serve_plain(port: int) -> None:
    """``websockets.broadcast`` of each recorder frame to every viewer, as it is."""
    import http

    import msgpack
    import uvloop
    from websockets.asyncio.server import ServerConnection, broadcast, serve
    from websockets.exceptions import ConnectionClosed

    from protocol.codec import SUBPROTOCOL_MSGPACK

    viewers: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        try:
            role = msgpack.unpackb(await ws.recv()).get("role")
            if role == "viewer":
                viewers.add(ws)
                await ws.wait_closed()
            else:
                async for frame in ws:
                    broadcast(viewers, frame)
        except ConnectionClosed:
            pass
        finally:
            viewers.discard(ws)

    def health(connection: Any, request: Any) -> Any:
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        return None

    async def main() -> None:
        async with serve(
            handler,
            "127.0.0.1",
            port,
            subprotocols=[SUBPROTOCOL_MSGPACK],  # type: ignore[list-item]
            compression=None,
            ping_interval=None,
            max_size=2**21,
            max_queue=64,
            write_limit=2**22,
            process_request=health,
        ) as server:
            await server.serve_forever()

    uvloop.run(main())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_eeg", description=__doc__)
    parser.add_argument("role", nargs="?", choices=["bench", "hub", "plain"], default="bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--port", type=int)
    parser.add_argument("--data-dir")
    parser.add_argument("--viewers", type=int, default=200)
    args = parser.parse_args(argv)
    if args.role == "hub":
        serve_hub(args.port, args.data_dir, args.viewers)
    elif args.role == "plain":
        serve_plain(args.port)
    else:
        import uvloop

        print(uvloop.run(run(args.quick)), end="")


if __name__ == "__main__":
    main()
