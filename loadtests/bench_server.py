"""A real hub process for benchmarks: ``python -m loadtests.bench_server --port N --data-dir D``.

The hub is built exactly as ``medhub serve`` builds it (``build_app`` and
``uvicorn_config``, served by ``HubServer`` with its SIGTERM drain), with three
differences that only a benchmark needs:

- :class:`BenchAuthenticator` accepts the tokens :func:`bench_token` makes, one
  user per number, so any number of sockets can authenticate without accounts;
- rate limits are generous (a benchmark client sends as fast as it can);
- ``ws_max_connections`` is high enough for the memory run.

Options the newer sections use (loadtests/seed.py prepares the data directory):

- ``--settings PATH``: a JSON object of settings laid over those above (the
  seeded secrets, default rate limits, the broker, connection caps);
- ``--real-auth``: the accounts sidecar's authenticator (real session tokens,
  the production path) instead of :class:`BenchAuthenticator`;
- ``--monitor PATH``: :class:`LoopMonitor` runs in the hub's event loop and
  writes the event-loop lag and garbage-collection pauses it saw to ``PATH``
  when the process exits (read with :func:`read_monitor`).

Diagnostics (off by default, never used by ``make bench``): ``--profile PATH``
writes cProfile stats at exit; ``--tracemalloc PATH`` starts tracemalloc and
(from the moment the hub is built) and writes a snapshot to ``PATH`` each
time the process gets SIGUSR1; compare two snapshots.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import gc
import json
import os
import resource
import signal
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from protocol.errors import ErrorCode
from protocol.messages import Auth
from server.auth import AuthError, HandshakeInfo, Principal

TOKEN_PREFIX = "bench-token-"
#: Tokens are padded with "x" to this length (the protocol wants at least 16 chars).
TOKEN_LENGTH = 24


def bench_token(n: int) -> str:
    """The token :class:`BenchAuthenticator` maps to user ``u<n>``."""
    return f"{TOKEN_PREFIX}{n}".ljust(TOKEN_LENGTH, "x")


class BenchAuthenticator:
    """Benchmark-only: ``bench-token-<n>`` (padded with ``x``) is user ``u<n>`` of org ``bench``."""

    async def authenticate(self, auth: Auth, info: HandshakeInfo) -> Principal:
        """Return the principal for a bench token; raise AuthError for anything else."""
        token = auth.token or ""
        number = token.removeprefix(TOKEN_PREFIX).rstrip("x")
        if auth.method != "token" or not token.startswith(TOKEN_PREFIX) or not number.isdigit():
            raise AuthError(ErrorCode.AUTH_FAILED, "not a bench token")
        return Principal(
            user_id=f"u{number}", org_id="bench", role="practitioner", session_id=f"s{number}"
        )


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def bench_overrides(data_dir: str, log_level: str) -> dict[str, Any]:
    """The settings a benchmark hub runs with (everything else is the default).

    Secrets are fresh random keys per process, so the hub does not generate
    (and warn about) a secrets file in the throw-away data directory.
    """

    def key() -> str:
        return base64.b64encode(os.urandom(32)).decode()

    return {
        "secret_at_rest_key": key(),
        "secret_totp_key": key(),
        "secret_turn": key(),
        "secret_audit_key": key(),
        "data_dir": data_dir,
        "log_level": log_level,
        "log_json": True,
        "ws_rate_per_s": 1_000_000.0,
        "ws_rate_burst": 1_000_000,
        "ws_max_connections": 20_000,
        "max_connections_per_address": 100_000,  # every benchmark client is on 127.0.0.1
        "ws_max_connections_per_user": 1_000,
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", required=True, help="SQLite database, secrets, audit files")
    parser.add_argument("--log-level", default="info", help="hub log level (default: info)")
    parser.add_argument("--profile", metavar="PATH", help="write cProfile stats here at exit")
    parser.add_argument(
        "--tracemalloc", metavar="PATH", help="write a tracemalloc snapshot here on SIGUSR1"
    )
    parser.add_argument("--settings", metavar="PATH", help="JSON settings laid over the bench ones")
    parser.add_argument("--real-auth", action="store_true", help="the accounts authenticator")
    parser.add_argument("--monitor", metavar="PATH", help="write loop lag and GC pauses here")
    return parser.parse_args(argv)


# -- event-loop lag and GC pauses -------------------------------------------------------------
#: The monitor's sleep, in seconds: its overshoot is the loop's lag.
MONITOR_TICK_S = 0.001


class LoopMonitor:
    """Event-loop lag and garbage-collection pauses inside the hub process.

    A task sleeps :data:`MONITOR_TICK_S` in a loop and records, for each
    wake-up, when it woke (``time.monotonic_ns``, comparable with the other
    processes) and how late it woke (the lag: whatever else held the loop,
    plus uvloop's 1 ms timer resolution). ``gc.callbacks`` records every
    collection: when it started, its generation and how long it took. Call
    :meth:`dump` (once, at exit) to write both as JSON lists of integers.
    """

    def __init__(self) -> None:
        self.lag: list[int] = []  # flat: woke_at_us, lag_us, woke_at_us, lag_us, ...
        self.gc: list[int] = []  # flat: started_at_us, generation, pause_us, ...
        self._gc_start = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the sleeper task in the running loop and hook the collector."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-monitor")
        gc.callbacks.append(self._on_gc)

    async def _run(self) -> None:
        tick_ns = int(MONITOR_TICK_S * 1e9)
        append = self.lag.append
        while True:
            due = time.monotonic_ns() + tick_ns
            await asyncio.sleep(MONITOR_TICK_S)
            now = time.monotonic_ns()
            append(now // 1000)
            append(max(0, now - due) // 1000)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.monotonic_ns()
            return
        pause = time.monotonic_ns() - self._gc_start
        self.gc += [self._gc_start // 1000, info.get("generation", -1), pause // 1000]

    def stop(self) -> None:
        """Stop the sleeper and unhook the collector."""
        if self._task is not None:
            self._task.cancel()
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def dump(self, path: str) -> None:
        """Write ``{"lag": [...], "gc": [...]}`` to ``path``."""
        Path(path).write_text(json.dumps({"lag": self.lag, "gc": self.gc}))


@dataclass
class LoopReport:
    """What :class:`LoopMonitor` saw between two instants (microseconds)."""

    samples: int = 0
    lag_p50_us: int = 0
    lag_p99_us: int = 0
    lag_max_us: int = 0
    #: generation -> (collections, longest pause in µs, total pause in µs)
    gc: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return self.samples > 0

    def gc_text(self) -> str:
        """``gen0 12 (max 0.3 ms), gen2 1 (max 40.1 ms)`` style summary."""
        if not self.gc:
            return "none"
        return ", ".join(
            f"gen{g} {n} (max {mx / 1000:.1f} ms)" for g, (n, mx, _) in sorted(self.gc.items())
        )


def read_monitor(path: Path, start_ns: int | None = None, end_ns: int | None = None) -> LoopReport:
    """Summarise a :class:`LoopMonitor` file over ``[start_ns, end_ns]`` (``time.monotonic_ns``).

    Returns an empty report when the file is missing (the hub died first).
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return LoopReport()
    lo = (start_ns or 0) // 1000
    hi = (end_ns // 1000) if end_ns is not None else 2**62
    flat = data.get("lag", [])
    lags = sorted(flat[i + 1] for i in range(0, len(flat) - 1, 2) if lo <= flat[i] <= hi)
    report = LoopReport()
    if lags:
        report.samples = len(lags)
        report.lag_p50_us = lags[len(lags) // 2]
        report.lag_p99_us = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
        report.lag_max_us = lags[-1]
    flat = data.get("gc", [])
    for i in range(0, len(flat) - 2, 3):
        at, gen, pause = flat[i], flat[i + 1], flat[i + 2]
        if lo <= at <= hi:
            n, mx, total = report.gc.get(gen, (0, 0, 0))
            report.gc[gen] = (n + 1, max(mx, pause), total + pause)
    return report


def _monitored(server: Any, monitor: LoopMonitor | None) -> None:
    """Run ``server`` (a uvicorn Server); with ``monitor`` started inside its loop."""
    if monitor is None:
        server.run()
        return
    serve = server.serve

    async def serve_monitored(sockets: Any = None) -> None:
        monitor.start()
        try:
            await serve(sockets)
        finally:
            monitor.stop()

    server.serve = serve_monitored
    server.run()


def main(argv: list[str] | None = None) -> int:
    """Serve a benchmark hub until SIGTERM; returns the exit code."""
    args = _parse(argv)
    raise_nofile_limit()
    # Imported here, not at the top: the plain server and the benchmark client import
    # this module for bench_token() and must not load the hub (its memory is measured).
    from server.app import build_app
    from server.config import load_settings
    from server.logs import configure_logging
    from server.serve import HubServer, uvicorn_config

    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    overrides = bench_overrides(args.data_dir, args.log_level)
    if args.settings:
        overrides.update(json.loads(Path(args.settings).read_text()))
    settings = load_settings(environ={}, overrides=overrides)
    configure_logging(settings.log_level, settings.log_json)
    app = build_app(settings, authenticator=None if args.real_auth else BenchAuthenticator())
    server = HubServer(
        uvicorn_config(settings, app, args.host, args.port), app.state.components.hub
    )
    if args.tracemalloc:
        # Started after the imports (which it would slow down tenfold): compare snapshots.
        tracemalloc.start(8)
        snapshot_path = Path(args.tracemalloc)

        def dump(sig: int, frame: FrameType | None) -> None:
            tracemalloc.take_snapshot().dump(str(snapshot_path))
            print(f"tracemalloc snapshot written to {snapshot_path}", file=sys.stderr, flush=True)

        signal.signal(signal.SIGUSR1, dump)
    if spy := os.environ.get("MEDHUB_BENCH_PYSPY"):  # diagnostics only: sample this process
        subprocess.Popen(
            [str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(os.getpid()),
             "-r", "250", "-d", os.environ.get("MEDHUB_BENCH_PYSPY_S", "20"), "--threads",
             "--format", "raw", "-o", spy],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    profiler = cProfile.Profile() if args.profile else None
    monitor = LoopMonitor() if args.monitor else None
    if profiler is not None:
        profiler.enable()
    try:
        _monitored(server, monitor)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        if monitor is not None and args.monitor:
            monitor.dump(args.monitor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
