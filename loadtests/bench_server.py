"""A real hub process for benchmarks: ``python -m loadtests.bench_server --port N --data-dir D``.

The hub is built exactly as ``medhub serve`` builds it (``build_app`` and
``uvicorn_config``, served by ``HubServer`` with its SIGTERM drain), with three
differences that only a benchmark needs:

- :class:`BenchAuthenticator` accepts the tokens :func:`bench_token` makes, one
  user per number, so any number of sockets can authenticate without accounts;
- rate limits are generous (a benchmark client sends as fast as it can);
- ``ws_max_connections`` is high enough for the memory run.

Diagnostics (off by default, never used by ``make bench``): ``--profile PATH``
writes cProfile stats at exit; ``--tracemalloc PATH`` starts tracemalloc and
(from the moment the hub is built) and writes a snapshot to ``PATH`` each
time the process gets SIGUSR1; compare two snapshots.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import os
import resource
import signal
import sys
import tracemalloc
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
    return parser.parse_args(argv)


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
    settings = load_settings(environ={}, overrides=bench_overrides(args.data_dir, args.log_level))
    configure_logging(settings.log_level, settings.log_json)
    app = build_app(settings, authenticator=BenchAuthenticator())
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
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    try:
        server.run()
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
