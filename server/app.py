"""The composition root: every component of a hub process is built here, from Settings.

Nothing else constructs long-lived components; modules receive what they need
through their constructors. :func:`build_app` returns the Starlette app whose
lifespan opens the database, the broker and the audit writer, starts the hub,
and closes them in reverse order.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from server.accounts.module import Accounts, build_accounts
from server.asgi import HubASGI
from server.audit.source import client_address
from server.audit.trail import AuditTrail
from server.auth import Authenticator
from server.broker import create_broker
from server.broker.base import Broker
from server.chat.wiring import Realtime, build_realtime
from server.config import Settings, ensure_secrets
from server.hub import Hub
from server.metrics import CONTENT_TYPE_LATEST, Metrics
from server.router import Router
from server.store.db import Database
from server.store.migrate import upgrade_to_head_async

log = logging.getLogger(__name__)


@dataclass
class Components:
    """Everything one process runs, for the lifespan, the CLI and tests."""

    settings: Settings
    database: Database
    broker: Broker
    audit: AuditTrail
    metrics: Metrics
    router: Router
    hub: Hub
    accounts: Accounts
    realtime: Realtime | None = None


def build_components(
    settings: Settings, *, authenticator: Authenticator | None = None
) -> Components:
    """Build (without starting) every component from ``settings``.

    ``authenticator`` defaults to the accounts sidecar's (sessions, tickets,
    cookies); tests may pass another.
    """
    settings = ensure_secrets(settings)
    database = Database(settings.effective_database_url, pool_size=settings.db_pool_size)
    broker = create_broker(settings)
    audit = AuditTrail.from_settings(settings, database)
    metrics = Metrics()
    router = Router()
    accounts = build_accounts(settings, database, broker, audit)
    proxies = tuple(settings.trusted_proxies)

    def peer_address(conn: HTTPConnection) -> str | None:
        peer = conn.client.host if conn.client else None
        forwarded = ",".join(conn.headers.getlist("x-forwarded-for")) or None
        return client_address(peer, forwarded, proxies)

    realtime = build_realtime(settings, database, broker, audit, router)
    hub = Hub(
        settings,
        authenticator=authenticator or accounts.authenticator,
        router=router,
        metrics=metrics,
        audit=audit,
        client_address=peer_address,
        session_keeper=None if authenticator else accounts.session_keeper,
    )
    realtime.attach(hub)
    return Components(settings, database, broker, audit, metrics, router, hub, accounts, realtime)


def build_app(
    settings: Settings,
    *,
    authenticator: Authenticator | None = None,
    migrate: bool = True,
    on_ready: Callable[[Components], None] | None = None,
    only: str | None = None,
) -> HubASGI:
    """The ASGI app of one hub process.

    With ``migrate`` the lifespan brings the database to the newest schema
    first (the embedded default does; a multi-node deployment runs
    ``medhub migrate`` once instead). ``on_ready`` is called once everything
    is started (tests use it to reach the components). ``only="accounts"``
    serves the accounts sidecar without the WebSocket endpoint.
    """
    c = build_components(settings, authenticator=authenticator)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if migrate:
            await upgrade_to_head_async(
                c.settings.effective_database_url, at_rest_key=c.settings.secret_at_rest_key
            )
        await c.database.connect()
        await c.broker.start()
        await c.audit.start()
        await c.hub.start()
        await c.accounts.start(c.hub)
        if c.realtime is not None:
            await c.realtime.start()
        if on_ready is not None:
            on_ready(c)
        log.info("hub ready", extra={"node": c.hub.node_id})
        try:
            yield
        finally:
            await c.hub.shutdown()
            if c.realtime is not None:
                await c.realtime.close()
            await c.accounts.close()
            await c.audit.close()
            await c.broker.close()
            await c.database.close()

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        checks = {
            "database": await c.database.ping(),
            "broker": await c.broker.ping(),
            "audit": not c.audit.saturated,
            "accepting": c.hub.accepting,
        }
        return JSONResponse(checks, status_code=200 if all(checks.values()) else 503)

    async def metrics(request: Request) -> Response:
        return Response(c.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Mount("/api/v1", app=c.accounts.app()),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.components = c
    return HubASGI(app, "/ws", c.hub.endpoint if only != "accounts" else None)
