"""Dispatch of validated requests to capability handlers.

A capability registers one handler per request type. The handler receives a
:class:`RequestContext` and the typed message, and returns the ``data`` of the
``result`` (any msgpack/JSON-encodable value) or raises :class:`HandlerError`
with a stable code. Any other exception becomes an ``internal`` error; the
connection survives.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from protocol.errors import ErrorCode
from protocol.messages import Request

if TYPE_CHECKING:
    from server.auth import Principal
    from server.connection import Connection

R = TypeVar("R", bound=Request)


class HandlerError(Exception):
    """A request failed for a reason the client can act on (a catalogued code)."""

    def __init__(
        self, code: ErrorCode, message: str, *, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


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
    """What a handler knows about the request it serves."""

    connection: Connection
    principal: Principal
    request_id: str | int


Handler = Callable[[RequestContext, Any], Awaitable[Any]]


class Router:
    """Maps request types to handlers; one per hub."""

    def __init__(self) -> None:
        self._handlers: dict[type[Request], Handler] = {}

    def add(
        self, message_type: type[R], handler: Callable[[RequestContext, R], Awaitable[Any]]
    ) -> None:
        """Route ``message_type`` to ``handler``; raises ValueError if already routed."""
        if message_type in self._handlers:
            raise ValueError(f"{message_type.__name__} is already routed")
        self._handlers[message_type] = handler

    def handler_for(self, message_type: type[Request]) -> Handler | None:
        """The handler of ``message_type``, or None when no capability serves it."""
        return self._handlers.get(message_type)
