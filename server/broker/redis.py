"""The Redis broker: several hub processes share pub/sub, presence and counters.

Keys (``prefix`` lets several deployments share one Redis; single Redis or
Sentinel, not Cluster): topic ``T`` is channel ``{prefix}t:T``; presence key
``K`` is a sorted set ``{prefix}p:K`` (member -> expiry in ms) plus a hash
``{prefix}pv:K`` (member -> value); value or counter ``K`` is ``{prefix}v:K``.

Presence expiry uses **Redis server time** (``TIME`` inside Lua scripts), never
the nodes' clocks, so clock skew between nodes cannot shorten or stretch a TTL.
Writers and readers prune expired members atomically, and both keys carry a
PEXPIRE of the latest member's deadline, so an abandoned key vanishes.

Pub/sub runs on one dedicated RESP2 connection per broker, read by a listener
task that is watched: when the connection is lost (or stays silent past a
health-check PING) the listener logs a warning, counts it in
``listener_failures``, reconnects with capped exponential backoff, resubscribes
every topic and counts the recovery in ``listener_restarts``. Messages
published while it was down are lost (delivery is at-most-once). ``subscribe``
sends SUBSCRIBE then a PING carrying a unique token and returns only when the
matching pong comes back on that connection, so the subscription is active.
Handlers run in the listener task, in arrival order; one that raises is logged
and counted in ``handler_errors``.

Commands are never retried (a retried INCR or SET NX could apply twice); a
lost connection surfaces as :class:`BrokerError`. The URL is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
from collections.abc import Iterator
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from server.broker.base import (
    Broker,
    BrokerError,
    MessageHandler,
    Subscription,
    check_name,
    check_payload,
)

log = logging.getLogger(__name__)

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
_PRUNE = """
repeat
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 500)
  if #gone > 0 then
    redis.call('ZREM', KEYS[1], unpack(gone))
    redis.call('HDEL', KEYS[2], unpack(gone))
  end
until #gone < 500
"""
# KEYS: zset, hash; ARGV: member, value, ttl_ms
_PRESENCE_SET = (
    _NOW_MS
    + _PRUNE
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local keep = math.max(1, tonumber(last[2]) - now)
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
"""
)
_PRESENCE_GET = _NOW_MS + _PRUNE + "return redis.call('HGETALL', KEYS[2])\n"
# KEYS: counter; ARGV: amount, ttl_ms or ''
_INCR = """
local existed = redis.call('EXISTS', KEYS[1])
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if existed == 0 and ARGV[2] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return v
"""


def _ttl_ms(ttl_s: float | None) -> int | None:
    """Milliseconds (at least 1) for ``ttl_s``; raises :class:`BrokerError` if invalid."""
    if ttl_s is None:
        return None
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float):
        raise BrokerError("ttl_s must be a number of seconds")
    if not math.isfinite(ttl_s) or ttl_s <= 0:
        raise BrokerError("ttl_s must be a finite number > 0")
    return max(1, math.ceil(ttl_s * 1000))


def _bytes_or_none(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    """Turn Redis and socket errors into :class:`BrokerError` (no URL in the text)."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise BrokerError(f"redis {what} failed: {type(exc).__name__}: {exc}") from exc


class RedisBroker(Broker):
    """:class:`Broker` over Redis 7 (redis-py asyncio); see the module docstring.

    Limits and timeouts (keyword arguments, with units):

    - ``socket_timeout_s`` (5.0): a command waiting longer raises BrokerError.
    - ``subscribe_timeout_s`` (10.0): ``subscribe`` raises BrokerError when the
      subscription is not confirmed in time (listener down); it is rolled back.
    - ``health_check_interval_s`` (15.0): a silent pub/sub connection is PINGed;
      no reply within the same interval counts as a lost connection.
    - ``reconnect_max_backoff_s`` (5.0): cap of the listener's reconnect backoff
      (starting at 0.05 s, doubling, with jitter).
    - ``max_connections`` (64): command connections per broker; callers past it
      wait for a free one (bounded by ``socket_timeout_s``).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "medhub:",
        socket_timeout_s: float = 5.0,
        subscribe_timeout_s: float = 10.0,
        health_check_interval_s: float = 15.0,
        reconnect_max_backoff_s: float = 5.0,
        max_connections: int = 64,
    ) -> None:
        if not prefix.isascii():
            raise ValueError("prefix must be ASCII")
        self.prefix = prefix
        self.handler_errors = 0
        self.listener_failures = 0
        self.listener_restarts = 0
        self._subscribe_timeout_s = subscribe_timeout_s
        self._socket_timeout_s = socket_timeout_s
        self._health_s = health_check_interval_s
        self._max_backoff_s = reconnect_max_backoff_s
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=socket_timeout_s,
            protocol=2,
            decode_responses=False,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._redis: Redis = Redis.from_pool(pool)
        self._presence_set = self._redis.register_script(_PRESENCE_SET)
        self._presence_get = self._redis.register_script(_PRESENCE_GET)
        self._incr = self._redis.register_script(_INCR)
        self._channel_prefix = (prefix + "t:").encode()
        self._handlers: dict[str, list[Subscription]] = {}
        self._barriers: dict[bytes, asyncio.Future[None]] = {}
        self._tokens = itertools.count()
        self._conn: AbstractConnection | None = None
        self._send_lock = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._started = False
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------
    def _ready(self, *names: str) -> None:
        """Raise :class:`BrokerError` for an invalid name or a broker not open."""
        for name in names:
            check_name(name)
        if self._closed:
            raise BrokerError("broker is closed")
        if not self._started:
            raise BrokerError("broker is not started")

    def _is_closed(self) -> bool:
        return self._closed

    async def start(self) -> None:
        """PING Redis, start the pub/sub listener, wait until it is connected.

        Idempotent. Raises :class:`BrokerError` when Redis does not answer
        within ``socket_timeout_s`` or after close.
        """
        if self._closed:
            raise BrokerError("broker is closed")
        if self._started:
            return
        with _errors("ping"):
            await self._redis.ping()
        self._started = True
        self._listener = asyncio.create_task(self._listen(), name="redis-broker-listener")
        try:
            await asyncio.wait_for(self._listening.wait(), self._socket_timeout_s)
        except TimeoutError:
            await self.close()
            raise BrokerError("redis pub/sub listener could not connect") from None

    async def close(self) -> None:
        """Stop the listener, drop subscriptions, close connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect(nowait=True)  # wakes the listener even mid-read
        if self._listener is not None:
            self._listener.cancel()
            _, pending = await asyncio.wait({self._listener}, timeout=self._socket_timeout_s)
            if pending:
                log.error("redis pub/sub listener did not stop; abandoning it")
        self._handlers.clear()
        for fut in self._barriers.values():
            if not fut.done():
                fut.set_exception(BrokerError("broker closed"))
        self._barriers.clear()
        await self._redis.aclose()  # owns and disconnects the pool

    async def ping(self) -> bool:
        """True when Redis answers and the pub/sub listener is connected."""
        if not self._started or self._closed or self._conn is None:
            return False
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    # -- pub/sub -------------------------------------------------------------------
    def _channel(self, topic: str) -> bytes:
        return self._channel_prefix + topic.encode("ascii")

    async def publish(self, topic: str, payload: bytes) -> None:
        """PUBLISH to every node. Raises :class:`BrokerError` (bad input, Redis down)."""
        check_payload(payload)
        self._ready(topic)
        with _errors("publish"):
            await self._redis.publish(self._channel(topic), bytes(payload))

    async def subscribe(self, topic: str, handler: MessageHandler) -> Subscription:
        """Subscribe and wait until Redis confirms it.

        Raises :class:`BrokerError` for a bad topic, when the broker is not open,
        or when no confirmation arrives within ``subscribe_timeout_s``.
        """
        self._ready(topic)
        sub = Subscription(topic, handler)
        subs = self._handlers.setdefault(topic, [])
        is_new = not subs
        subs.append(sub)
        token = b"sub-%d" % next(self._tokens)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers[token] = fut
        commands: list[tuple[bytes, ...]] = [(b"PING", token)]
        if is_new:
            commands.insert(0, (b"SUBSCRIBE", self._channel(topic)))
        try:
            await self._send(commands)
            await asyncio.wait_for(asyncio.shield(fut), self._subscribe_timeout_s)
        except BaseException as exc:
            await self.unsubscribe(sub)
            if isinstance(exc, TimeoutError | BrokerError):
                raise BrokerError("redis subscribe not confirmed (listener down?)") from exc
            raise
        finally:
            self._barriers.pop(token, None)
        return sub

    async def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivery at once; UNSUBSCRIBE when the topic's last handler goes."""
        topic = subscription.topic
        subs = self._handlers.get(topic)
        if subs is None or subscription not in subs:
            return
        subs.remove(subscription)
        if subs:
            return
        del self._handlers[topic]
        if not self._closed:
            await self._send([(b"UNSUBSCRIBE", self._channel(topic))], unless_topic=topic)

    async def _send(self, commands: list[tuple[bytes, ...]], unless_topic: str = "") -> None:
        """Write commands on the pub/sub connection, if it is up.

        Errors are swallowed: the listener sees the broken connection, reconnects
        and replays every subscription and pending PING token itself.
        """
        async with self._send_lock:
            conn = self._conn
            if conn is None or (unless_topic and unless_topic in self._handlers):
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
        while not self._closed:
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
            self._listening.set()
            channels = [self._channel(topic) for topic in self._handlers]
            tokens = list(self._barriers)
            restart_token = b"restart-%d" % next(self._tokens) if recovering else None
            for i in range(0, len(channels), 1000):
                await conn.send_command(b"SUBSCRIBE", *channels[i : i + 1000])
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

    # -- presence registry ------------------------------------------------------------
    def _key(self, space: str, key: str) -> str:
        return f"{self.prefix}{space}:{key}"

    async def presence_set(self, key: str, member: str, value: bytes, ttl_s: float) -> None:
        """Add or refresh ``member`` atomically (Lua). Raises :class:`BrokerError`."""
        check_payload(value)
        ttl_ms = _ttl_ms(ttl_s)
        if ttl_ms is None:
            raise BrokerError("presence needs a ttl_s")
        self._ready(key, member)
        keys = [self._key("p", key), self._key("pv", key)]
        with _errors("presence_set"):
            await self._presence_set(keys=keys, args=[member, bytes(value), ttl_ms])

    async def presence_remove(self, key: str, member: str) -> None:
        """Remove ``member`` from both structures (MULTI). Raises :class:`BrokerError`."""
        self._ready(key, member)
        with _errors("presence_remove"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self._key("p", key), member)
                pipe.hdel(self._key("pv", key), member)
                await pipe.execute()

    async def presence_get(self, key: str) -> dict[str, bytes]:
        """Prune expired members, return the rest. Raises :class:`BrokerError`."""
        self._ready(key)
        keys = [self._key("p", key), self._key("pv", key)]
        with _errors("presence_get"):
            flat = await self._presence_get(keys=keys, args=[])
        return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}

    # -- ephemeral values ---------------------------------------------------------------
    async def set_value(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        """SET [PX]. Raises :class:`BrokerError`."""
        check_payload(value)
        ttl_ms = _ttl_ms(ttl_s)
        self._ready(key)
        with _errors("set"):
            await self._redis.set(self._key("v", key), bytes(value), px=ttl_ms)

    async def set_if_absent(self, key: str, value: bytes, ttl_s: float | None = None) -> bool:
        """SET NX [PX]; True if stored. Raises :class:`BrokerError`."""
        check_payload(value)
        ttl_ms = _ttl_ms(ttl_s)
        self._ready(key)
        with _errors("set nx"):
            stored = await self._redis.set(self._key("v", key), bytes(value), px=ttl_ms, nx=True)
        return bool(stored)

    async def get_value(self, key: str) -> bytes | None:
        """GET. Raises :class:`BrokerError`."""
        self._ready(key)
        with _errors("get"):
            value = await self._redis.get(self._key("v", key))
        return _bytes_or_none(value)

    async def pop_value(self, key: str) -> bytes | None:
        """GETDEL (atomic single use). Raises :class:`BrokerError`."""
        self._ready(key)
        with _errors("getdel"):
            value = await self._redis.getdel(self._key("v", key))
        return _bytes_or_none(value)

    async def delete_value(self, key: str) -> None:
        """DEL. Raises :class:`BrokerError`."""
        self._ready(key)
        with _errors("del"):
            await self._redis.delete(self._key("v", key))

    # -- counters -------------------------------------------------------------------------
    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        """INCRBY, with PEXPIRE only when this call created the key (Lua).

        Raises :class:`BrokerError` when the key holds a non-integer, on 64-bit
        overflow, for bad input, or when Redis is unreachable.
        """
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise BrokerError("amount must be an int")
        ttl_ms = _ttl_ms(ttl_s)
        self._ready(key)
        args: list[int | str] = [amount, "" if ttl_ms is None else ttl_ms]
        with _errors("incr"):
            return int(await self._incr(keys=[self._key("v", key)], args=args))
