"""The Redis broker's pub/sub side: one dedicated connection, read by a watched listener.

Pub/sub runs on one dedicated RESP2 connection per broker, read by a listener
task that is watched: when the connection is lost (or stays silent past a
health-check PING) the listener logs a warning, counts it in
``listener_failures``, reconnects with capped exponential backoff, resubscribes
every topic and counts the recovery in ``listener_restarts``. Messages
published while it was down are lost (delivery is at-most-once).
``subscribe`` / ``subscribe_many`` send SUBSCRIBE (many channels in one
command) then a PING carrying a unique token and return only when the matching
pong comes back on that connection, so the subscriptions are active. Handlers
run in the listener task, in arrival order; one that raises is logged and
counted in ``handler_errors``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from server.broker.base import BrokerError, MessageHandler, Subscription

log = logging.getLogger(__name__)

#: Channels named in one SUBSCRIBE / UNSUBSCRIBE command, at most.
CHANNELS_PER_COMMAND = 1000


class RedisPubSub:
    """Subscriptions of one :class:`~server.broker.redis.RedisBroker` (see the module doc).

    ``channel_prefix`` is prepended to every topic; ``is_closed`` tells whether
    the owning broker was closed. Timeouts in seconds.
    """

    def __init__(
        self,
        redis: Redis,
        channel_prefix: bytes,
        is_closed: Callable[[], bool],
        *,
        subscribe_timeout_s: float,
        health_check_interval_s: float,
        reconnect_max_backoff_s: float,
    ) -> None:
        self._redis = redis
        self._channel_prefix = channel_prefix
        self._is_closed = is_closed
        self._subscribe_timeout_s = subscribe_timeout_s
        self._health_s = health_check_interval_s
        self._max_backoff_s = reconnect_max_backoff_s
        self.handler_errors = 0
        self.listener_failures = 0
        self.listener_restarts = 0
        self._handlers: dict[str, list[Subscription]] = {}
        self._barriers: dict[bytes, asyncio.Future[None]] = {}
        self._tokens = itertools.count()
        self._conn: AbstractConnection | None = None
        self._send_lock = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    @property
    def connected(self) -> bool:
        """True while the pub/sub connection is up."""
        return self._conn is not None

    def channel(self, topic: str) -> bytes:
        """The Redis channel of ``topic``."""
        return self._channel_prefix + topic.encode("ascii")

    def start(self) -> None:
        """Start the listener task; :attr:`listening` is set once it is connected."""
        self._listener = asyncio.create_task(self._listen(), name="redis-broker-listener")

    async def close(self, timeout_s: float) -> None:
        """Cut the connection, stop the listener, fail pending subscribes."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect(nowait=True)  # wakes the listener even mid-read
        if self._listener is not None:
            self._listener.cancel()
            _, pending = await asyncio.wait({self._listener}, timeout=timeout_s)
            if pending:
                log.error("redis pub/sub listener did not stop; abandoning it")
        self._handlers.clear()
        for fut in self._barriers.values():
            if not fut.done():
                fut.set_exception(BrokerError("broker closed"))
        self._barriers.clear()

    # -- subscriptions ---------------------------------------------------------------
    async def subscribe_many(
        self, topics: Sequence[str], handler: MessageHandler
    ) -> list[Subscription]:
        """Subscribe ``handler`` to every topic; return once Redis confirmed them all.

        Raises :class:`BrokerError` when no confirmation arrives within
        ``subscribe_timeout_s`` (the subscriptions of this call are rolled back).
        """
        subs = [Subscription(topic, handler) for topic in topics]
        fresh: list[bytes] = []
        for sub in subs:
            existing = self._handlers.setdefault(sub.topic, [])
            if not existing:
                fresh.append(self.channel(sub.topic))
            existing.append(sub)
        token = b"sub-%d" % next(self._tokens)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers[token] = fut
        commands: list[tuple[bytes, ...]] = [
            (b"SUBSCRIBE", *fresh[i : i + CHANNELS_PER_COMMAND])
            for i in range(0, len(fresh), CHANNELS_PER_COMMAND)
        ]
        commands.append((b"PING", token))
        try:
            await self._send(commands)
            await asyncio.wait_for(asyncio.shield(fut), self._subscribe_timeout_s)
        except BaseException as exc:
            await self.unsubscribe_many(subs)
            if isinstance(exc, TimeoutError | BrokerError):
                raise BrokerError("redis subscribe not confirmed (listener down?)") from exc
            raise
        finally:
            self._barriers.pop(token, None)
        return subs

    async def unsubscribe_many(self, subscriptions: Sequence[Subscription]) -> None:
        """Stop delivery at once; UNSUBSCRIBE the topics whose last handler went."""
        gone: list[str] = []
        for sub in subscriptions:
            subs = self._handlers.get(sub.topic)
            if subs is None or sub not in subs:
                continue
            subs.remove(sub)
            if not subs:
                del self._handlers[sub.topic]
                gone.append(sub.topic)
        if gone and not self._is_closed():
            await self._send(
                [
                    (b"UNSUBSCRIBE", *[self.channel(t) for t in gone[i : i + CHANNELS_PER_COMMAND]])
                    for i in range(0, len(gone), CHANNELS_PER_COMMAND)
                ],
                unless_topics=gone,
            )

    async def _send(
        self, commands: list[tuple[bytes, ...]], unless_topics: Sequence[str] = ()
    ) -> None:
        """Write commands on the pub/sub connection, if it is up.

        Errors are swallowed: the listener sees the broken connection, reconnects
        and replays every subscription and pending PING token itself. An
        UNSUBSCRIBE (``unless_topics``) is dropped when one of its topics was
        subscribed again meanwhile.
        """
        async with self._send_lock:
            conn = self._conn
            if conn is None or any(t in self._handlers for t in unless_topics):
                return
            try:
                for command in commands:
                    # redis-py reconnects a disconnected connection on send; that
                    # must never happen behind the listener's back.
                    if conn is not self._conn or not conn.is_connected:
                        return
                    await conn.send_command(*command, check_health=False)
            except Exception as exc:  # any failure: the listener reconnects and replays
                log.debug("redis pub/sub send failed: %s", type(exc).__name__)
                if conn is self._conn:
                    self._conn = None
                await conn.disconnect(nowait=True)

    # -- the watched listener -----------------------------------------------------------
    async def _listen(self) -> None:
        backoff = 0.05
        recovering = False
        while not self._is_closed():
            pool = self._redis.connection_pool
            conn = pool.connection_class(**{**pool.connection_kwargs, "protocol": 2})
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                restart_token = await self._replay(conn, recovering)
                recovering = False
                backoff = 0.05
                await self._read(conn, restart_token)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._is_closed():  # close() cut the connection
                    return
                recovering = True
                self.listener_failures += 1
                log.warning(
                    "redis pub/sub listener lost its connection; reconnecting",
                    extra={"error": f"{type(exc).__name__}: {exc}", "retry_in_s": backoff},
                )
            finally:
                if self._conn is conn:
                    self._conn = None
                await conn.disconnect(nowait=True)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self._max_backoff_s)

    async def _replay(self, conn: AbstractConnection, recovering: bool) -> bytes | None:
        """Install ``conn``, resubscribe every topic and re-send pending tokens."""
        async with self._send_lock:
            self._conn = conn
            self.listening.set()
            channels = [self.channel(topic) for topic in self._handlers]
            tokens = list(self._barriers)
            restart_token = b"restart-%d" % next(self._tokens) if recovering else None
            for i in range(0, len(channels), CHANNELS_PER_COMMAND):
                await conn.send_command(b"SUBSCRIBE", *channels[i : i + CHANNELS_PER_COMMAND])
            for token in tokens:
                await conn.send_command(b"PING", token, check_health=False)
            if restart_token is not None:
                await conn.send_command(b"PING", restart_token, check_health=False)
        return restart_token

    async def _read(self, conn: AbstractConnection, restart_token: bytes | None) -> None:
        """Read and dispatch until the connection fails (raises) or is cancelled."""
        awaiting_pong = False
        while True:
            response: Any = await conn.read_response(timeout=self._health_s)
            if response is None:
                if awaiting_pong:
                    raise RedisConnectionError("no reply to the health-check PING")
                awaiting_pong = True
                await self._send([(b"PING", b"health")])
                continue
            awaiting_pong = False
            if isinstance(response, bytes):  # PING reply when no channel is subscribed
                kind, token = b"pong", response
            elif isinstance(response, list) and response:
                kind = response[0]
                token = response[1] if len(response) > 1 else b""
            else:
                continue
            if kind == b"message" and len(response) == 3:
                self._dispatch(response[1], response[2])
            elif kind == b"pong":
                if token == restart_token:
                    self.listener_restarts += 1
                    log.warning(
                        "redis pub/sub listener reconnected",
                        extra={"topics": len(self._handlers), "restarts": self.listener_restarts},
                    )
                fut = self._barriers.pop(token, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)

    def _dispatch(self, channel: bytes, payload: bytes) -> None:
        if not channel.startswith(self._channel_prefix):
            return
        topic = channel[len(self._channel_prefix) :].decode("ascii", "replace")
        subs = self._handlers.get(topic)
        if not subs:
            return
        for sub in tuple(subs):
            if sub not in subs:
                continue  # unsubscribed by an earlier handler of this message
            try:
                sub.handler(topic, payload)
            except Exception:
                self.handler_errors += 1
                log.exception("broker handler failed", extra={"topic": topic})
