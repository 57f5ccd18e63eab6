"""Cached access decisions: a strict time bound, one read per key at a time.

Capabilities cache what an allowed decision needs (a conversation, a stream
and its exam) per (user, target, action), so that a busy socket does not read
the store on every request. :class:`DecisionCache` adds three things a plain
dict with deadlines lacks:

- **single flight**: callers that miss the same key while its read is under
  way wait for that read instead of starting their own. Without it, every
  entry's expiry under load (say 50 sends a second from one user) started a
  burst of identical reads that held the database threads and the
  interpreter lock together, every ``ttl_s``: the periodic latency spikes of
  ``docs/benchmarks.md`` "Chat latency";
- **spread expiries**: an entry lives between ``(1 - jitter) * ttl_s`` and
  ``ttl_s`` seconds (never longer), so entries cached together (a room that
  started at once) do not all expire in the same instant;
- **forget beats a read in flight**: :meth:`forget` drops matching entries
  and also voids every read that started before it, so a decision read
  before a revocation is never cached after it.

The bound on staleness is unchanged: an entry is used at most ``ttl_s``
seconds after the read that produced it began, and a forget (a rights change)
takes effect at once. Not thread-safe: event loop only.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
R = TypeVar("R")


def spread_ttl(ttl_s: float, jitter: float = 0.25) -> float:
    """A lifetime drawn between ``(1 - jitter) * ttl_s`` and ``ttl_s`` (never longer)."""
    return ttl_s * (1 - jitter * random.random())  # a spread, not a secret


class DecisionCache(Generic[K, V]):
    """Values by key for at most ``ttl_s`` seconds; see the module docstring.

    ``max_entries`` bounds the cache (it is emptied when full: entries are
    cheap to read again); ``jitter`` (0 to 1) is the part of ``ttl_s`` by which
    an entry's life is shortened at random. Raises ValueError for a negative
    ``ttl_s``, a ``jitter`` outside [0, 1] or ``max_entries`` < 1.
    """

    def __init__(self, ttl_s: float, *, max_entries: int = 10_000, jitter: float = 0.25) -> None:
        if ttl_s < 0 or not 0 <= jitter <= 1 or max_entries < 1:
            raise ValueError("ttl_s >= 0, 0 <= jitter <= 1 and max_entries >= 1 are required")
        self.ttl_s, self.max_entries, self.jitter = ttl_s, max_entries, jitter
        self._entries: dict[K, tuple[float, V]] = {}
        self._flights: dict[K, tuple[asyncio.Future[Any], int]] = {}
        self._generation = 0
        self.reads = 0  #: reads started (one per flight)
        self.shared = 0  #: misses that waited for another caller's read

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """The cached value of ``key`` while fresh, else None."""
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[0] <= time.monotonic():
            del self._entries[key]
            return None
        return hit[1]

    async def read(self, key: K, read: Callable[[], Awaitable[R]]) -> tuple[R, int]:
        """``read()``'s result, shared with every caller that asks for ``key`` meanwhile.

        Returns the result and a stamp to hand to :meth:`put`. The result is
        not cached here: the caller decides first, then puts what is allowed.
        Raises what ``read`` raises (to every caller that shared it); a
        caller cancelled while waiting does not cancel the read.
        """
        flight = self._flights.get(key)
        if flight is not None:
            self.shared += 1
            result: R = await asyncio.shield(flight[0])
            return result, flight[1]
        stamp = self._generation
        self.reads += 1
        task: asyncio.Future[R] = asyncio.ensure_future(read())
        self._flights[key] = (task, stamp)
        task.add_done_callback(lambda t: self._landed(key, t))
        return await asyncio.shield(task), stamp

    def _landed(self, key: K, task: asyncio.Future[Any]) -> None:
        flight = self._flights.get(key)
        if flight is not None and flight[0] is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved: a failed read is raised to its callers, not logged

    def put(self, key: K, value: V, stamp: int) -> None:
        """Cache ``value`` for ``key`` unless a :meth:`forget` came after its read began."""
        if stamp != self._generation or self.ttl_s <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + spread_ttl(self.ttl_s, self.jitter), value)

    def forget(self, match: Callable[[K, V], bool] | None = None) -> int:
        """Drop the entries ``match`` accepts (all without it); void reads under way.

        Returns how many entries were dropped.
        """
        self._generation += 1
        gone = [k for k, (_, v) in self._entries.items() if match is None or match(k, v)]
        for k in gone:
            del self._entries[k]
        return len(gone)
