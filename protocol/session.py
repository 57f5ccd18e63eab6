"""The sans-I/O core of one hub connection: frames in, decisions out.

A :class:`Session` never touches a socket or a clock. The asyncio shell
(``server/connection.py``) feeds it each inbound frame with the current time
and acts on what it returns:

- :meth:`Session.receive` -> :class:`Deliver` (dispatch this message: a
  ``hello``, a request or a one-way message), :class:`DeliverStream` (a binary
  stream frame, protocol/streams.py), :class:`Reject` (send this ``error``;
  close too when ``close`` is set), or :class:`Ignore` (a heartbeat).
- :meth:`Session.poll` -> a :class:`Close` when a deadline passed (handshake,
  credential check, idle), :data:`SEND_HEARTBEAT` when the socket has been
  quiet for a heartbeat interval, else None. Call it about once a second.
- After the shell accepted the ``hello`` credentials it must call
  :meth:`Session.open`; a refused hello is closed by the shell.

Two deadlines guard the handshake: ``handshake_timeout_s`` for the client's
``hello`` to arrive (the client's part), then ``auth_timeout_s`` for the
shell's credential check (the server's part, which may queue behind other
checks on a busy node): a slow server never counts against the client.

Rate limiting: a token bucket per traffic class. Messages (requests, one-way
messages, heartbeats) share the ``rate_per_s`` / ``rate_burst`` bucket, checked
before decoding; binary stream frames have their own ``stream_rate_per_s`` /
``stream_rate_burst`` bucket, so bulk data and requests never starve each
other. Past a budget, the input is answered ``rate_limited`` with a
``retry_after_s``. Every error (including rate limiting) counts toward the
abuse budget: more than ``abuse_max_errors`` within ``abuse_window_s`` seconds
closes the socket with :attr:`CloseCode.ABUSIVE`.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

from protocol.codec import Codec, Frame, frame_size, parse_message, request_id_of
from protocol.errors import CloseCode, ErrorCode, ProtocolError
from protocol.messages import ClientMessage, Error, Heartbeat, Hello, OneWay, RequestId
from protocol.streams import StreamKind, is_stream_frame, parse_stream


@dataclass(frozen=True)
class SessionLimits:
    """Per-connection limits; each in the unit its name says."""

    handshake_timeout_s: float = 5.0
    auth_timeout_s: float = 30.0
    heartbeat_interval_s: float = 25.0
    idle_timeout_s: float = 60.0
    max_frame_bytes: int = 65536
    rate_per_s: float = 50.0
    rate_burst: int = 200
    abuse_max_errors: int = 100
    abuse_window_s: float = 10.0
    stream_rate_per_s: float = 200.0
    stream_rate_burst: int = 400


#: Largest rate-limited frame decoded only to echo its request id (bytes).
PEEK_MAX_BYTES = 4096


class State(enum.Enum):
    AWAITING_HELLO = "awaiting_hello"
    AUTHENTICATING = "authenticating"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Deliver:
    """Dispatch ``message`` (a ``hello`` while awaiting it, else a request)."""

    message: ClientMessage


@dataclass(frozen=True, slots=True)
class DeliverStream:
    """Hand the ``payload`` of a stream frame of ``kind`` to its capability."""

    kind: StreamKind
    payload: memoryview


@dataclass(frozen=True, slots=True)
class Reject:
    """Send ``error``; then close with ``close`` when it is set."""

    error: Error
    close: CloseCode | None = None


@dataclass(frozen=True, slots=True)
class Close:
    """Close the socket with ``code`` and a short ``reason``."""

    code: CloseCode
    reason: str


class _Ignore:
    __slots__ = ()


class _SendHeartbeat:
    __slots__ = ()


def _ceil_ms(seconds: float) -> float:
    """``seconds`` rounded up to the millisecond, at least 1 ms: waiting that long suffices."""
    return max(1, math.ceil(round(seconds * 1000, 6))) / 1000


IGNORE = _Ignore()
SEND_HEARTBEAT = _SendHeartbeat()
Inbound = Deliver | DeliverStream | Reject | _Ignore


class TokenBucket:
    """A token bucket driven by explicit times (seconds)."""

    __slots__ = ("_rate", "_size", "_t", "_tokens")

    def __init__(self, rate_per_s: float, size: int, now: float) -> None:
        self._rate = rate_per_s
        self._size = float(size)
        self._tokens = float(size)
        self._t = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 if granted, else the seconds until one is available."""
        elapsed = now - self._t
        if elapsed > 0:
            self._tokens = min(self._size, self._tokens + elapsed * self._rate)
            self._t = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate


class Session:
    """Protocol state of one connection. Not thread-safe; one per socket."""

    __slots__ = (
        "_abuse",
        "_auth_started",
        "_bucket",
        "_opened_at",
        "_stream_bucket",
        "codec",
        "last_received",
        "last_sent",
        "limits",
        "state",
    )

    def __init__(self, codec: Codec, limits: SessionLimits, now: float) -> None:
        self.codec = codec
        self.limits = limits
        self.state = State.AWAITING_HELLO
        self._opened_at = now
        self.last_received = now
        self.last_sent = now
        self._bucket = TokenBucket(limits.rate_per_s, limits.rate_burst, now)
        self._stream_bucket: TokenBucket | None = None  # created at the first stream frame
        self._auth_started = now
        self._abuse: deque[float] | None = None  # created at the first error

    # -- inbound ---------------------------------------------------------------
    def receive(self, frame: Frame, now: float) -> Inbound:
        """Decide what to do with one inbound frame received at ``now``."""
        self.last_received = now
        if is_stream_frame(frame):
            return self._receive_stream(frame, now)  # type: ignore[arg-type]
        wait = self._bucket.take(now)
        size = frame_size(frame)
        if wait > 0.0:
            return self._reject(
                ProtocolError(
                    ErrorCode.RATE_LIMITED,
                    "slow down",
                    request_id=self._peek_id(frame, size),
                    retry_after_s=wait,
                ),
                now,
            )
        try:
            if size > self.limits.max_frame_bytes:
                raise ProtocolError(ErrorCode.TOO_LARGE, "frame over max_frame_bytes")
            if self.state is not State.OPEN and size > Hello.max_bytes:
                # Before authentication nothing larger than a hello is decoded.
                raise ProtocolError(ErrorCode.TOO_LARGE, "frame over the hello limit")
            message = parse_message(self.codec.decode_raw(frame), size)
        except ProtocolError as exc:
            return self._reject(exc, now)
        if isinstance(message, Heartbeat):
            return IGNORE
        ref = type(message).__struct_config__.tag if isinstance(message, OneWay) else None
        if self.state is State.AWAITING_HELLO:
            if not isinstance(message, Hello):
                return self._reject(
                    ProtocolError(
                        ErrorCode.HANDSHAKE_REQUIRED,
                        "the first message must be hello",
                        request_id=getattr(message, "id", None),
                        ref=str(ref) if ref else None,
                    ),
                    now,
                )
            self.state = State.AUTHENTICATING
            self._auth_started = now
            return Deliver(message)
        if isinstance(message, Hello):
            return self._reject(
                ProtocolError(
                    ErrorCode.ALREADY_AUTHENTICATED, "hello already received", request_id=message.id
                ),
                now,
            )
        if self.state is not State.OPEN:
            return self._reject(
                ProtocolError(
                    ErrorCode.HANDSHAKE_REQUIRED,
                    "wait for welcome",
                    request_id=getattr(message, "id", None),
                    ref=str(ref) if ref else None,
                ),
                now,
            )
        return Deliver(message)

    def _receive_stream(self, frame: bytes | bytearray | memoryview, now: float) -> Inbound:
        """A binary stream frame: its own rate budget, then kind and size checks."""
        bucket = self._stream_bucket
        if bucket is None:
            limits = self.limits
            bucket = TokenBucket(limits.stream_rate_per_s, limits.stream_rate_burst, now)
            self._stream_bucket = bucket
        try:
            kind, payload = parse_stream(frame)
            wait = bucket.take(now)
            if wait > 0.0:
                raise ProtocolError(
                    ErrorCode.RATE_LIMITED, "slow down", retry_after_s=wait, ref=kind.ref
                )
            if self.state is not State.OPEN:
                raise ProtocolError(ErrorCode.HANDSHAKE_REQUIRED, "wait for welcome", ref=kind.ref)
        except ProtocolError as exc:
            return self._reject(exc, now)
        return DeliverStream(kind, payload)

    def _peek_id(self, frame: Frame, size: int) -> RequestId | None:
        # A rate-limited request still gets its id back, so the client can fail it;
        # only small frames are decoded for that, so rate limiting stays cheap.
        if size > min(PEEK_MAX_BYTES, self.limits.max_frame_bytes):
            return None
        try:
            raw = self.codec.decode_raw(frame)
        except ProtocolError:
            return None
        return request_id_of(raw) if isinstance(raw, dict) else None

    def _reject(self, exc: ProtocolError, now: float) -> Reject:
        window_start = now - self.limits.abuse_window_s
        abuse = self._abuse
        if abuse is None:
            abuse = self._abuse = deque()
        while abuse and abuse[0] < window_start:
            abuse.popleft()
        abuse.append(now)
        close = exc.close
        if close is None and len(abuse) > self.limits.abuse_max_errors:
            close = CloseCode.ABUSIVE
        error = Error(
            code=exc.code.value,
            message=exc.message,
            id=exc.request_id,
            retry_after_s=_ceil_ms(exc.retry_after_s) if exc.retry_after_s else None,
            ref=exc.ref,
        )
        return Reject(error, close)

    # -- lifecycle ---------------------------------------------------------------
    def open(self) -> None:
        """The shell accepted the hello credentials: requests may now flow."""
        if self.state is not State.AUTHENTICATING:
            raise RuntimeError(f"open() in state {self.state}")
        self.state = State.OPEN

    def closed(self) -> None:
        """The socket is closed; further frames are not expected."""
        self.state = State.CLOSED

    def sent(self, now: float) -> None:
        """Record that a frame was written at ``now`` (resets the heartbeat timer)."""
        self.last_sent = now

    def poll(self, now: float) -> Close | _SendHeartbeat | None:
        """Check the deadlines at ``now``: what the shell must do, if anything."""
        if self.state is State.AWAITING_HELLO:
            if now - self._opened_at >= self.limits.handshake_timeout_s:
                return Close(CloseCode.HANDSHAKE_TIMEOUT, "handshake timeout")
            return None
        if self.state is State.AUTHENTICATING:
            if now - self._auth_started >= self.limits.auth_timeout_s:
                return Close(CloseCode.TRY_AGAIN_LATER, "authentication timed out")
            return None
        if self.state is State.CLOSED:
            return None
        if now - self.last_received >= self.limits.idle_timeout_s:
            return Close(CloseCode.IDLE_TIMEOUT, "idle timeout")
        if now - self.last_sent >= self.limits.heartbeat_interval_s:
            self.last_sent = now
            return SEND_HEARTBEAT
        return None
