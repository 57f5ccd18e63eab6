"""Wiring of the accounts sidecar: every accounts component built from Settings.

:func:`build_accounts` is called by the composition root (``server/app.py``)
with the process's database, broker and audit trail; the returned
:class:`Accounts` provides the Starlette app (mounted under ``/api/v1``), the
WebSocket authenticator, and ``start``/``close`` for the lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from server.accounts.access_log import AccessWatch
from server.accounts.admin import AdminService
from server.accounts.authcache import AuthCache
from server.accounts.authenticator import AccountsAuthenticator, AccountsSessionKeeper
from server.accounts.directory import Directory
from server.accounts.enrolment import Enrolments
from server.accounts.errors import ApiError
from server.accounts.lockout import Lockout
from server.accounts.openapi import build_openapi
from server.accounts.passwords import PasswordHasher, PasswordPolicy
from server.accounts.pii import UserCipher
from server.accounts.profile import Profile
from server.accounts.recovery import Recovery
from server.accounts.relations import RelationStore
from server.accounts.revocation import Revocations, SocketCloser
from server.accounts.routes import Api
from server.accounts.service import AccountService, Auditor
from server.accounts.sessions import SessionStore
from server.accounts.store import AccountStore
from server.accounts.web import RestPart, Shell, build_routes, error_response
from server.audit.source import ProxyWarning, client_address
from server.broker.base import Broker
from server.config import Settings
from server.facts import AccountsFacts
from server.routing import IndexedRouter
from server.security.at_rest import index_key, settings_blind_index, settings_keyring
from server.security.keys import aead_keyring
from server.store.db import Database
from server.supervise import Supervisor


@dataclass
class Accounts:
    """The accounts components of one process."""

    service: AccountService
    admin: AdminService
    enrolments: Enrolments
    recovery: Recovery
    directory: Directory
    authenticator: AccountsAuthenticator
    session_keeper: AccountsSessionKeeper
    revocations: Revocations
    hasher: PasswordHasher
    api: Api
    shell: Shell
    profile: Profile
    client_address: Callable[[HTTPConnection], str | None]
    watch: AccessWatch
    _watch_task: asyncio.Task[None] | None = field(default=None, repr=False)

    def app(self, parts: Sequence[RestPart] = ()) -> Starlette:
        """The ASGI app of the API (mount it at ``/api/v1``): the accounts endpoints and
        every part's (capabilities, records), one Starlette app, one OpenAPI document."""
        endpoints = [
            *self.api.endpoints(),
            *self.profile.endpoints(),
            *self.recovery.endpoints(),
            *self.directory.endpoints(),
        ]
        raw: list[BaseRoute] = []
        doc = build_openapi([*endpoints, *(ep for part in parts for ep in part.endpoints)])
        for part in parts:
            endpoints += part.endpoints
            raw += part.routes
            for path, item in part.operations.items():
                doc["paths"].setdefault(path, {}).update(item)
        document = msgspec.json.encode(doc)

        async def openapi(request: Request) -> Response:
            return Response(document, media_type="application/json")

        async def http_error(request: Request, exc: Exception) -> Response:
            status = exc.status_code if isinstance(exc, HTTPException) else 500
            code = {404: "not_found", 405: "method_not_allowed"}.get(status, "bad_request")
            return error_response(ApiError(code))

        routes = [Route("/openapi.json", openapi), *raw, *build_routes(self.shell, endpoints)]
        app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
        app.router = IndexedRouter(routes)  # same answers, static paths by one lookup
        return app

    async def start(self, hub: SocketCloser | None, supervisor: Supervisor | None = None) -> None:
        """Watch the access change log (closing ``hub``'s sockets) and subscribe to notices.

        The watch loop runs under ``supervisor`` when given (the hub process),
        else in a task of its own (tools and tests).
        """
        await self.revocations.start(hub, self.watch)
        if supervisor is not None:
            supervisor.loop("access-watch", self.watch.run)
        else:
            self._watch_task = asyncio.get_running_loop().create_task(self.watch.run())

    async def close(self) -> None:
        """Stop watching, unsubscribe and stop the hashing threads."""
        task, self._watch_task = self._watch_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.revocations.close()
        self.hasher.close()


def build_accounts(
    settings: Settings,
    database: Database,
    broker: Broker,
    audit: Auditor,
    *,
    clock: Callable[[], float] = time.time,
) -> Accounts:
    """Build the accounts components; ``settings`` must hold the secrets.

    Raises :class:`server.security.crypto.CryptoError` for a malformed key.
    """
    s = settings
    keyring = aead_keyring(s, "totp")  # seals with totp_key_id, opens retired keys too
    csrf_key = hmac.new(index_key(s), b"medhub-csrf", hashlib.sha256).digest()  # kept on rotation
    hasher = PasswordHasher(
        time_cost=s.argon2_time_cost,
        memory_kib=s.argon2_memory_kib,
        parallelism=s.argon2_parallelism,
        threads=s.password_hash_threads,
        queue_max=s.password_hash_queue_max,
    )
    lockout = Lockout(
        broker,
        threshold=s.lockout_threshold,
        account_threshold=s.lockout_account_threshold,
        schedule_s=s.lockout_schedule_s,
        max_per_hour=s.lockout_max_failures_per_hour,
        ip_free_per_hour=s.lockout_ip_max_failures_per_hour,
        ip_max_delay_s=s.lockout_ip_max_delay_s,
        notice_ttl_s=s.lockout_notice_ttl_s,
        clock=clock,
    )
    cipher = UserCipher(settings_keyring(s), settings_blind_index(s))
    store = AccountStore(database, cipher)
    sessions = SessionStore(
        database,
        idle_us=int(s.session_idle_timeout_s * 1e6),
        absolute_us=int(s.session_absolute_timeout_s * 1e6),
    )
    cache: AuthCache[Any] = AuthCache(
        ttl_s=s.auth_cache_ttl_s, max_entries=s.auth_cache_max_entries
    )
    revocations = Revocations(broker, cache)
    watch = AccessWatch(database, revocations.apply, s.access_poll_interval_s)
    service = AccountService(
        store=store,
        sessions=sessions,
        broker=broker,
        hasher=hasher,
        policy=PasswordPolicy(s.password_min_length, s.password_max_length, s.password_min_classes),
        lockout=lockout,
        keyring=keyring,
        audit=audit,
        revocations=revocations,
        cache=cache,
        challenge_ttl_s=s.mfa_challenge_ttl_s,
        reauth_window_s=s.reauth_window_s,
        password_max_age_s=s.password_max_age_days * 86400.0,
        clock=clock,
    )
    admin = AdminService(
        accounts=service,
        store=store,
        relations=RelationStore(database),
        lockout=lockout,
        revocations=revocations,
        invitation_ttl_s=s.invitation_ttl_s,
    )
    proxies = tuple(s.trusted_proxies)
    proxy_warning = ProxyWarning()  # one per process: REST and WebSocket share it

    def source(conn: HTTPConnection) -> str | None:
        """The client address of a request or WebSocket upgrade (trusted proxies only)."""
        peer = conn.client.host if conn.client else None
        forwarded = ",".join(conn.headers.getlist("x-forwarded-for")) or None
        return client_address(peer, forwarded, proxies, proxy_warning)

    shell = Shell(service, csrf_key, frozenset(s.allowed_origins), source)
    enrolments = Enrolments(service)
    api = Api(service, enrolments, admin, csrf_key, s.ws_ticket_ttl_s)
    authenticator = AccountsAuthenticator(service, s.allowed_origins)
    keeper = AccountsSessionKeeper(service)
    profile = Profile(service)
    recovery = Recovery(admin)
    directory = Directory(service, AccountsFacts(database))
    return Accounts(
        service, admin, enrolments, recovery, directory, authenticator, keeper, revocations,
        hasher, api, shell, profile, source, watch,
    )  # fmt: skip


__all__ = ["Accounts", "build_accounts"]
