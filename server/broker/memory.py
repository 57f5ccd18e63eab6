"""The in-memory broker: one process, no I/O, the default for a single node.

State lives in a :class:`MemoryBackend`; each :class:`MemoryBroker` is one
handle (one "node") on it. Several handles on one backend behave like several
hub processes sharing one Redis, which is how the conformance suite runs its
two-node tests against both implementations.

Delivery: ``publish`` snapshots the topic's subscriptions and schedules one
delivery with ``loop.call_soon``, so handlers never run inside ``publish``
(a handler that publishes, subscribes or unsubscribes cannot break an iteration
in progress) and messages keep their publish order, per topic and across
topics, because the loop runs callbacks first in, first out. A subscription
removed before its delivery runs is skipped. All handles on a backend must be
used from one event loop.

Expiry: every entry with a TTL is also pushed on a heap of deadlines. Each
operation first pops the deadlines already passed (amortised O(log n) per
expired entry), and reads check the deadline of what they return, so expired
entries never show and never pile up. The heap is rebuilt when stale deadlines
(left by refreshes) outnumber live entries, which keeps it O(live entries).

Limits: ``max_entries`` (values + counters + presence members, default one
million); past it a write that would create an entry raises ``BrokerError``.
Entries without a TTL stay until deleted, as in Redis.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections.abc import Callable

from server.broker.base import (
    Broker,
    BrokerError,
    MessageHandler,
    Subscription,
    check_name,
    check_payload,
)

log = logging.getLogger(__name__)

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_VALUE = 0
_PRESENCE = 1


def _check_ttl(ttl_s: float | None, *, required: bool = False) -> None:
    """Raise :class:`BrokerError` unless ``ttl_s`` is a finite number > 0 (or None)."""
    if ttl_s is None and not required:
        return
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float):
        raise BrokerError("ttl_s must be a number of seconds")
    if not math.isfinite(ttl_s) or ttl_s <= 0:
        raise BrokerError("ttl_s must be a finite number > 0")


class MemoryBackend:
    """State shared by the :class:`MemoryBroker` handles built on it.

    ``clock`` returns seconds (monotonic); inject a fake one to test TTLs
    without sleeping. ``max_entries`` bounds values + counters + presence
    members together; past it, creating one more raises :class:`BrokerError`.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_entries: int = 1_000_000
    ) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be > 0")
        self.clock = clock
        self.max_entries = max_entries
        self.topics: dict[str, dict[Subscription, MemoryBroker]] = {}
        # key -> (bytes value or int counter, expiry or None)
        self.values: dict[str, tuple[bytes | int, float | None]] = {}
        # key -> member -> (value, expiry)
        self.presence: dict[str, dict[str, tuple[bytes, float]]] = {}
        self.presence_count = 0
        self._deadlines: list[tuple[float, int, int, str, str]] = []
        self._seq = itertools.count()

    # -- expiry ------------------------------------------------------------------
    def now(self) -> float:
        """The backend clock, in seconds."""
        return self.clock()

    def sweep(self) -> float:
        """Drop entries whose deadline has passed; return the current time."""
        now = self.clock()
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, _, kind, key, member = heapq.heappop(heap)
            if kind == _VALUE:
                entry = self.values.get(key)
                if entry is not None and entry[1] is not None and entry[1] <= now:
                    del self.values[key]
            else:
                members = self.presence.get(key)
                item = members.get(member) if members else None
                if members is not None and item is not None and item[1] <= now:
                    self._drop_member(key, members, member)
        return now

    def track(self, expires: float, kind: int, key: str, member: str = "") -> None:
        """Remember a deadline; rebuild the heap when stale deadlines dominate."""
        heapq.heappush(self._deadlines, (expires, next(self._seq), kind, key, member))
        if len(self._deadlines) > 2 * self.entry_count() + 1024:
            self._rebuild_deadlines()

    def _rebuild_deadlines(self) -> None:
        fresh: list[tuple[float, int, int, str, str]] = []
        for key, (_, expires) in self.values.items():
            if expires is not None:
                fresh.append((expires, next(self._seq), _VALUE, key, ""))
        for key, members in self.presence.items():
            for member, (_, expires) in members.items():
                fresh.append((expires, next(self._seq), _PRESENCE, key, member))
        heapq.heapify(fresh)
        self._deadlines = fresh

    def entry_count(self) -> int:
        """Values + counters + presence members currently held."""
        return len(self.values) + self.presence_count

    def reserve(self) -> None:
        """Raise :class:`BrokerError` if one more entry would exceed ``max_entries``."""
        if self.entry_count() >= self.max_entries:
            raise BrokerError("memory broker full (max_entries reached)")

    def _drop_member(self, key: str, members: dict[str, tuple[bytes, float]], member: str) -> None:
        del members[member]
        self.presence_count -= 1
        if not members:
            del self.presence[key]

    def live_value(self, key: str, now: float) -> tuple[bytes | int, float | None] | None:
        """The entry under ``key`` unless it has expired (expired ones are dropped)."""
        entry = self.values.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= now:
            del self.values[key]
            return None
        return entry

    def remove_member(self, key: str, member: str) -> None:
        """Remove one presence member if present."""
        members = self.presence.get(key)
        if members is not None and member in members:
            self._drop_member(key, members, member)

    # -- delivery ------------------------------------------------------------------
    def deliver(self, topic: str, payload: bytes, targets: tuple[Subscription, ...]) -> None:
        """Call each still-subscribed handler in ``targets`` (run by the event loop)."""
        for sub in targets:
            owner = self.topics.get(topic, {}).get(sub)
            if owner is None:
                continue  # unsubscribed (or its broker closed) since publish
            try:
                sub.handler(topic, payload)
            except Exception:
                owner.handler_errors += 1
                log.exception("broker handler failed", extra={"topic": topic})


class MemoryBroker(Broker):
    """In-process :class:`Broker`; see the module docstring for guarantees.

    ``backend`` shares state with other handles (use :meth:`shared_with`);
    when it is None a private backend is built from ``clock`` and
    ``max_entries`` (both ignored when a backend is given).
    """

    def __init__(
        self,
        backend: MemoryBackend | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 1_000_000,
    ) -> None:
        if backend is None:
            backend = MemoryBackend(clock=clock, max_entries=max_entries)
        self.backend = backend
        self.handler_errors = 0
        self._subs: set[Subscription] = set()
        self._started = False
        self._closed = False

    @classmethod
    def shared_with(cls, other: MemoryBroker) -> MemoryBroker:
        """A new handle (another "node") on ``other``'s backend."""
        return cls(other.backend)

    def _ready(self, *names: str) -> None:
        """Raise :class:`BrokerError` for an invalid name or a broker not open."""
        for name in names:
            check_name(name)
        if self._closed:
            raise BrokerError("broker is closed")
        if not self._started:
            raise BrokerError("broker is not started")

    async def start(self) -> None:
        """Mark the broker usable. Raises :class:`BrokerError` once closed."""
        if self._closed:
            raise BrokerError("broker is closed")
        self._started = True

    async def close(self) -> None:
        """Drop this handle's subscriptions; the shared state stays. Idempotent."""
        self._closed = True
        for sub in self._subs:
            subs = self.backend.topics.get(sub.topic)
            if subs is not None:
                subs.pop(sub, None)
                if not subs:
                    del self.backend.topics[sub.topic]
        self._subs.clear()

    async def ping(self) -> bool:
        """True between :meth:`start` and :meth:`close`."""
        return self._started and not self._closed

    # -- pub/sub -------------------------------------------------------------------
    async def publish(self, topic: str, payload: bytes) -> None:
        """Schedule delivery to every current subscription of ``topic``.

        Raises :class:`BrokerError` for an invalid topic or payload, or when
        the broker is not open.
        """
        check_payload(payload)
        self._ready(topic)
        subs = self.backend.topics.get(topic)
        if subs:
            loop = asyncio.get_running_loop()
            loop.call_soon(self.backend.deliver, topic, bytes(payload), tuple(subs))

    async def subscribe(self, topic: str, handler: MessageHandler) -> Subscription:
        """Register ``handler``; active on return. Raises :class:`BrokerError`."""
        self._ready(topic)
        sub = Subscription(topic, handler)
        self.backend.topics.setdefault(topic, {})[sub] = self
        self._subs.add(sub)
        return sub

    async def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivery to ``subscription`` at once; unknown handles are ignored."""
        if subscription not in self._subs:
            return
        self._subs.discard(subscription)
        subs = self.backend.topics.get(subscription.topic)
        if subs is not None:
            subs.pop(subscription, None)
            if not subs:
                del self.backend.topics[subscription.topic]

    # -- presence registry ---------------------------------------------------------
    async def presence_set(self, key: str, member: str, value: bytes, ttl_s: float) -> None:
        """Add or refresh ``member``. Raises :class:`BrokerError` (bad input, full)."""
        check_payload(value)
        _check_ttl(ttl_s, required=True)
        self._ready(key, member)
        b = self.backend
        now = b.sweep()
        members = b.presence.get(key)
        if members is None or member not in members:
            b.reserve()
            b.presence_count += 1
            members = b.presence.setdefault(key, {})
        expires = now + ttl_s
        members[member] = (bytes(value), expires)
        b.track(expires, _PRESENCE, key, member)

    async def presence_remove(self, key: str, member: str) -> None:
        """Remove ``member`` now. Raises :class:`BrokerError` for bad names."""
        self._ready(key, member)
        self.backend.sweep()
        self.backend.remove_member(key, member)

    async def presence_get(self, key: str) -> dict[str, bytes]:
        """Unexpired members of ``key``. Raises :class:`BrokerError` for a bad key."""
        self._ready(key)
        now = self.backend.sweep()
        members = self.backend.presence.get(key, {})
        return {m: value for m, (value, expires) in members.items() if expires > now}

    # -- ephemeral values ------------------------------------------------------------
    def _store(self, key: str, value: bytes | int, ttl_s: float | None, now: float) -> None:
        b = self.backend
        if key not in b.values:
            b.reserve()
        expires = None if ttl_s is None else now + ttl_s
        b.values[key] = (value, expires)
        if expires is not None:
            b.track(expires, _VALUE, key)

    async def set_value(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        """Store ``value``. Raises :class:`BrokerError` (bad input, full, not open)."""
        check_payload(value)
        _check_ttl(ttl_s)
        self._ready(key)
        now = self.backend.sweep()
        self._store(key, bytes(value), ttl_s, now)

    async def set_if_absent(self, key: str, value: bytes, ttl_s: float | None = None) -> bool:
        """Store only if absent; True if stored. Raises :class:`BrokerError`."""
        check_payload(value)
        _check_ttl(ttl_s)
        self._ready(key)
        now = self.backend.sweep()
        if self.backend.live_value(key, now) is not None:
            return False
        self._store(key, bytes(value), ttl_s, now)
        return True

    async def get_value(self, key: str) -> bytes | None:
        """The value (a counter reads as its decimal bytes), or None."""
        self._ready(key)
        entry = self.backend.live_value(key, self.backend.sweep())
        return None if entry is None else _as_bytes(entry[0])

    async def pop_value(self, key: str) -> bytes | None:
        """Read and delete ``key``; None if absent. Raises :class:`BrokerError`."""
        self._ready(key)
        entry = self.backend.live_value(key, self.backend.sweep())
        if entry is None:
            return None
        del self.backend.values[key]
        return _as_bytes(entry[0])

    async def delete_value(self, key: str) -> None:
        """Delete ``key`` if present. Raises :class:`BrokerError` for a bad key."""
        self._ready(key)
        self.backend.sweep()
        self.backend.values.pop(key, None)

    # -- counters ----------------------------------------------------------------------
    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        """Add ``amount``; ``ttl_s`` applies on creation only.

        Raises :class:`BrokerError` when the key holds a non-integer value, the
        result leaves the signed 64-bit range (as Redis), or the input is bad.
        """
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise BrokerError("amount must be an int")
        _check_ttl(ttl_s)
        self._ready(key)
        now = self.backend.sweep()
        entry = self.backend.live_value(key, now)
        if entry is None:
            current, expires = 0, None
        else:
            current, expires = _as_int(entry[0]), entry[1]
        total = current + amount
        if not _INT64_MIN <= total <= _INT64_MAX:
            raise BrokerError("increment or decrement would overflow")
        if entry is None:
            self._store(key, total, ttl_s, now)
        else:
            self.backend.values[key] = (total, expires)
        return total


def _as_bytes(value: bytes | int) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _as_int(value: bytes | int) -> int:
    if isinstance(value, int):
        return value
    try:
        return int(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise BrokerError("value is not an integer") from None
