"""Run a hub process under uvicorn: checked start-up, a graceful SIGTERM, a forced second one.

uvicorn is configured explicitly: uvloop, httptools in the subclass of
``server/limits.py`` (per-address and per-node connection caps, a request-head
deadline), the ``websockets-sansio`` WebSocket implementation (measured
fastest here, see docs/benchmarks.md) in the subclass of ``server/transport.py``
that adds a synchronous batch write, permessage-deflate off (memory per socket
and compression bombs), protocol pings off (the hub sends its own heartbeats),
and ``ws_max_size`` set to the hard frame limit.

Start-up, in order (:func:`serve`): uvicorn's internals are checked; the data
folder is made private; the descriptor limit is raised or
``ws_max_connections`` lowered to fit it; a default ``allowed_origins`` takes
the served port; the port is bound (an address in use stops here, with one
line and :data:`EXIT_CANNOT_LISTEN`); then the app starts, and the banner is
printed once uvicorn serves the bound socket.

On the first SIGTERM or SIGINT the listening sockets close, every client is
sent ``going_away`` and its queue is flushed within ``shutdown_grace_s``, then
uvicorn stops and the lifespan closes the stores. A second signal forces the
exit: one warning line, then the process ends within :data:`FORCE_GRACE_S`
with :data:`EXIT_FORCED`, losing the audit entries not yet written, chat
messages not yet committed (never acknowledged) and frames not yet sent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
from types import FrameType

import uvicorn

from server.app import build_app
from server.audit.trail import AuditTrail
from server.config import Settings
from server.hub import Hub
from server.limits import ConnectionGuard, DescriptorError, UvicornMismatch, check_uvicorn_internals
from server.logs import configure_logging
from server.startup import (
    bind_listener,
    fit_descriptors,
    make_data_dir_private,
    with_served_origins,
)

log = logging.getLogger(__name__)

#: Exit codes of ``medhub serve`` (2, a configuration error, comes from ``server/cli.py``;
#: 3 is uvicorn's: the application failed to start, e.g. its database is unreachable).
EXIT_CANNOT_LISTEN = 4
EXIT_UNSUPPORTED = 5
EXIT_FORCED = 6
#: Seconds a second signal leaves the normal shutdown before the process exits anyway.
FORCE_GRACE_S = 1.0


class HubServer(uvicorn.Server):
    """uvicorn's server with a drain step, a forced second signal and a bound-socket banner.

    ``banner`` is printed to stdout once the listening socket serves;
    ``audit`` (optional) lets the forced-exit line say how many entries are lost.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        hub: Hub,
        *,
        banner: str | None = None,
        audit: AuditTrail | None = None,
    ) -> None:
        super().__init__(config)
        self.hub = hub
        self.banner = banner
        self.audit = audit
        self.forced = False
        self._draining = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            log.info("listening", extra={"node": self.hub.node_id})
            if self.banner is not None:
                print(self.banner, flush=True)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining:
            self._force(sig)
            return
        self._draining = True
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain()))

    async def _drain(self) -> None:
        log.info("draining: telling clients to go away")
        for server in getattr(self, "servers", []):
            server.close()
        await self.hub.shutdown()
        self.should_exit = True

    def _force(self, sig: int) -> None:
        """The second signal: skip what is left of the shutdown, exit within FORCE_GRACE_S."""
        if self.forced:  # a third signal: now
            os._exit(EXIT_FORCED)
        self.forced = self.force_exit = self.should_exit = True
        stats = self.audit.stats if self.audit is not None else None
        log.warning(
            "second signal: exiting without finishing the shutdown; audit entries not yet "
            "written, chat messages not yet committed and frames not yet sent are lost",
            extra={
                "signal": sig,
                "exit_code": EXIT_FORCED,
                "audit_unwritten": None if stats is None else stats.recorded - stats.written,
            },
        )
        timer = threading.Timer(FORCE_GRACE_S, _exit_now)
        timer.daemon = True
        timer.start()


def _exit_now() -> None:
    """End the process at once (the normal shutdown did not finish in FORCE_GRACE_S)."""
    log.info("stopped", extra={"exit_code": EXIT_FORCED})
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(EXIT_FORCED)


def uvicorn_config(settings: Settings, app: object, host: str, port: int) -> uvicorn.Config:
    """The uvicorn configuration the hub always runs with.

    Builds the :class:`server.limits.ConnectionGuard` of the server; its
    refusals are counted in ``app``'s metrics when ``app`` is the hub's
    (``app.state.components.metrics``).
    """
    components = getattr(getattr(app, "state", None), "components", None)
    metrics = getattr(components, "metrics", None)
    count = None
    if metrics is not None:
        closes = metrics.transport_closes

        def count(reason: str) -> None:
            closes.labels(reason).inc()

    http, ws = ConnectionGuard.from_settings(settings, count).protocol_classes()
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        loop="uvloop",
        http=http,
        ws=ws,
        ws_max_size=settings.ws_hard_max_frame_bytes,
        ws_per_message_deflate=False,
        ws_ping_interval=None,
        ws_ping_timeout=None,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 1,
    )


def _banner(host: str, port: int) -> str:
    where = f"[{host}]" if ":" in host else host
    return (
        f"medhub listening on http://{where}:{port}\n"
        f"  browser app: http://{where}:{port}/   (sign in, chat, calls, EEG, records)\n"
        f"  WebSocket:  ws://{where}:{port}/ws   (protocol/SPEC.md)\n"
        f"  REST API:   http://{where}:{port}/api/v1/openapi.json\n"
        f"  health:     http://{where}:{port}/healthz  /readyz  /metrics\n"
        "  first administrator (in another terminal):\n"
        "    .venv/bin/medhub admin create-superadmin --name 'Your Name' --email you@example.org\n"
        "  or a demo clinic with its logins (embedded default only):\n"
        "    .venv/bin/medhub demo seed"
    )


def _refuse(message: str) -> None:
    print(f"medhub: {message}", file=sys.stderr, flush=True)


def serve(
    settings: Settings, host: str | None = None, port: int | None = None, only: str | None = None
) -> int:
    """Serve until signalled (``only="accounts"``: the accounts sidecar alone).

    Returns the exit code: 0 after a graceful stop; :data:`EXIT_CANNOT_LISTEN`,
    :data:`EXIT_UNSUPPORTED` when it refused to start (one line on stderr says
    why); :data:`EXIT_FORCED` after a second signal. uvicorn exits with 3 when
    the application fails to start.
    """
    configure_logging(settings.log_level, settings.log_json)
    host = settings.host if host is None else host
    port = port or settings.port
    try:
        check_uvicorn_internals()
    except UvicornMismatch as exc:
        _refuse(str(exc))
        return EXIT_UNSUPPORTED
    make_data_dir_private(settings.data_dir)
    try:
        settings = fit_descriptors(settings)
    except DescriptorError as exc:
        _refuse(f"cannot start: {exc}")
        return EXIT_UNSUPPORTED
    try:
        sock = bind_listener(host, port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        _refuse(f"cannot listen on {host}:{port}: {reason.lower()}")
        return EXIT_CANNOT_LISTEN
    port = sock.getsockname()[1]
    settings = with_served_origins(settings, host, port)
    app = build_app(settings, only=only)
    components = app.state.components
    server = HubServer(
        uvicorn_config(settings, app, host, port),
        components.hub,
        banner=_banner(host, port),
        audit=components.audit,
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    code = EXIT_FORCED if server.forced else 0
    log.info("stopped", extra={"exit_code": code})
    return code
