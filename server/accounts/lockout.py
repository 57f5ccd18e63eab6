"""Brute-force protection: failure counters per account and per source address.

The counters live in the broker (:class:`server.broker.base.Broker`), so every
node sees the same numbers. Keys (the account key is a SHA-256 of the
normalised email, so unknown emails are counted alike and no email reaches the
broker):

- ``acc:fail:<account>`` consecutive failures (reset by a success);
- ``acc:level:<account>`` locks so far (reset by a success), which picks the
  duration from ``schedule_s`` (1, 5, 15, 60 minutes by default; the last
  repeats);
- ``acc:lock:<account>`` the lock's end time (seconds, from the injected clock);
- ``acc:hour:<account>`` / ``acc:ip:<address>`` failures in a fixed one-hour
  window, capped at ``max_per_hour`` / ``ip_max_per_hour``.

A lock starts at every ``threshold``-th consecutive failure. While an account
is locked the login answers exactly as for a wrong password.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from server.broker.base import Broker

HOUR_S = 3600.0
LEVEL_TTL_S = 86400.0


def account_key(email: str) -> str:
    """The broker key part for an account: SHA-256 of the normalised email (hex)."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class LockState:
    """Whether logins are refused now, why (``account_locked``, ``hourly_cap``, ``ip_cap``)."""

    locked: bool
    reason: str | None = None
    until: float | None = None


@dataclass(frozen=True, slots=True)
class FailureOutcome:
    """After a failure: the consecutive count, and the new lock if one started."""

    failures: int
    locked_for_s: float | None = None


class Lockout:
    """Failure counters and temporary locks (see the module docstring).

    ``clock`` returns seconds since the epoch (inject one in tests). Every
    method raises :class:`server.broker.base.BrokerError` when the broker fails.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        threshold: int = 5,
        schedule_s: Sequence[int] = (60, 300, 900, 3600),
        max_per_hour: int = 100,
        ip_max_per_hour: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if threshold <= 0 or not schedule_s or min(schedule_s) <= 0:
            raise ValueError("lockout threshold and schedule must be > 0")
        self._broker = broker
        self.threshold = threshold
        self.schedule_s = tuple(schedule_s)
        self.max_per_hour = max_per_hour
        self.ip_max_per_hour = ip_max_per_hour
        self._clock = clock

    async def state(self, account: str, source: str | None) -> LockState:
        """Whether a login for ``account`` from ``source`` must be refused now."""
        raw = await self._broker.get_value(f"acc:lock:{account}")
        if raw is not None:
            until = float(raw.decode())
            if until > self._clock():
                return LockState(True, "account_locked", until)
        hour = await self._broker.get_value(f"acc:hour:{account}")
        if hour is not None and int(hour) >= self.max_per_hour:
            return LockState(True, "hourly_cap")
        if source is not None:
            per_ip = await self._broker.get_value(f"acc:ip:{source}")
            if per_ip is not None and int(per_ip) >= self.ip_max_per_hour:
                return LockState(True, "ip_cap")
        return LockState(False)

    async def failure(self, account: str, source: str | None) -> FailureOutcome:
        """Count a failed attempt; start a lock at each ``threshold``-th in a row."""
        b = self._broker
        await b.incr(f"acc:hour:{account}", 1, HOUR_S)
        if source is not None:
            await b.incr(f"acc:ip:{source}", 1, HOUR_S)
        failures = await b.incr(f"acc:fail:{account}", 1, LEVEL_TTL_S)
        if failures % self.threshold:
            return FailureOutcome(failures)
        level = await b.incr(f"acc:level:{account}", 1, LEVEL_TTL_S)
        duration = float(self.schedule_s[min(level, len(self.schedule_s)) - 1])
        until = self._clock() + duration
        await b.set_value(f"acc:lock:{account}", repr(until).encode(), duration + HOUR_S)
        return FailureOutcome(failures, duration)

    async def was_locked(self, account: str) -> bool:
        """True when the account has been locked since its last success."""
        return await self._broker.get_value(f"acc:level:{account}") is not None

    async def success(self, account: str) -> None:
        """Reset the consecutive count, the lock level and any expired lock."""
        for key in ("fail", "level", "lock"):
            await self._broker.delete_value(f"acc:{key}:{account}")

    async def unlock(self, account: str) -> None:
        """Lift a lock now (admin action); the hourly cap stays."""
        await self.success(account)
