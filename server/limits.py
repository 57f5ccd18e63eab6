"""Connection limits below the hub: per-address and per-node caps, the request-head deadline.

Every TCP connection costs a file descriptor from its first moment, long before
the hub sees a WebSocket: a peer that connects and says nothing, or sends half
a request head, holds one for as long as it likes unless something closes it.
:class:`ConnectionGuard` is one server's count of open connections, and the
protocol classes it makes (:meth:`ConnectionGuard.protocol_classes`, passed to
uvicorn as ``http=`` and ``ws=``) enforce, from the TCP accept on:

- ``max_connections_per_address`` (256): open connections from one source
  address (HTTP and WebSocket alike). The next one is closed at accept, before
  any byte is read. Addresses in ``trusted_proxies`` are exempt (a reverse
  proxy carries every user; it limits per client itself).
- the node's socket cap (:func:`socket_cap`): ``ws_max_connections`` plus
  :func:`headroom`, never more than the file-descriptor limit leaves after
  :func:`reserved_descriptors`. Past it new connections are closed at accept,
  so the process never runs out of descriptors; below it, a WebSocket past
  ``ws_max_connections`` is still answered (close 1013 by the hub) and
  ``/healthz`` still served.
- ``http_head_timeout_s`` (10 s): a connection whose request head (request line
  and headers) is not complete that long after the connection or the request's
  first byte is closed (``408`` first when part of a head arrived). Between
  requests uvicorn's keep-alive timeout (5 s) applies; a request body and an
  upgraded WebSocket are the application's business (the hub has its own
  handshake and idle deadlines).

Text frames that are not UTF-8 are closed with 1007 as before, but counted
and logged at debug level without a traceback or the payload.

Every refusal or close is counted in ``medhub_transport_closes_total{reason}``
(``per_address``, ``node_full``, ``head_timeout``, ``invalid_utf8``).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.frames import Frame

from server.config import Settings
from server.transport import UVICORN_WS_ATTRIBUTES, HubWebSocketProtocol

log = logging.getLogger(__name__)

#: Descriptors a process uses besides client sockets, before the database pool and broker.
BASE_RESERVED_DESCRIPTORS = 64
#: The smallest ``ws_max_connections`` a node may run with once fitted to its descriptors.
MIN_WS_CONNECTIONS = 32
#: The uvicorn releases whose internals medhub is tested against (pyproject.toml pins it).
TESTED_UVICORN = ">=0.54,<0.55"
#: What :class:`GuardedHttpProtocol` uses of an ``HttpToolsProtocol`` instance.
HTTP_ATTRIBUTES = (
    "client", "transport", "loop", "cycle", "connection_made", "connection_lost",
    "on_message_begin", "on_headers_complete", "handle_websocket_upgrade",
)  # fmt: skip
#: What :class:`GuardedWebSocketProtocol` uses of a ``WebSocketsSansIOProtocol`` instance.
WS_ATTRIBUTES = (
    "frames", "curr_msg_data_type", "close_sent", "conn", "connection_lost", "handle_text",
    "handle_cont", "handle_parser_exception",
)  # fmt: skip

_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 16\r\n"
    b"connection: close\r\n\r\n"
    b"request timeout\n"
)


def headroom(ws_max_connections: int) -> int:
    """Sockets beyond ``ws_max_connections``: HTTP requests and new sockets being refused."""
    return max(64, ws_max_connections // 10)


def reserved_descriptors(settings: Settings) -> int:
    """Descriptors kept for everything but client sockets (connections).

    The listening socket, standard streams, logs, the audit checkpoint file,
    the event loop's own descriptors; the database pool at its overflow limit
    (``db_pool_size`` + 10, SQLite: three files per connection); and the Redis
    pool (64 command connections and the subscriber) when the broker is Redis.
    """
    reserved = BASE_RESERVED_DESCRIPTORS + 3 * (settings.db_pool_size + 10)
    if settings.broker == "redis":
        reserved += 72
    return reserved


def socket_cap(ws_max_connections: int, soft_limit: int, reserved: int) -> int:
    """Client connections one node keeps open at once (HTTP and WebSocket).

    ``ws_max_connections`` + :func:`headroom`, bounded by what the soft
    descriptor limit leaves after ``reserved`` (``resource.RLIM_INFINITY``:
    no bound). At least 1.
    """
    wanted = ws_max_connections + headroom(ws_max_connections)
    if soft_limit == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft_limit - reserved))


class DescriptorError(Exception):
    """The descriptor limit leaves too few sockets for a node; the message says how many."""


@dataclass(frozen=True)
class DescriptorPlan:
    """What :func:`plan_descriptors` decided: the soft limit to set and the caps that fit."""

    soft_limit: int
    ws_max_connections: int
    max_sockets: int

    def raises(self, current_soft: int) -> bool:
        """True when the soft limit must be raised from ``current_soft``."""
        return current_soft != resource.RLIM_INFINITY and self.soft_limit > current_soft


def plan_descriptors(
    soft: int, hard: int, ws_max_connections: int, reserved: int
) -> DescriptorPlan:
    """Fit ``ws_max_connections`` and its :func:`headroom` under RLIMIT_NOFILE ``(soft, hard)``.

    The soft limit is raised as far as needed, up to ``hard``. When even that
    is too small, ``ws_max_connections`` is lowered to the largest value whose
    sockets and headroom fit beside ``reserved`` descriptors (the caller warns).
    Raises :class:`DescriptorError` when that is below :data:`MIN_WS_CONNECTIONS`.
    Pure: the caller reads and sets the limits.
    """
    infinity = resource.RLIM_INFINITY
    needed = reserved + ws_max_connections + headroom(ws_max_connections)
    target = soft
    if soft != infinity and soft < needed:
        target = needed if hard == infinity else min(hard, needed)
    if target == infinity or target >= needed:
        cap = socket_cap(ws_max_connections, target, reserved)
        return DescriptorPlan(target, ws_max_connections, cap)
    available = target - reserved
    fitted = available - headroom(available)  # then fitted + headroom(fitted) <= available
    if fitted < MIN_WS_CONNECTIONS:
        raise DescriptorError(
            f"the file-descriptor limit ({target}, hard {hard}) leaves room for "
            f"{max(fitted, 0)} WebSocket connections (at least {MIN_WS_CONNECTIONS} needed, "
            f"{reserved} descriptors reserved): raise it (ulimit -n, systemd LimitNOFILE=)"
        )
    return DescriptorPlan(target, fitted, fitted + headroom(fitted))


class ConnectionGuard:
    """The open connections of one uvicorn server, by source address and in total.

    Build one per server (:meth:`from_settings`) and give uvicorn the classes of
    :meth:`protocol_classes`. Only the event loop's thread may use it.
    """

    def __init__(
        self,
        *,
        max_per_address: int,
        max_sockets: int,
        head_timeout_s: float,
        exempt: Collection[str] = (),
        count: Callable[[str], None] | None = None,
    ) -> None:
        self.max_per_address = max_per_address
        self.max_sockets = max_sockets
        self.head_timeout_s = head_timeout_s
        self.exempt = frozenset(exempt)
        self.total = 0
        self.by_address: dict[str, int] = {}
        self._count = count

    @classmethod
    def from_settings(
        cls, settings: Settings, count: Callable[[str], None] | None = None
    ) -> ConnectionGuard:
        """The guard for ``settings``; the socket cap from the current soft descriptor limit."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return cls(
            max_per_address=settings.max_connections_per_address,
            max_sockets=socket_cap(
                settings.ws_max_connections, soft, reserved_descriptors(settings)
            ),
            head_timeout_s=settings.http_head_timeout_s,
            exempt=settings.trusted_proxies,
            count=count,
        )

    def admit(self, address: str | None) -> str | None:
        """Count a new connection from ``address``; or the reason it must be closed.

        Returns None when admitted (the caller must :meth:`release` it exactly
        once when it closes), else ``"node_full"`` or ``"per_address"``.
        """
        if self.total >= self.max_sockets:
            return "node_full"
        if address is not None and address not in self.exempt:
            held = self.by_address.get(address, 0)
            if held >= self.max_per_address:
                return "per_address"
            self.by_address[address] = held + 1
        self.total += 1
        return None

    def release(self, address: str | None) -> None:
        """Forget one admitted connection from ``address``."""
        self.total -= 1
        if address is not None and address not in self.exempt:
            held = self.by_address[address] - 1
            if held:
                self.by_address[address] = held
            else:
                del self.by_address[address]

    def counted(self, reason: str) -> None:
        """One connection refused or closed for ``reason`` (the metric)."""
        if self._count is not None:
            self._count(reason)

    def protocol_classes(
        self,
    ) -> tuple[type[GuardedHttpProtocol], type[GuardedWebSocketProtocol]]:
        """uvicorn's ``http=`` and ``ws=`` classes, bound to this guard."""
        guard = self

        class Http(GuardedHttpProtocol):
            pass

        class WebSocket(GuardedWebSocketProtocol):
            pass

        Http.guard = WebSocket.guard = guard
        return Http, WebSocket


class GuardedWebSocketProtocol(HubWebSocketProtocol):
    """The hub's WebSocket protocol, releasing its connection's count when it closes.

    Takes over the count of the HTTP connection it was upgraded from
    (:meth:`adopt`); counts and quietly closes (1007) text frames that are not UTF-8.
    """

    guard: ClassVar[ConnectionGuard]
    #: ``(address,)`` while this connection holds an admitted count (one slot per socket).
    _guard_held: tuple[str | None] | None = None

    def adopt(self, address: str | None) -> None:
        """Hold the admitted count of ``address`` (the connection's) from now on."""
        self._guard_held = (address,)

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            held, self._guard_held = self._guard_held, None
            if held is not None:
                self.guard.release(held[0])

    def handle_text(self, event: Frame) -> None:
        if event.fin and not self._utf8(event.data):
            return
        super().handle_text(event)

    def handle_cont(self, event: Frame) -> None:
        text = event.fin and self.curr_msg_data_type == "text"
        if text and not self._utf8(b"".join([*self.frames, event.data])):
            return
        super().handle_cont(event)

    def _utf8(self, data: bytes | bytearray | memoryview) -> bool:
        """False (and the socket closing with 1007) when ``data`` is not UTF-8.

        uvicorn would log a traceback at error level for it: a client's bad
        input is counted and logged at debug level instead, without the payload.
        """
        if self.close_sent:  # uvicorn discards what arrives after our close
            return True
        try:
            str(data, "utf-8")
        except UnicodeDecodeError:
            self.frames = []
            self.guard.counted("invalid_utf8")
            log.debug("text frame is not UTF-8: closed 1007")
            self.conn.send_close(1007)
            self.handle_parser_exception()
            return False
        return True


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the guard's caps and a request-head deadline."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard_held: tuple[str | None] | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else None
        refusal = self.guard.admit(address)
        if refusal is not None:
            self.guard.counted(refusal)
            transport.close()
            return
        self._guard_held = (address,)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        try:
            super().connection_lost(exc)
        finally:
            held, self._guard_held = self._guard_held, None
            if held is not None:
                self.guard.release(held[0])

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        if self._head_timer is None:  # a later request on a kept-alive connection
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        self._head_started = False
        super().on_headers_complete()

    def handle_websocket_upgrade(self) -> None:
        self._cancel_head_timer()
        super().handle_websocket_upgrade()
        upgraded = self.transport.get_protocol()
        held = self._guard_held
        if held is not None and isinstance(upgraded, GuardedWebSocketProtocol):
            self._guard_held = None
            upgraded.adopt(held[0])

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.guard.head_timeout_s, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport.is_closing():
            return
        self.guard.counted("head_timeout")
        idle = self.cycle is None or self.cycle.response_complete
        if self._head_started and idle:
            transport.write(_REQUEST_TIMEOUT)
        transport.close()


class UvicornMismatch(RuntimeError):
    """The installed uvicorn lacks an internal that medhub relies on (the message names it)."""


async def _no_app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
    """An ASGI app for :func:`check_uvicorn_internals`'s throw-away protocols; never called."""


def check_uvicorn_internals(
    ws_class: type[asyncio.Protocol] = WebSocketsSansIOProtocol,
    http_class: type[asyncio.Protocol] = HttpToolsProtocol,
) -> None:
    """Check that uvicorn's protocol classes still have what the hub's subclasses use.

    Builds one instance of each (no socket, no running loop) and looks for
    every name of :data:`server.transport.UVICORN_WS_ATTRIBUTES`,
    :data:`WS_ATTRIBUTES` and :data:`HTTP_ATTRIBUTES`. Raises
    :class:`UvicornMismatch` naming what is missing; call it before serving.
    """
    config = uvicorn.Config(_no_app, http=http_class, ws=ws_class, lifespan="off", log_config=None)
    config.load()
    wanted: list[tuple[type[asyncio.Protocol], tuple[str, ...]]] = [
        (ws_class, tuple(dict.fromkeys(UVICORN_WS_ATTRIBUTES + WS_ATTRIBUTES))),
        (http_class, HTTP_ATTRIBUTES),
    ]
    missing: list[str] = []
    loop = asyncio.new_event_loop()
    try:
        for cls, names in wanted:
            try:
                protocol = cls(  # type: ignore[call-arg]
                    config=config, server_state=ServerState(), app_state={}, _loop=loop
                )
            except Exception as exc:
                missing.append(f"{cls.__name__}(config, server_state, app_state, _loop): {exc!r}")
                continue
            missing += [f"{cls.__name__}.{name}" for name in names if not hasattr(protocol, name)]
    finally:
        loop.close()
    if missing:
        raise UvicornMismatch(
            f"uvicorn {uvicorn.__version__} lacks what medhub relies on ({', '.join(missing)}); "
            f"install a tested release (uvicorn{TESTED_UVICORN}, see constraints.txt)"
        )
