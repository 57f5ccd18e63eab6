"""Dispatch of validated inbound traffic to capability handlers.

Three kinds of inbound traffic, each registered by a capability:

- **requests** (:meth:`Router.add`): the handler receives a
  :class:`RequestContext` and the typed message and returns the ``data`` of
  the ``result`` (any msgpack/JSON-encodable value), or a :class:`Deferred`,
  or raises :class:`HandlerError` with a stable code. Any other exception
  becomes an ``internal`` error; the connection survives.
- **one-way messages** (:meth:`Router.add_oneway`, types derived from
  ``protocol.messages.OneWay``): the handler gets a :class:`StreamContext` and
  the message and returns nothing. :class:`HandlerError` is sent as an
  ``error`` with no id and ``ref`` = the message type.
- **stream frames** (:meth:`Router.add_stream`, kinds from
  ``protocol.streams``): the handler gets a :class:`StreamContext` and the
  payload (a ``memoryview`` valid only during the call: copy what you keep).
  Errors as for one-way messages, with ``ref`` = ``stream:<kind>``.

Handlers of one socket run one at a time, in arrival order. Traffic no
capability routes is answered ``unknown_type`` (never silence).

Failures a handler does not turn into a :class:`HandlerError` are classified
by :func:`failure_code`, the same way for every capability: a store or broker
failure the client can retry (:data:`RETRYABLE`) is ``unavailable`` with
``retry_after_s``; stored data that fails its integrity check
(``CryptoError``) is ``internal`` and an incident (logged, counted, audited);
anything else is a bug (``internal``, logged with its traceback).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from protocol.errors import ErrorCode
from protocol.messages import CLIENT_TYPES, ClientMessage, Hello, OneWay, Request
from protocol.streams import StreamKind
from server.auth import Principal
from server.broker.base import BrokerError
from server.peer import Peer
from server.security.crypto import CryptoError

R = TypeVar("R", bound=Request)
O = TypeVar("O", bound=OneWay)  # noqa: E741


class HandlerError(Exception):
    """A request failed for a reason the client can act on (a catalogued code)."""

    def __init__(
        self, code: ErrorCode, message: str, *, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


#: Failures of the infrastructure a client may retry: answered ``unavailable``.
RETRYABLE: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError, BrokerError, TimeoutError)
#: Seconds a client is told to wait before retrying after an ``unavailable``.
RETRY_AFTER_S = 1.0


def failure_code(exc: BaseException) -> tuple[ErrorCode, str, float | None]:
    """``(code, message, retry_after_s)`` of a failure a handler did not classify itself."""
    if isinstance(exc, HandlerError):
        return exc.code, exc.message, exc.retry_after_s
    if isinstance(exc, CryptoError):
        return ErrorCode.INTERNAL, "stored data failed its integrity check", None
    if isinstance(exc, RETRYABLE):
        return ErrorCode.UNAVAILABLE, "temporarily unavailable; retry", RETRY_AFTER_S
    return ErrorCode.INTERNAL, "internal error", None


class Deferred:
    """A handler's answer that completes later, without holding up the socket.

    A handler returns ``Deferred(awaitable)`` after it has done, in request
    order, everything whose order matters (for ``chat.send``: authorising and
    queueing the message for the batched writer). The connection then reads
    the socket's next request at once, and sends this reply when the
    awaitable finishes: its value is the ``result`` data, or it raises
    :class:`HandlerError`. Replies still leave in request order. At most
    ``ws_max_pipelined_requests`` replies wait per socket; past that the
    socket is not read until the oldest is answered.
    """

    __slots__ = ("awaitable",)

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self.awaitable = awaitable


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What a request handler knows about the request it serves."""

    peer: Peer
    principal: Principal
    request_id: str | int


@dataclass(frozen=True, slots=True)
class StreamContext:
    """What a one-way or stream handler knows about its sender."""

    peer: Peer
    principal: Principal


Handler = Callable[[RequestContext, Any], Awaitable[Any]]
#: Resumes one channel of ``hello.resume``: (context, channel, last seq seen) -> result data.
ResumeHandler = Callable[[RequestContext, str, int], Awaitable[dict[str, Any]]]
OneWayHandler = Callable[[StreamContext, Any], Awaitable[None]]
StreamHandler = Callable[[StreamContext, memoryview], Awaitable[None]]


class Router:
    """Maps message types and stream kinds to handlers; one per hub."""

    def __init__(self) -> None:
        self._handlers: dict[type[Request], Handler] = {}
        self._oneway: dict[type[OneWay], OneWayHandler] = {}
        self._streams: dict[int, tuple[StreamKind, StreamHandler]] = {}
        self._resume: dict[str, ResumeHandler] = {}

    def add(
        self, message_type: type[R], handler: Callable[[RequestContext, R], Awaitable[Any]]
    ) -> None:
        """Route requests of ``message_type`` to ``handler``; ValueError if already routed."""
        if message_type in self._handlers:
            raise ValueError(f"{message_type.__name__} is already routed")
        self._handlers[message_type] = handler

    def add_oneway(
        self, message_type: type[O], handler: Callable[[StreamContext, O], Awaitable[None]]
    ) -> None:
        """Route one-way messages of ``message_type``; ValueError if already routed."""
        if message_type in self._oneway:
            raise ValueError(f"{message_type.__name__} is already routed")
        self._oneway[message_type] = handler

    def add_stream(self, kind: StreamKind, handler: StreamHandler) -> None:
        """Route stream frames of ``kind``; ValueError if already routed."""
        if kind.code in self._streams:
            raise ValueError(f"stream kind {kind.name} is already routed")
        self._streams[kind.code] = (kind, handler)

    def add_resume(self, prefix: str, handler: ResumeHandler) -> None:
        """Resume channels ``<prefix>:...`` named in ``hello.resume``; ValueError if taken."""
        if prefix in self._resume:
            raise ValueError(f"resume of {prefix} channels is already routed")
        self._resume[prefix] = handler

    def resume_for(self, channel: str) -> ResumeHandler | None:
        """The resume handler of ``channel``'s prefix, or None."""
        return self._resume.get(channel.partition(":")[0])

    def handler_for(self, message_type: type[Request]) -> Handler | None:
        """The handler of ``message_type``, or None when no capability serves it."""
        return self._handlers.get(message_type)

    def oneway_for(self, message_type: type[OneWay]) -> OneWayHandler | None:
        """The handler of one-way ``message_type``, or None."""
        return self._oneway.get(message_type)

    def stream_for(self, code: int) -> StreamHandler | None:
        """The handler of stream kind ``code``, or None."""
        entry = self._streams.get(code)
        return None if entry is None else entry[1]

    def unrouted(self, types: Iterable[type[ClientMessage]] | None = None) -> list[str]:
        """Tags of client message types (default: every registered one) with no handler.

        ``hello`` and ``heartbeat`` are the hub's own and never listed.
        """
        out = []
        for cls in CLIENT_TYPES.values() if types is None else types:
            if cls is Hello or not issubclass(cls, Request | OneWay):
                continue
            routed = cls in self._handlers if issubclass(cls, Request) else cls in self._oneway
            if not routed:
                out.append(str(cls.__struct_config__.tag))
        return sorted(out)
