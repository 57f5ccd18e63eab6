"""The hub: the ``/ws`` endpoint, the registry of live sockets, timers, shutdown.

Upgrade checks happen before the socket is accepted (refused with HTTP 403):
a supported subprotocol must be offered, and an ``Origin`` header, when sent,
must be in the allow-list (browsers always send it; API clients may not, and
then cannot use cookie authentication). After accept, the socket has
``ws_handshake_timeout_s`` to send its ``hello``.

Credential checks are bounded apart from that deadline: at most
``ws_auth_concurrency`` run at once and at most ``ws_auth_queue_max`` wait;
past that the hello is answered ``unavailable`` with ``retry_after_s`` and the
socket is closed 1013, so an overloaded node sheds logins quickly instead of
timing out everyone. A check still unfinished after ``ws_auth_timeout_s``
closes the socket 1013 too (server/session.py ``auth_timeout_s``).

A welcomed socket is attached to its user's inbox channel (the node channel
service) before ``welcome`` is sent, then the capabilities are told
(``connection_opened``); when it closes they are told again and every channel
attachment is dropped.

One ticker task per hub walks the sockets about four times per shortest
deadline (at most once a second) to send heartbeats and enforce the
handshake and idle deadlines, so an idle socket costs no timer of its own.
The same walk closes sockets whose login session ended (absolute or idle
end, :mod:`server.session_watch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from starlette.websockets import WebSocket

from protocol.codec import CODECS
from protocol.errors import CloseCode, ErrorCode
from protocol.messages import Event, GoingAway, Hello, Identity, Limits, Ping, Welcome
from protocol.session import Session, SessionLimits, State
from server.audit.events import Action, AuditEvent, AuditRecorder, Result
from server.auth import Authenticator, AuthError, HandshakeInfo, Principal
from server.broker.base import BrokerError
from server.channels import ChannelService
from server.config import Settings
from server.connection import Connection
from server.metrics import Metrics
from server.peer import Peer
from server.router import HandlerError, RequestContext, Router, failure_code
from server.sendqueue import SendQueue
from server.session_watch import SessionKeeper, SessionWatch, keeper_interval
from server.supervise import Supervisor
from server.transport import WireCache

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
#: Seconds an overloaded node tells a refused login to wait before retrying.
AUTH_RETRY_AFTER_S = 1.0


class ConnectionListener(Protocol):
    """Told when an authenticated socket opens and when it closes (the capabilities).

    Both calls run synchronously on the event loop and must not block; an
    exception is logged by the listener and does not affect the socket.
    """

    def connection_opened(self, peer: Peer) -> None:
        """``peer`` was welcomed (``peer.principal`` is set)."""

    def connection_closed(self, peer: Peer) -> None:
        """``peer`` is gone; forget it."""


class AuthGate:
    """Bounds credential checks: ``concurrency`` at once, ``queue_max`` waiting."""

    def __init__(self, concurrency: int, queue_max: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._queue_max = queue_max
        self.waiting = 0

    def full(self) -> bool:
        """True when a new check would exceed the queue bound (refuse it)."""
        return self._slots.locked() and self.waiting >= self._queue_max

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a slot (the caller checked :meth:`full`)."""
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._slots.release()


class Hub:
    """Accepts sockets, authenticates them, and keeps them until they close."""

    def __init__(
        self,
        settings: Settings,
        *,
        authenticator: Authenticator,
        router: Router,
        metrics: Metrics,
        audit: AuditRecorder,
        channels: ChannelService,
        supervisor: Supervisor,
        client_address: Callable[[WebSocket], str | None],
        session_keeper: SessionKeeper | None = None,
    ) -> None:
        self.settings = settings
        self.authenticator = authenticator
        self._router = router
        self._metrics = metrics
        self.audit = audit
        self.channels = channels
        self.supervisor = supervisor
        self._auth_gate = AuthGate(settings.ws_auth_concurrency, settings.ws_auth_queue_max)
        self.node_id = settings.effective_node_id
        self._client_address = client_address
        self._allowed_origins = frozenset(settings.allowed_origins)
        self.limits = SessionLimits(
            handshake_timeout_s=settings.ws_handshake_timeout_s,
            auth_timeout_s=settings.ws_auth_timeout_s,
            heartbeat_interval_s=settings.ws_heartbeat_interval_s,
            idle_timeout_s=settings.ws_idle_timeout_s,
            max_frame_bytes=settings.ws_max_frame_bytes,
            rate_per_s=settings.ws_rate_per_s,
            rate_burst=settings.ws_rate_burst,
            abuse_max_errors=settings.ws_abuse_max_errors,
            abuse_window_s=settings.ws_abuse_window_s,
            stream_rate_per_s=settings.ws_stream_rate_per_s,
            stream_rate_burst=settings.ws_stream_rate_burst,
        )
        self._announced = Limits(
            max_frame_bytes=settings.ws_max_frame_bytes,
            rate_per_s=settings.ws_rate_per_s,
            rate_burst=settings.ws_rate_burst,
            send_queue_max_messages=settings.ws_send_queue_max_messages,
            stream_rate_per_s=settings.ws_stream_rate_per_s,
            stream_rate_burst=settings.ws_stream_rate_burst,
        )
        self.connections: set[Connection] = set()
        self.by_user: dict[str, set[Connection]] = {}
        self.accepting = True
        self._shut_down = False
        self._ticking = False
        self._all_gone = asyncio.Event()
        self._all_gone.set()
        self._listeners: list[ConnectionListener] = []
        self._wire_cache = WireCache()
        self.session_watch = SessionWatch(
            session_keeper, keeper_interval(settings.session_idle_timeout_s)
        )
        router.add(Ping, self._on_ping)

    # -- what a connection needs (server.connection.ConnectionHost) ---------------------
    @property
    def metrics(self) -> Metrics:
        """The node's metrics."""
        return self._metrics

    @property
    def router(self) -> Router:
        """The node's router."""
        return self._router

    @property
    def wire_cache(self) -> WireCache:
        """Serialised frames shared by every socket."""
        return self._wire_cache

    @property
    def close_timeout_s(self) -> float:
        """``ws_close_timeout_s``."""
        return self.settings.ws_close_timeout_s

    @property
    def max_pipelined(self) -> int:
        """``ws_max_pipelined_requests``."""
        return self.settings.ws_max_pipelined_requests

    def add_listener(self, listener: ConnectionListener) -> None:
        """Tell ``listener`` about every socket that opens or closes from now on."""
        self._listeners.append(listener)

    def _notify(self, conn: Connection, opened: bool) -> None:
        for listener in self._listeners:
            try:
                if opened:
                    listener.connection_opened(conn)
                else:
                    listener.connection_closed(conn)
            except Exception:
                log.exception("connection listener failed", extra={"conn": conn.conn_id})

    @property
    def ticking(self) -> bool:
        """True while the ticker runs (heartbeats, deadlines, session ends)."""
        return self._ticking and self.supervisor.health().get("hub-ticker", False)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Start the ticker. Call once, from the app's lifespan."""
        s = self.settings
        shortest = min(
            s.ws_handshake_timeout_s,
            s.ws_heartbeat_interval_s,
            s.ws_idle_timeout_s,
            self.session_watch.interval_s,
        )
        interval = min(1.0, shortest / 4)
        self._ticking = True
        self.supervisor.loop("hub-ticker", lambda: self._tick(interval))

    async def _tick(self, interval: float) -> None:
        """Supervised: a failure is logged, counted and the ticker restarts."""
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            conns = list(self.connections)
            for conn in conns:
                conn.poll(now)
            self.session_watch.poll(conns, now, time.time())

    async def shutdown(self, grace_s: float | None = None) -> None:
        """Tell every client to go away, flush their queues, then close them.

        New sockets are refused from the first moment. Waits at most
        ``grace_s`` (default ``shutdown_grace_s``) for queues to drain; sockets
        still busy after that are closed without their remaining frames.
        A second call (the lifespan after a SIGTERM drain) returns at once.
        """
        if self._shut_down:
            return
        self._shut_down = True
        self.accepting = False
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        going = GoingAway(retry_after_s=self.settings.shutdown_retry_after_s)
        conns = list(self.connections)
        for conn in conns:
            conn.send(going)
            conn.close(CloseCode.SERVICE_RESTART, "going away", flush=True)
        if conns:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_gone.wait(), grace)
        for conn in list(self.connections):  # still there after the grace: cut off
            conn.close(CloseCode.SERVICE_RESTART, "going away")
        self._ticking = False
        await self.supervisor.stop("hub-ticker")
        await self.session_watch.close()

    # -- the endpoint ----------------------------------------------------------------------
    async def endpoint(self, ws: WebSocket) -> None:
        """ASGI WebSocket endpoint for ``/ws``."""
        offered = ws.scope.get("subprotocols") or []
        name = next((p for p in offered if p in CODECS), None)
        origin = ws.headers.get("origin")
        refusal = None
        if name is None:
            refusal = "subprotocol"
        elif origin is not None and origin not in self._allowed_origins:
            refusal = "origin"
        if refusal is not None or name is None:
            self.metrics.handshake_failures.labels(refusal or "subprotocol").inc()
            await ws.close(CloseCode.POLICY)  # before accept: HTTP 403
            return
        await ws.accept(subprotocol=name)
        busy = None
        if not self.accepting:
            busy = (CloseCode.SERVICE_RESTART, "shutting_down")
        elif len(self.connections) >= self.settings.ws_max_connections:
            busy = (CloseCode.TRY_AGAIN_LATER, "node_full")
        if busy is not None:
            # Accepted only to say why: the client retries later or elsewhere.
            self.metrics.handshake_failures.labels(busy[1]).inc()
            await ws.close(busy[0], busy[1])
            return
        now = time.monotonic()
        codec = CODECS[name]()
        conn = Connection(
            self,
            ws,
            codec,
            Session(codec, self.limits, now),
            SendQueue(
                self.settings.ws_send_queue_max_messages, self.settings.ws_send_queue_max_bytes
            ),
            conn_id=secrets.token_hex(8),
            client_address=self._client_address(ws),
        )
        self.connections.add(conn)
        self._all_gone.clear()
        try:
            await conn.run()
        finally:
            self._forget(conn)

    def _forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self._all_gone.set()
        welcomed = conn.session.state is State.OPEN
        conn.session.closed()
        conn.queue.clear()
        principal = conn.principal
        if principal is None:
            return
        peers = self.by_user.get(principal.user_id)
        if peers is not None:
            peers.discard(conn)
            if not peers:
                del self.by_user[principal.user_id]
        self.channels.close_peer(conn)
        if not welcomed:
            return  # closed before its welcome: nobody was told it opened
        self.metrics.connections.dec()
        self._notify(conn, opened=False)
        self._audit(conn, Action.WS_DISCONNECT, Result.OK)

    async def authenticate(self, conn: Connection, hello: Hello) -> None:
        """Check ``hello``'s credentials; welcome the socket or close it."""
        info = HandshakeInfo(
            origin=conn.ws.headers.get("origin"),
            client_address=conn.client_address,
            cookies=conn.ws.cookies,
        )
        gate = self._auth_gate
        if gate.full():
            self.metrics.handshake_failures.labels("overloaded").inc()
            conn.reply_error(
                hello.id, ErrorCode.UNAVAILABLE, "too many logins at once", AUTH_RETRY_AFTER_S
            )
            conn.close(CloseCode.TRY_AGAIN_LATER, "overloaded", flush=True)
            return
        try:
            async with gate.slot():
                if conn.closing:
                    return  # the auth deadline passed while it waited
                principal = await self.authenticator.authenticate(hello.auth, info)
        except AuthError as exc:
            self.metrics.handshake_failures.labels(exc.code.value).inc()
            log.info("handshake refused", extra={"conn": conn.conn_id, "reason": exc.reason})
            self._audit(conn, Action.WS_CONNECT, Result.DENIED, reason=exc.code.value)
            conn.reply_error(hello.id, exc.code, "authentication failed")
            conn.close(CloseCode.AUTH_FAILED, exc.code.value, flush=True)
            return
        except Exception as exc:  # the store or broker failed: the client may retry
            self.metrics.handshake_failures.labels("unavailable").inc()
            log.warning(
                "credential check failed", extra={"conn": conn.conn_id, "error": type(exc).__name__}
            )
            conn.reply_error(
                hello.id, ErrorCode.UNAVAILABLE, "try again shortly", AUTH_RETRY_AFTER_S
            )
            conn.close(CloseCode.TRY_AGAIN_LATER, "unavailable", flush=True)
            return
        peers = self.by_user.setdefault(principal.user_id, set())
        if len(peers) >= self.settings.ws_max_connections_per_user:
            if not peers:
                del self.by_user[principal.user_id]
            self.metrics.handshake_failures.labels("too_many_connections").inc()
            conn.reply_error(
                hello.id, ErrorCode.TOO_MANY_CONNECTIONS, "too many sockets for this user"
            )
            conn.close(CloseCode.TOO_MANY_CONNECTIONS, "too many connections", flush=True)
            return
        conn.principal = principal
        peers.add(conn)  # counts against the per-user cap from now on
        try:
            await self.channels.open_peer(conn)
        except BrokerError:
            self.metrics.handshake_failures.labels("broker").inc()
            conn.reply_error(
                hello.id, ErrorCode.UNAVAILABLE, "broker unavailable", AUTH_RETRY_AFTER_S
            )
            conn.close(CloseCode.TRY_AGAIN_LATER, "broker unavailable", flush=True)
            return  # the socket's end (_forget) removes it from by_user
        if _closing(conn):  # a property changed by the await (mypy narrowed it)
            return  # closed while its inbox was subscribed: _forget cleans up
        conn.session.open()
        self.metrics.connections.inc()
        s = self.settings
        conn.send(
            Welcome(
                id=hello.id,
                session=conn.conn_id,
                node=self.node_id,
                protocol=PROTOCOL_VERSION,
                heartbeat_s=s.ws_heartbeat_interval_s,
                idle_timeout_s=s.ws_idle_timeout_s,
                limits=self._announced,
                identity=Identity(
                    user=principal.user_id,
                    role=principal.role,
                    org=principal.org_id,
                    acting_for=principal.acting_for,
                ),
            )
        )
        self._audit(conn, Action.WS_CONNECT, Result.OK)
        self._notify(conn, opened=True)
        if hello.resume is not None and hello.resume.channels:
            await self._resume(conn, principal, hello)

    async def _resume(self, conn: Connection, principal: Principal, hello: Hello) -> None:
        """``hello.resume``: each channel is resumed by its capability, in order.

        Each answers with an event on that channel: ``resumed`` (the data of the
        matching sync request, e.g. ``{"last_seq", "caught_up"}``) or
        ``resume_failed`` (``{"code", "message"}``, a catalogued code).
        """
        assert hello.resume is not None
        ctx = RequestContext(conn, principal, hello.id)
        for channel, seq in hello.resume.channels.items():
            if conn.closing:
                return
            handler = self.router.resume_for(channel)
            try:
                if handler is None:
                    raise HandlerError(ErrorCode.UNKNOWN_TYPE, "this channel cannot be resumed")
                data = await handler(ctx, channel, seq)
            except Exception as exc:
                code, message, retry = failure_code(exc)
                if code is ErrorCode.INTERNAL and not isinstance(exc, HandlerError):
                    log.error("resume failed", exc_info=exc, extra={"conn": conn.conn_id})
                failed = {"code": code.value, "message": message}
                if retry is not None:
                    failed["retry_after_s"] = retry  # type: ignore[assignment]
                conn.send(Event(ch=channel, seq=0, kind="resume_failed", data=failed))
            else:
                conn.send(Event(ch=channel, seq=0, kind="resumed", data=data))

    def close_user(self, user_id: str, code: int, reason: str) -> int:
        """Close every socket of ``user_id`` on this node; returns how many."""
        conns = list(self.by_user.get(user_id, ()))
        for conn in conns:
            conn.close(code, reason, flush=True)
        return len(conns)

    def close_session(self, session_id: str, code: int, reason: str) -> int:
        """Close every socket authenticated with ``session_id``; returns how many."""
        hits = [c for c in self.connections if c.principal and c.principal.session_id == session_id]
        for conn in hits:
            conn.close(code, reason, flush=True)
        return len(hits)

    def incident(self, conn: Connection, what: str) -> None:
        """Stored data failed its integrity check: an incident (logged, counted, audited).

        Tampering or a lost key, never a client's fault; no content is logged.
        """
        self.metrics.integrity_failures.inc()
        log.error(
            "stored data failed its integrity check", extra={"conn": conn.conn_id, "type": what}
        )
        self._audit(conn, Action.READ, Result.FAILED, reason="integrity_check_failed")

    async def _on_ping(self, ctx: RequestContext, message: Ping) -> dict[str, float]:
        return {"time": time.time()}

    def _audit(
        self, conn: Connection, action: Action, result: Result, reason: str | None = None
    ) -> None:
        p = conn.principal
        self.audit.record(
            AuditEvent(
                actor=p.user_id if p else None,
                acting_for=p.acting_for if p else None,
                role=p.role if p else None,
                org=p.org_id if p else None,
                action=action,
                target_type="socket",
                target_id=conn.conn_id,
                result=result,
                reason=reason,
                source=conn.client_address,
                request_id=conn.conn_id,
            )
        )


def _closing(conn: Connection) -> bool:
    return conn.closing
