"""The composition root: every component of a hub process is built here, from Settings.

Nothing else constructs long-lived components; modules receive what they need
through their constructors. :func:`build_app` returns the Starlette app whose
lifespan opens the database, the broker and the audit writer, starts the hub,
and closes them in reverse order.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from server.accounts.module import Accounts, build_accounts
from server.asgi import HubASGI
from server.audit.trail import AuditTrail
from server.auth import Authenticator
from server.broker import create_broker
from server.broker.base import Broker
from server.calls.service import Calls
from server.capability import Capabilities, Capability, Node
from server.channels import ChannelService
from server.chat.service import Chat
from server.config import Settings, ensure_secrets
from server.eeg.service import Eeg
from server.facts import AccountsFacts, no_exams
from server.hub import Hub
from server.logs import RequestLog
from server.metrics import CONTENT_TYPE_LATEST, Metrics
from server.presence.service import Presence
from server.records.service import Records, build_records
from server.records.web import rest_part as records_rest_part
from server.router import Router
from server.security.at_rest import settings_keyring
from server.store.db import Database
from server.store.migrate import upgrade_to_head_async
from server.supervise import Supervisor
from server.web import BrowserApp

log = logging.getLogger(__name__)

#: The real-time capabilities of a node, in start order. Adding one is a new
#: package under server/ and one line here.
CAPABILITIES: list[type[Capability]] = [
    Presence,
    Chat,
    Calls,
    Eeg,
]


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
    supervisor: Supervisor
    channels: ChannelService
    capabilities: Capabilities
    records: Records


def tune_gc(thresholds: list[int]) -> None:
    """Garbage collection for a long-running server (figures: docs/benchmarks.md).

    Everything built at start-up (modules, components, caches) is moved to
    the permanent generation (``gc.freeze``), so later full collections do
    not walk it again; ``thresholds`` (gen0 allocations, gen1 and gen2
    collections) make young collections rarer than CPython's default of 700.
    """
    gc.collect()
    gc.freeze()
    if thresholds:
        gc.set_threshold(*thresholds)


def _attr(obj: object, name: str) -> float:
    return float(getattr(obj, name, 0))


def export_component_metrics(
    metrics: Metrics, broker: Broker, audit: AuditTrail, accounts: Accounts
) -> None:
    """Counters the components keep in memory, exported on /metrics."""
    m = metrics.read
    for attr, doc in (
        ("listener_restarts", "Times the Redis pub/sub listener reconnected and resubscribed"),
        ("listener_failures", "Times the Redis pub/sub connection was lost"),
        ("handler_errors", "Broker message handlers that raised"),
    ):
        m(f"medhub_broker_{attr}", doc, "counter", functools.partial(_attr, broker, attr))
    m("medhub_audit_backlog", "Audit entries waiting for the writer (bound: audit_queue_max, "
      "past it /readyz answers 503 and durable callers wait)", "gauge",
      lambda: audit.stats.queued)  # fmt: skip
    m("medhub_audit_written", "Audit entries committed", "counter", lambda: audit.stats.written)
    m("medhub_audit_write_errors", "Failed write transactions (retried)", "counter",
      lambda: audit.stats.write_errors)  # fmt: skip
    cache = accounts.service.cache
    m("medhub_auth_cache_entries", "Authenticated sessions cached", "gauge", lambda: len(cache))
    m("medhub_auth_cache_hits", "Credential checks answered from the cache", "counter",
      lambda: cache.hits)  # fmt: skip
    m("medhub_auth_cache_misses", "Credential checks that queried the database", "counter",
      lambda: cache.misses)  # fmt: skip
    m("medhub_access_changes_applied", "Access changes applied on this node", "counter",
      lambda: accounts.revocations.applied)  # fmt: skip


def build_components(
    settings: Settings,
    *,
    authenticator: Authenticator | None = None,
    capabilities: list[type[Capability]] | None = None,
) -> Components:
    """Build (without starting) every component from ``settings``.

    ``authenticator`` defaults to the accounts sidecar's (sessions, tickets,
    cookies); tests may pass another. ``capabilities`` defaults to
    :data:`CAPABILITIES`. Raises ``CryptoError`` for a malformed key and
    :class:`server.capability.CapabilityError` for a capability that does not
    route what it declares.
    """
    settings = ensure_secrets(settings)
    database = Database(
        settings.effective_database_url,
        pool_size=settings.db_pool_size,
        sqlite_wal_max_bytes=settings.sqlite_wal_max_bytes,
    )
    broker = create_broker(settings)
    audit = AuditTrail.from_settings(settings, database)
    metrics = Metrics()
    supervisor = Supervisor(metrics.registry)
    channels = ChannelService(broker, supervisor, metrics.registry)
    router = Router()
    accounts = build_accounts(settings, database, broker, audit)
    node = Node(
        settings=settings,
        node_id=settings.effective_node_id,
        database=database,
        broker=broker,
        channels=channels,
        facts=AccountsFacts(database),
        audit=audit,
        writer=audit,
        keys=settings_keyring(settings),
        registry=metrics.registry,
        supervisor=supervisor,
    )
    caps = Capabilities(CAPABILITIES if capabilities is None else capabilities, node, router)
    hub = Hub(
        settings,
        authenticator=authenticator or accounts.authenticator,
        router=router,
        metrics=metrics,
        audit=audit,
        channels=channels,
        supervisor=supervisor,
        client_address=accounts.client_address,  # warns once of an untrusted proxy
        session_keeper=None if authenticator else accounts.session_keeper,
    )
    hub.add_listener(caps)
    export_component_metrics(metrics, broker, audit, accounts)
    accounts.revocations.on_rights_changed(caps.rights_changed)
    eeg = next((cap for cap in caps.items if isinstance(cap, Eeg)), None)
    records = build_records(
        settings, database, node.facts, audit, audit, node.keys,
        exams=eeg.exam_people if eeg is not None else no_exams,
    )  # fmt: skip
    return Components(
        settings, database, broker, audit, metrics, router, hub, accounts, supervisor, channels,
        caps, records,
    )  # fmt: skip


def build_app(
    settings: Settings,
    *,
    authenticator: Authenticator | None = None,
    migrate: bool = True,
    on_ready: Callable[[Components], None] | None = None,
    only: str | None = None,
    capabilities: list[type[Capability]] | None = None,
) -> HubASGI:
    """The ASGI app of one hub process.

    With ``migrate`` the lifespan brings the database to the newest schema
    first (the embedded default does; a multi-node deployment runs
    ``medhub migrate`` once instead). ``on_ready`` is called once everything
    is started (tests use it to reach the components). ``only="accounts"``
    serves the accounts sidecar without the WebSocket endpoint.
    """
    c = build_components(settings, authenticator=authenticator, capabilities=capabilities)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if migrate:
            await upgrade_to_head_async(
                c.settings.effective_database_url, at_rest_key=c.settings.secret_at_rest_key
            )
        await c.database.connect()
        await c.broker.start()
        await c.audit.start()
        await c.channels.start()
        await c.hub.start()
        await c.accounts.start(c.hub, c.supervisor)
        await c.capabilities.start()
        tune_gc(c.settings.gc_thresholds)
        sys.setswitchinterval(c.settings.gil_switch_interval_s)
        if on_ready is not None:
            on_ready(c)
        log.info("hub ready", extra={"node": c.hub.node_id})
        try:
            yield
        finally:
            await c.hub.shutdown()
            await c.capabilities.close()
            await c.channels.close()
            await c.accounts.close()
            await c.audit.close()
            await c.supervisor.close()
            await c.broker.close()
            await c.database.close()
            gc.unfreeze()  # back to the young generations (tests run many hubs per process)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        checks = {
            "database": await c.database.ping(),
            "broker": await c.broker.ping(),
            "audit": not c.audit.saturated,
            "accepting": c.hub.accepting,
            **{f"task.{name}": ok for name, ok in c.supervisor.health().items()},
            **c.capabilities.health(),
        }
        return JSONResponse(checks, status_code=200 if all(checks.values()) else 503)

    async def metrics(request: Request) -> Response:
        return Response(c.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # one /api/v1 app, one OpenAPI document: accounts, the capabilities', records
    shell = c.accounts.shell
    api_v1 = c.accounts.app([*c.capabilities.rest(shell), records_rest_part(c.records, shell)])
    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Mount("/api/v1", app=api_v1),
    ]
    if only != "accounts":  # the browser app (docs/web.md) needs /ws
        routes.append(Mount("/", app=BrowserApp()))
    app = Starlette(
        routes=routes, lifespan=lifespan, middleware=[Middleware(RequestLog, routes=routes)]
    )
    app.state.components = c
    return HubASGI(app, "/ws", c.hub.endpoint if only != "accounts" else None)
