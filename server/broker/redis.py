"""The Redis broker: several hub processes share pub/sub, presence and counters.

Keys (``prefix`` lets several deployments share one Redis; single Redis or
Sentinel, not Cluster): topic ``T`` is channel ``{prefix}t:T``; presence key
``K`` is a sorted set ``{prefix}p:K`` (member -> expiry in ms) plus a hash
``{prefix}pv:K`` (member -> value); value or counter ``K`` is ``{prefix}v:K``.

Presence expiry uses **Redis server time** (``TIME`` inside Lua scripts), never
the nodes' clocks, so clock skew between nodes cannot shorten or stretch a TTL.
Writers and readers prune expired members atomically, and both keys carry a
PEXPIRE of the latest member's deadline, so an abandoned key vanishes.

Pub/sub runs on one dedicated connection read by a watched listener
(:mod:`server.broker.redis_pubsub`). Batched calls (``publish_many``,
``presence_*_many``, ``get_values``) go in one non-transactional pipeline: one
round trip for the whole batch.

Commands are never retried (a retried INCR or SET NX could apply twice); a
lost connection surfaces as :class:`BrokerError`. The URL is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterator, Sequence

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from server.broker.base import (
    Broker,
    BrokerError,
    MessageHandler,
    Subscription,
    check_name,
    check_payload,
)
from server.broker.redis_pubsub import RedisPubSub

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
        self._socket_timeout_s = socket_timeout_s
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
        self._pubsub = RedisPubSub(
            self._redis,
            (prefix + "t:").encode(),
            self._is_closed,
            subscribe_timeout_s=subscribe_timeout_s,
            health_check_interval_s=health_check_interval_s,
            reconnect_max_backoff_s=reconnect_max_backoff_s,
        )
        self._started = False
        self._closed = False

    @property
    def handler_errors(self) -> int:
        """Handlers that raised (logged; delivery went on)."""
        return self._pubsub.handler_errors

    @property
    def listener_failures(self) -> int:
        """Times the pub/sub connection was lost."""
        return self._pubsub.listener_failures

    @property
    def listener_restarts(self) -> int:
        """Times the pub/sub listener reconnected and resubscribed."""
        return self._pubsub.listener_restarts

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
        self._pubsub.start()
        try:
            await asyncio.wait_for(self._pubsub.listening.wait(), self._socket_timeout_s)
        except TimeoutError:
            await self.close()
            raise BrokerError("redis pub/sub listener could not connect") from None

    async def close(self) -> None:
        """Stop the listener, drop subscriptions, close connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._pubsub.close(self._socket_timeout_s)
        await self._redis.aclose()  # owns and disconnects the pool

    async def ping(self) -> bool:
        """True when Redis answers and the pub/sub listener is connected."""
        if not self._started or self._closed or not self._pubsub.connected:
            return False
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    # -- pub/sub -------------------------------------------------------------------
    async def publish(self, topic: str, payload: bytes) -> None:
        """PUBLISH to every node. Raises :class:`BrokerError` (bad input, Redis down)."""
        check_payload(payload)
        self._ready(topic)
        with _errors("publish"):
            await self._redis.publish(self._pubsub.channel(topic), bytes(payload))

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """PUBLISH each ``(topic, payload)`` in order, in one pipeline."""
        for topic, payload in messages:
            check_payload(payload)
            self._ready(topic)
        if not messages:
            return
        with _errors("publish"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for topic, payload in messages:
                    pipe.publish(self._pubsub.channel(topic), bytes(payload))
                await pipe.execute()

    async def subscribe(self, topic: str, handler: MessageHandler) -> Subscription:
        """Subscribe and wait until Redis confirms it.

        Raises :class:`BrokerError` for a bad topic, when the broker is not open,
        or when no confirmation arrives within ``subscribe_timeout_s``.
        """
        return (await self.subscribe_many([topic], handler))[0]

    async def subscribe_many(
        self, topics: Sequence[str], handler: MessageHandler
    ) -> list[Subscription]:
        """Subscribe to every topic with one SUBSCRIBE; returns once all are active."""
        self._ready(*topics)
        return await self._pubsub.subscribe_many(topics, handler)

    async def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivery at once; UNSUBSCRIBE when the topic's last handler goes."""
        await self._pubsub.unsubscribe_many([subscription])

    async def unsubscribe_many(self, subscriptions: Sequence[Subscription]) -> None:
        """Stop delivery to each handle at once (one UNSUBSCRIBE for the topics left)."""
        await self._pubsub.unsubscribe_many(subscriptions)

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

    async def presence_set_many(
        self, entries: Sequence[tuple[str, str, bytes]], ttl_s: float
    ) -> None:
        """``presence_set`` of each ``(key, member, value)``, in one pipeline."""
        ttl_ms = _ttl_ms(ttl_s)
        if ttl_ms is None:
            raise BrokerError("presence needs a ttl_s")
        for key, member, value in entries:
            check_payload(value)
            self._ready(key, member)
        if not entries:
            return
        with _errors("presence_set"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, member, value in entries:
                    keys = [self._key("p", key), self._key("pv", key)]
                    await self._presence_set(
                        keys=keys, args=[member, bytes(value), ttl_ms], client=pipe
                    )
                await pipe.execute()

    async def presence_remove_many(self, entries: Sequence[tuple[str, str]]) -> None:
        """``presence_remove`` of each ``(key, member)``, in one pipeline."""
        for key, member in entries:
            self._ready(key, member)
        if not entries:
            return
        with _errors("presence_remove"):
            async with self._redis.pipeline(transaction=True) as pipe:
                for key, member in entries:
                    pipe.zrem(self._key("p", key), member)
                    pipe.hdel(self._key("pv", key), member)
                await pipe.execute()

    async def presence_get_many(self, keys: Sequence[str]) -> dict[str, dict[str, bytes]]:
        """``presence_get`` of each key, in one pipeline."""
        self._ready(*keys)
        if not keys:
            return {}
        with _errors("presence_get"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    await self._presence_get(
                        keys=[self._key("p", key), self._key("pv", key)], args=[], client=pipe
                    )
                results = await pipe.execute()
        return {
            key: {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}
            for key, flat in zip(keys, results, strict=True)
        }

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

    async def get_values(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        """MGET of every key. Raises :class:`BrokerError`."""
        self._ready(*keys)
        if not keys:
            return {}
        with _errors("mget"):
            values = await self._redis.mget([self._key("v", key) for key in keys])
        return {key: _bytes_or_none(v) for key, v in zip(keys, values, strict=True)}

    async def set_values(
        self, items: Sequence[tuple[str, bytes]], ttl_s: float | None = None
    ) -> None:
        """SET [PX] of each ``(key, value)``, in one pipeline. Raises :class:`BrokerError`."""
        ttl_ms = _ttl_ms(ttl_s)
        for key, value in items:
            check_payload(value)
            self._ready(key)
        if not items:
            return
        with _errors("set"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, value in items:
                    pipe.set(self._key("v", key), bytes(value), px=ttl_ms)
                await pipe.execute()

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
