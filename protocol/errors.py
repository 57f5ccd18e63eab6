"""Stable error codes, WebSocket close codes, and the protocol's exception.

Clients branch on :class:`ErrorCode` values and close codes, never on message
text. Both catalogues are frozen for v1: codes may be added, never renamed or
reused. ``protocol/SPEC.md`` lists each with its meaning.

Exception hierarchy::

    ProtocolError           a frame or request the peer got wrong
      (carries .code, .message, .request_id, .close)
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    """The ``code`` field of an ``error`` message."""

    BAD_FRAME = "bad_frame"  #: not decodable in the negotiated codec
    BAD_REQUEST = "bad_request"  #: decodable, but a field is missing, extra or invalid
    UNKNOWN_TYPE = "unknown_type"  #: no such message type in v1
    TOO_LARGE = "too_large"  #: frame larger than the limit of its type
    RATE_LIMITED = "rate_limited"  #: inbound rate exceeded; retry after ``retry_after_s``
    HANDSHAKE_REQUIRED = "handshake_required"  #: a request before ``hello`` succeeded
    ALREADY_AUTHENTICATED = "already_authenticated"  #: a second ``hello``
    AUTH_FAILED = "auth_failed"  #: credentials refused (same answer for every cause)
    EXPIRED = "expired"  #: session, ticket or token expired
    FORBIDDEN = "forbidden"  #: authenticated, but not allowed to do this
    NOT_FOUND = "not_found"  #: no such target, or not visible to this user
    CONFLICT = "conflict"  #: the target changed meanwhile
    TOO_MANY_CONNECTIONS = "too_many_connections"  #: per-user or per-node socket limit
    UNAVAILABLE = "unavailable"  #: a store or the broker is unreachable; retry later
    TIMEOUT = "timeout"  #: the server could not answer in time
    INTERNAL = "internal"  #: a server bug; the request may be retried


class CloseCode(IntEnum):
    """WebSocket close codes sent by the hub."""

    NORMAL = 1000
    GOING_AWAY = 1001  #: the client asked to leave, or the node is leaving
    PROTOCOL_ERROR = 1002
    INVALID_DATA = 1007  #: a text frame that is not UTF-8 (closed by the WebSocket layer)
    POLICY = 1008  #: subprotocol or Origin refused after accept
    MESSAGE_TOO_BIG = 1009  #: frame over the hard limit
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  #: node shutting down; reconnect after ``retry_after_s``
    TRY_AGAIN_LATER = 1013  #: node at its connection limit
    HANDSHAKE_TIMEOUT = 4001  #: no valid ``hello`` within the deadline
    AUTH_FAILED = 4003  #: ``hello`` credentials refused
    IDLE_TIMEOUT = 4008  #: no inbound frame within the idle deadline
    SLOW_CONSUMER = 4009  #: reliable send queue full; reconnect and resume
    SESSION_REVOKED = 4010  #: the session was revoked or expired: sign in again
    RIGHTS_CHANGED = 4011  #: the user's rights changed: reconnect now (same session)
    ABUSIVE = 4029  #: too many errors or rate violations in a window
    TOO_MANY_CONNECTIONS = 4030  #: per-user socket limit


class ProtocolError(Exception):
    """A frame or request the peer got wrong.

    ``code`` is the stable error code to reply with; ``request_id`` is the
    client id of the request when it could be read (else None); ``close`` is
    set when the connection must be closed with that code instead of answered.
    ``retry_after_s`` accompanies ``rate_limited``. ``ref`` names a reply-less
    input (a one-way message type, or ``stream:<kind>``) the error is about.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        request_id: str | int | None = None,
        close: CloseCode | None = None,
        retry_after_s: float | None = None,
        ref: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.close = close
        self.retry_after_s = retry_after_s
        self.ref = ref

    def __repr__(self) -> str:
        return f"ProtocolError({self.code.value!r}, {self.message!r}, id={self.request_id!r})"
