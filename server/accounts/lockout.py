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
  window, capped at ``max_per_hour`` / ``ip_max_per_hour``;
- ``acc:win:<account>`` the current attempt window (a random id, replaced at
  every lock start and success, and at the latest after an hour, so a slot
  lost with a crashed node cannot block the account for longer) and
  ``acc:try:<account>:<window>`` the attempts taken in it.

A lock starts at every ``threshold``-th consecutive failure. While an account
is locked the login answers exactly as for a wrong password.

Concurrency: checking the lock and counting the failure after the password
(or code) was verified are separate round trips, so concurrent guesses could
all pass the check before the first lock appears. Every attempt therefore
takes a slot first (:meth:`Lockout.begin`, one atomic ``incr`` of the
window's counter) and is refused when it is past ``threshold`` or the
account is locked (a refused attempt gives its slot back); a verified step
gives its slot back too (:meth:`Lockout.release`: a right password is not a
failure). So no more than ``threshold`` verifications can run or fail in a
window however many requests arrive at once, on one node or many. A lock
start sets the lock *before* replacing the window, so an attempt that sees
the new window also sees the lock, and one that still sees the old window
finds it full.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from server.broker.base import Broker
from server.security.at_rest import normalise_email

#: Seconds of the fixed windows of the per-account and per-address hourly caps.
HOUR_S = 3600.0
#: Seconds without a failure after which the failure count and the lock level
#: are forgotten (as a success forgets them at once).
LEVEL_TTL_S = 86400.0


def account_key(email: str) -> str:
    """The broker key part for an account: SHA-256 of the normalised email (hex).

    Normalised as the email index is (:func:`normalise_email`), so every
    spelling that finds an account also counts against its one lockout.
    """
    return hashlib.sha256(normalise_email(email).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class LockState:
    """Whether logins are refused now, why (``account_locked``, ``hourly_cap``, ``ip_cap``)."""

    locked: bool
    reason: str | None = None
    until: float | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """A login step's slot: ``state.locked`` means refused (nothing to verify)."""

    state: LockState
    slot: str | None = None


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

    async def begin(self, account: str, source: str | None) -> Attempt:
        """Take a slot for one verification (password, code) before doing it.

        Refused (``state.locked``, the slot given back) when the window's
        ``threshold`` slots are taken (``attempt_limit``) or :meth:`state`
        says locked. An accepted attempt keeps its slot if it fails; call
        :meth:`release` when it succeeds.
        """
        b = self._broker
        window = await self._window(account)
        if window is None:
            return Attempt(LockState(True, "attempt_limit"))
        slot = f"acc:try:{account}:{window}"
        taken = await b.incr(slot, 1, HOUR_S)
        if taken > self.threshold:
            state = LockState(True, "attempt_limit")
        else:
            state = await self.state(account, source)
        if state.locked:
            await b.incr(slot, -1, HOUR_S)
            return Attempt(state)
        return Attempt(state, slot)

    async def release(self, attempt: Attempt) -> None:
        """Give back the slot of an attempt that succeeded or could not be checked.

        (A right password is not a failure; neither is a full hashing queue.)
        """
        if attempt.slot is not None:
            await self._broker.incr(attempt.slot, -1, HOUR_S)

    async def _window(self, account: str) -> str | None:
        key = f"acc:win:{account}"
        for _ in range(3):
            raw = await self._broker.get_value(key)
            if raw is not None:
                return raw.decode()
            fresh = secrets.token_hex(8)
            if await self._broker.set_if_absent(key, fresh.encode(), HOUR_S):
                return fresh
        return None  # replaced faster than we could read it: refuse, the client retries

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
        await b.delete_value(f"acc:win:{account}")  # after the lock: see the module docstring
        return FailureOutcome(failures, duration)

    async def was_locked(self, account: str) -> bool:
        """True when the account has been locked since its last success."""
        return await self._broker.get_value(f"acc:level:{account}") is not None

    async def success(self, account: str) -> None:
        """Reset the consecutive count, the lock level, any lock and the attempt window."""
        for key in ("fail", "level", "lock", "win"):
            await self._broker.delete_value(f"acc:{key}:{account}")

    async def unlock(self, account: str) -> None:
        """Lift a lock now (admin action); the hourly cap stays."""
        await self.success(account)
