"""Run a hub process under uvicorn, with a graceful SIGTERM.

uvicorn is configured explicitly: uvloop, httptools, the ``websockets-sansio``
WebSocket implementation (measured fastest here, see docs/benchmarks.md) in
the subclass of ``server/transport.py`` that adds a synchronous batch write,
permessage-deflate off (memory per socket and compression bombs), protocol
pings off (the hub sends its own heartbeats), and ``ws_max_size`` set to the
hard frame limit.

On the first SIGTERM or SIGINT the listening sockets close, every client is
sent ``going_away`` and its queue is flushed within ``shutdown_grace_s``, then
uvicorn stops and the lifespan closes the stores. A second signal forces exit.
"""

from __future__ import annotations

import asyncio
import logging
from types import FrameType

import uvicorn

from server.app import build_app
from server.config import Settings
from server.hub import Hub
from server.logs import configure_logging
from server.transport import HubWebSocketProtocol

log = logging.getLogger(__name__)


class HubServer(uvicorn.Server):
    """uvicorn's server with a drain step before it closes sockets."""

    def __init__(self, config: uvicorn.Config, hub: Hub) -> None:
        super().__init__(config)
        self.hub = hub
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining:
            super().handle_exit(sig, frame)
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


def uvicorn_config(settings: Settings, app: object, host: str, port: int) -> uvicorn.Config:
    """The uvicorn configuration the hub always runs with."""
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws=HubWebSocketProtocol,
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


def serve(
    settings: Settings, host: str | None = None, port: int | None = None, only: str | None = None
) -> int:
    """Serve until signalled (``only="accounts"``: the accounts sidecar alone)."""
    configure_logging(settings.log_level, settings.log_json)
    app = build_app(settings, only=only)
    host = host or settings.host
    port = port or settings.port
    server = HubServer(uvicorn_config(settings, app, host, port), app.state.components.hub)
    print(
        f"medhub listening on http://{host}:{port}\n"
        f"  WebSocket:  ws://{host}:{port}/ws   (protocol/SPEC.md)\n"
        f"  REST API:   http://{host}:{port}/api/v1/openapi.json\n"
        f"  health:     http://{host}:{port}/healthz  /readyz  /metrics\n"
        "  first administrator (in another terminal):\n"
        "    .venv/bin/medhub admin create-superadmin --name 'Your Name' --email you@example.org",
        flush=True,
    )
    server.run()
    return 0
