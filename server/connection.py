"""The asyncio shell around one socket's :class:`~protocol.session.Session`.

One :class:`Connection` per accepted WebSocket. Its :meth:`Connection.run`
loop reads frames, feeds the session, and dispatches what the session
delivers: requests, one-way messages and binary stream frames go to their
capability handlers through the :class:`~server.router.Router`, one at a time,
in arrival order. What no capability routes is answered ``unknown_type``.

The connection knows nothing of the hub: what it needs (metrics, the router,
the credential check, limits) comes from a :class:`ConnectionHost`, and the
capabilities see it only as a :class:`~server.peer.Peer`.

Sending never waits: :meth:`Connection.send` encodes and puts the frame in the
bounded :class:`~server.sendqueue.SendQueue`, and one flush per loop step
writes everything queued in one synchronous transport write (through the
``medhub.raw`` extension of ``server/transport.py``). Only when the peer stops
reading does a writer task wait on the ASGI send, so an idle socket costs no
task and a busy one no task per frame. When a reliable
frame does not fit, the socket is closed with ``slow_consumer`` (4009) and the
client resumes from its sequence numbers: nothing acknowledged is lost, and
other sockets never wait for this one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable
from typing import Any, Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from protocol.codec import Codec, Frame
from protocol.errors import CloseCode, ErrorCode
from protocol.messages import (
    Error,
    Hello,
    OneWay,
    Request,
    RequestId,
    Result,
    ServerHeartbeat,
    ServerMessage,
)
from protocol.session import SEND_HEARTBEAT, Close, Deliver, DeliverStream, Reject, Session
from server.auth import Principal
from server.logs import context_id
from server.metrics import Metrics
from server.router import (
    Deferred,
    HandlerError,
    RequestContext,
    Router,
    StreamContext,
    failure_code,
)
from server.security.crypto import CryptoError
from server.sendqueue import Delivery, PutResult, SendQueue, WireBatch
from server.transport import RAW_EXTENSION, RawSocket, WireCache

log = logging.getLogger(__name__)


class ConnectionHost(Protocol):
    """What a connection needs from the node that accepted it (the hub)."""

    @property
    def metrics(self) -> Metrics:
        """Counters of frames, errors, drops and closes."""
        ...

    @property
    def router(self) -> Router:
        """Where requests, one-way messages and stream frames are routed."""
        ...

    @property
    def wire_cache(self) -> WireCache:
        """Serialised frames shared by every socket of the node."""
        ...

    @property
    def close_timeout_s(self) -> float:
        """Seconds a closing socket may take to accept its close frame."""
        ...

    @property
    def max_pipelined(self) -> int:
        """Replies one socket may await before it is no longer read."""
        ...

    def authenticate(self, conn: Connection, hello: Hello) -> Awaitable[None]:
        """Check ``hello``'s credentials: welcome the socket or close it."""
        ...

    def incident(self, conn: Connection, what: str) -> None:
        """Stored data failed its integrity check while serving ``what``: log, count, audit."""
        ...


class Connection:
    """One accepted socket: its session, send queue and identity."""

    __slots__ = (
        "_close_after_flush",
        "_closing",
        "_closing_since",
        "_flush_pending",
        "_low_water",
        "_pending",
        "_raw",
        "_reader",
        "_replier",
        "_writer",
        "active",
        "client_address",
        "codec",
        "conn_id",
        "host",
        "principal",
        "queue",
        "session",
        "ws",
    )

    def __init__(
        self,
        host: ConnectionHost,
        ws: WebSocket,
        codec: Codec,
        session: Session,
        queue: SendQueue,
        conn_id: str,
        client_address: str | None,
    ) -> None:
        self.host = host
        self.ws = ws
        self.codec = codec
        self.session = session
        self.queue = queue
        self.conn_id = conn_id
        self.client_address = client_address
        self.principal: Principal | None = None
        #: A request arrived since the session watch last looked (session activity).
        self.active = False
        self._writer: asyncio.Task[None] | None = None
        self._closing: tuple[int, str] | None = None
        self._closing_since = 0.0
        self._close_after_flush = False
        self._flush_pending = False
        self._pending: deque[tuple[RequestId, str, float, ServerMessage | Deferred]] | None = None
        self._replier: asyncio.Task[None] | None = None
        raw = ws.scope.get("extensions", {}).get(RAW_EXTENSION)
        self._raw: RawSocket | None = raw if isinstance(raw, RawSocket) else None
        self._reader: asyncio.Task[Any] | None = None
        self._low_water: asyncio.Event | None = None

    # -- sending -------------------------------------------------------------------
    def send(
        self, message: ServerMessage, delivery: Delivery = Delivery.RELIABLE, key: str | None = None
    ) -> bool:
        """Encode ``message`` with this socket's codec and queue it.

        Returns False when the frame was not queued (socket closing, lossy
        drop, or overflow, which also starts a ``slow_consumer`` close).
        """
        label = type(message).__struct_config__.tag
        return self.send_frame(self.codec.encode(message), str(label), delivery, key)

    def send_frame(
        self,
        frame: Frame,
        label: str,
        delivery: Delivery = Delivery.RELIABLE,
        key: str | None = None,
    ) -> bool:
        """Queue an already encoded ``frame`` (fan-out encodes once per codec).

        ``label`` is the message type for metrics. See :meth:`send`.
        """
        if self._closing is not None:
            return False
        result = self.queue.put(frame, delivery, key)
        metrics = self.host.metrics
        if result is PutResult.OVERFLOW:
            metrics.queue_drops.labels(delivery.value).inc()
            log.warning("slow consumer: closing", extra={"conn": self.conn_id})
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: reconnect and resume")
            return False
        if result is PutResult.DROPPED:
            metrics.queue_drops.labels(delivery.value).inc()
            return False
        if result is PutResult.COALESCED:
            metrics.queue_drops.labels(delivery.value).inc()
        metrics.count_out(label)
        if self._writer is None and not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)
        return True

    def send_batch(self, batch: WireBatch) -> bool:
        """Send frames framed once for every recipient (fan-out); RELIABLE.

        When nothing is queued and the socket can take data, the batch is
        written at once (one transport write, no task, no callback), as
        ``websockets.broadcast`` does; otherwise it is queued behind what is
        there, as one item. Returns False when the socket is closing or the
        batch overflowed the queue (which closes the socket 4009).
        """
        if self._closing is not None:
            return False
        raw = self._raw
        if (
            raw is not None
            and self._writer is None
            and not self._flush_pending
            and not len(self.queue)
            and raw.writable()
        ):
            raw.write_batch(batch)
            self.session.sent(time.monotonic())
            self.host.metrics.count_out(batch.label, batch.count)
            return True
        if self.queue.put_batch(batch) is PutResult.OVERFLOW:
            self.host.metrics.queue_drops.labels(Delivery.RELIABLE.value).inc()
            log.warning("slow consumer: closing", extra={"conn": self.conn_id})
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: reconnect and resume")
            return False
        self.host.metrics.count_out(batch.label, batch.count)
        if self._writer is None and not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)
        return True

    def _flush(self) -> None:
        """Write what is queued: in one synchronous batch when the socket can take it.

        Runs once per loop step at most (scheduled by :meth:`send_frame`), so
        every frame queued in the same step leaves in one transport write.
        When the socket cannot take data now, a writer task waits for it.
        """
        self._flush_pending = False
        if self._writer is not None:
            return  # the writer task owns the socket until it catches up
        queue, raw = self.queue, self._raw
        if len(queue) and raw is not None and raw.writable():
            raw.write(queue.pop_all(), self.host.wire_cache)
            self.session.sent(time.monotonic())
            if self._low_water is not None:
                self._low_water.set()
        if len(queue):
            self._writer = asyncio.get_running_loop().create_task(self._write())
        elif self._close_after_flush and self._closing is not None:
            self._close_after_flush = False
            asyncio.get_running_loop().create_task(self._send_close(*self._closing))

    async def _write(self) -> None:
        """Send through ASGI, which waits until the peer reads, then hand back."""
        ws, queue, session, raw = self.ws, self.queue, self.session, self._raw
        try:
            while (item := queue.pop()) is not None:
                for frame in item.frames if isinstance(item, WireBatch) else (item,):
                    if isinstance(frame, str):
                        await ws.send_text(frame)
                    else:
                        await ws.send_bytes(frame)
                session.sent(time.monotonic())
                if self._low_water is not None and len(queue) * 4 <= queue.max_messages:
                    self._low_water.set()
                if raw is not None and raw.writable():
                    break  # writable again: the synchronous path takes the rest
        except (WebSocketDisconnect, RuntimeError, OSError):
            queue.clear()
            return
        finally:
            self._writer = None
            if self._low_water is not None:
                self._low_water.set()
        self._flush()

    def close(self, code: int, reason: str, *, flush: bool = False) -> None:
        """Close the socket with ``code``; with ``flush``, after the queue is written.

        Without ``flush`` (slow consumer, abuse, the end of a drain), queued
        frames are discarded. Safe to call more than once: the first call wins,
        except that a close without ``flush`` cuts short a flushing one that
        has not finished (a peer that stopped reading cannot block a close).
        The ticker abandons the socket if its close frame cannot be written
        within ``ws_close_timeout_s``.
        """
        if self._closing is not None:
            if flush or not self._close_after_flush:
                return
            self._close_after_flush = False  # escalate: stop waiting for the queue
        else:
            self._closing_since = time.monotonic()
            self.host.metrics.closes.labels(str(code)).inc()
        self._closing = (code, reason)
        if flush:
            self._close_after_flush = True
            if self._writer is None and not self._flush_pending:
                self._flush_pending = True
                asyncio.get_running_loop().call_soon(self._flush)
            return
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None
        self.queue.clear()
        asyncio.get_running_loop().create_task(self._send_close(code, reason))

    async def _send_close(self, code: int, reason: str) -> None:
        if self.ws.application_state is WebSocketState.DISCONNECTED:
            return
        try:
            await asyncio.wait_for(self.ws.close(code, reason), self.host.close_timeout_s)
        except TimeoutError:
            if self._reader is not None:
                self._reader.cancel()  # run() returns; the server drops the socket
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass

    @property
    def closing(self) -> bool:
        """True once a close was requested."""
        return self._closing is not None

    # -- receiving -------------------------------------------------------------------
    async def run(self) -> None:
        """Read frames until the socket closes. The caller accepted the socket."""
        context_id.set(self.conn_id)
        self._reader = asyncio.current_task()
        try:
            await self._read()
        except asyncio.CancelledError:
            if self._closing is None:
                raise
        finally:
            self._reader = None
            if self._closing is None:  # the peer went away: nothing may be queued any more
                self._closing = (CloseCode.GOING_AWAY, "peer gone")

    async def _read(self) -> None:
        ws, session, metrics = self.ws, self.session, self.host.metrics
        binary = self.codec.binary
        while True:
            event = await ws.receive()
            if event["type"] == "websocket.disconnect":
                return
            frame: Frame | None = event.get("bytes") if binary else event.get("text")
            if frame is None:
                # The other frame kind: binary on the JSON subprotocol carries stream
                # frames (protocol/streams.py); text on msgpack is a client error.
                frame = event.get("text") if binary else event.get("bytes")
            if self._closing is not None:
                continue
            if len(self.queue) * 2 >= self.queue.max_messages:
                await self._wait_low_water()
            outcome = session.receive(frame if frame is not None else b"", time.monotonic())
            if isinstance(outcome, Deliver):
                message = outcome.message
                metrics.count_in(str(type(message).__struct_config__.tag))
                if isinstance(message, Hello):
                    await self.host.authenticate(self, message)
                elif isinstance(message, Request):
                    await self._dispatch(message)
                elif isinstance(message, OneWay):
                    await self._oneway(message)
            elif isinstance(outcome, DeliverStream):
                metrics.count_in(outcome.kind.ref)
                await self._stream(outcome)
            elif isinstance(outcome, Reject):
                metrics.count_error(outcome.error.code)
                self.send(outcome.error)
                if outcome.close is not None:
                    log.warning(
                        "closing abusive socket",
                        extra={"conn": self.conn_id, "close": int(outcome.close)},
                    )
                    self.close(outcome.close, outcome.error.code, flush=True)

    async def _wait_low_water(self) -> None:
        """Stop reading while our own replies pile up (the client is not reading).

        Inbound frames then wait in TCP buffers, so a client cannot make the hub
        buffer more than half a queue of replies; events from others still
        follow the slow-consumer policy.
        """
        if self._flush_pending:
            await asyncio.sleep(0)  # let the scheduled flush write the batch
        if self._low_water is None:
            self._low_water = asyncio.Event()
        while self._writer is not None and len(self.queue) * 4 > self.queue.max_messages:
            self._low_water.clear()
            await self._low_water.wait()

    async def _oneway(self, message: OneWay) -> None:
        """Hand a one-way message to its handler; errors carry ``ref`` = its type."""
        self.active = True
        ref = str(type(message).__struct_config__.tag)
        handler = self.host.router.oneway_for(type(message))
        if handler is None or self.principal is None:
            self.send(
                self._error(None, ErrorCode.UNKNOWN_TYPE, "no handler for this type", ref=ref)
            )
            return
        await self._run_stream_handler(handler(StreamContext(self, self.principal), message), ref)

    async def _stream(self, outcome: DeliverStream) -> None:
        """Hand a stream frame to its handler; errors carry ``ref`` = ``stream:<kind>``."""
        ref = outcome.kind.ref
        handler = self.host.router.stream_for(outcome.kind.code)
        if handler is None or self.principal is None:
            self.send(
                self._error(None, ErrorCode.UNKNOWN_TYPE, "no handler for this stream", ref=ref)
            )
            return
        await self._run_stream_handler(
            handler(StreamContext(self, self.principal), outcome.payload), ref
        )

    async def _run_stream_handler(self, call: Awaitable[None], ref: str) -> None:
        try:
            await call
        except Exception as exc:
            self.send(self._failure(exc, None, ref, ref=ref))

    def _failure(
        self, exc: Exception, rid: RequestId | None, label: str, *, ref: str | None = None
    ) -> Error:
        """The ``error`` answering a handler's failure (:func:`server.router.failure_code`)."""
        code, message, retry_after_s = failure_code(exc)
        if code is ErrorCode.UNAVAILABLE and not isinstance(exc, HandlerError):
            log.warning(
                "store or broker unavailable",
                extra={"conn": self.conn_id, "type": label, "error": type(exc).__name__},
            )
        elif isinstance(exc, CryptoError):
            self.host.incident(self, label)
        elif code is ErrorCode.INTERNAL and not isinstance(exc, HandlerError):
            log.error("handler failed", exc_info=exc, extra={"conn": self.conn_id, "type": label})
        return self._error(rid, code, message, retry_after_s, ref=ref)

    async def _dispatch(self, message: Request) -> None:
        self.active = True
        label = str(type(message).__struct_config__.tag)
        started = time.perf_counter()
        handler = self.host.router.handler_for(type(message))
        principal = self.principal
        reply: ServerMessage | Deferred
        if handler is None or principal is None:
            reply = self._error(message.id, ErrorCode.UNKNOWN_TYPE, "no handler for this type")
        else:
            try:
                data: Any = await handler(RequestContext(self, principal, message.id), message)
            except Exception as exc:
                reply = self._failure(exc, message.id, label)
            else:
                reply = data if isinstance(data, Deferred) else Result(id=message.id, data=data)
        if isinstance(reply, Deferred) or self._pending:
            await self._pipeline(message.id, label, started, reply)
            return
        self.send(reply)
        self.host.metrics.observe_request(label, time.perf_counter() - started)

    async def _pipeline(
        self, rid: RequestId, label: str, started: float, reply: ServerMessage | Deferred
    ) -> None:
        """Queue a reply behind the deferred ones; wait while too many are pending."""
        if self._pending is None:
            self._pending = deque()
        self._pending.append((rid, label, started, reply))
        if self._replier is None:
            self._replier = asyncio.get_running_loop().create_task(self._replies())
        limit = self.host.max_pipelined
        while self._pending and len(self._pending) >= limit and self._replier is not None:
            await asyncio.wait({self._replier}, timeout=None, return_when="FIRST_COMPLETED")

    async def _replies(self) -> None:
        """Send the pipelined replies in request order as their work completes."""
        pending = self._pending
        metrics = self.host.metrics
        try:
            while pending:
                rid, label, started, item = pending[0]
                if isinstance(item, Deferred):
                    try:
                        item = Result(id=rid, data=await item.awaitable)
                    except Exception as exc:
                        item = self._failure(exc, rid, label)
                pending.popleft()
                self.send(item)
                metrics.observe_request(label, time.perf_counter() - started)
        finally:
            self._replier = None

    def _error(
        self,
        request_id: RequestId | None,
        code: ErrorCode,
        message: str,
        retry_after_s: float | None = None,
        *,
        ref: str | None = None,
    ) -> Error:
        self.host.metrics.count_error(code.value)
        return Error(
            code=code.value, message=message, id=request_id, retry_after_s=retry_after_s, ref=ref
        )

    def reply_error(
        self,
        request_id: str | int | None,
        code: ErrorCode,
        message: str,
        retry_after_s: float | None = None,
    ) -> None:
        """Send an ``error`` answering ``request_id`` and count it."""
        self.send(self._error(request_id, code, message, retry_after_s))

    def poll(self, now: float) -> None:
        """Called by the hub's ticker: enforce deadlines, send heartbeats."""
        if self._closing is not None:
            reader = self._reader
            overdue = now - self._closing_since >= self.host.close_timeout_s
            if overdue and reader is not None:
                self._reader = None
                reader.cancel()  # run() returns and the server drops the connection
            return
        action = self.session.poll(now)
        if action is None:
            return
        if action is SEND_HEARTBEAT:
            self.send(ServerHeartbeat())
        elif isinstance(action, Close):
            self.close(action.code, action.reason)
