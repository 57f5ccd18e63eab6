"""A short-lived in-process cache of authenticated callers (REST and WebSocket ``hello``).

An authenticated request costs one query (session and user joined) when its
token is not cached, and a dictionary lookup when it is. Entries are keyed by
the token's SHA-256 (never the token) and hold the session row and the user.

Staleness is bounded twice:

- every entry lives at most ``ttl_s`` seconds (``auth_cache_ttl_s``), and at
  least three quarters of it: the spread keeps the entries cached in one burst
  (a node's start, a load test's first second) from expiring, and being read
  again, all in the same instant;
- every change of someone's access (a revoked session, a role, status,
  delegation or care change, a profile change) drops the affected entries on
  every node as soon as the node reads it from the access change log
  (:mod:`server.accounts.access_log`, polled every ``access_poll_interval_s``
  and at once on a pub/sub notice). A user's rights never outlive a change by
  more than that poll interval (plus one query), whatever ``ttl_s`` is.

Validity that depends on time alone (the session's absolute and idle ends, a
guest account's end) is checked on every use against the cached row, so the
cache never extends a session. The cache holds at most ``max_entries``; the
oldest entries go first. Not thread-safe: event loop only.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

from server.decisions import spread_ttl

V = TypeVar("V")


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    user_id: str
    session_id: str
    expires: float  # monotonic


class AuthCache(Generic[V]):
    """Cached callers by token hash; see the module docstring."""

    def __init__(self, *, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, _Entry[V]] = OrderedDict()
        self._by_user: dict[str, set[bytes]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> V | None:
        """The cached value of ``key`` if fresh, else None (and it is dropped)."""
        entry = self._entries.get(key)
        if entry is None or entry.expires <= time.monotonic():
            if entry is not None:
                self._drop(key)
            self.misses += 1
            return None
        self.hits += 1
        return entry.value

    def put(self, key: bytes, value: V, user_id: str, session_id: str) -> None:
        """Cache ``value`` for ``ttl_s``; the oldest entry goes when full."""
        if self.ttl_s <= 0 or self.max_entries <= 0:
            return
        if key in self._entries:
            self._drop(key)
        while len(self._entries) >= self.max_entries:
            self._drop(next(iter(self._entries)))
        expires = time.monotonic() + spread_ttl(self.ttl_s)
        self._entries[key] = _Entry(value, user_id, session_id, expires)
        self._by_user.setdefault(user_id, set()).add(key)

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            keys = self._by_user.get(entry.user_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_user[entry.user_id]

    def forget_user(self, user_id: str) -> int:
        """Drop every entry of ``user_id``; how many."""
        keys = list(self._by_user.get(user_id, ()))
        for key in keys:
            self._drop(key)
        return len(keys)

    def forget_session(self, user_id: str, session_id: str) -> int:
        """Drop the entries of one session of ``user_id``; how many."""
        keys = [
            k for k in self._by_user.get(user_id, ()) if self._entries[k].session_id == session_id
        ]
        for key in keys:
            self._drop(key)
        return len(keys)

    def clear(self) -> None:
        """Drop everything."""
        self._entries.clear()
        self._by_user.clear()
