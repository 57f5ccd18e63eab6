"""Brute-force throttles: per address and account pair, per account, per address.

Three levels, checked in this order, every counter in the broker
(:class:`server.broker.base.Broker`) so that every node sees the same numbers:

1. **pair** (source address, account): a lock at every ``threshold``-th
   consecutive failure from that address on that account, lasting
   ``schedule_s`` (1, 5, 15, 60 minutes by default; the last repeats). This is
   what a guesser hits; the same user signing in from elsewhere does not.
2. **account** (every address): a lock at every ``account_threshold``-th
   consecutive failure, on the same schedule, and at most ``max_per_hour``
   failures an hour. This stops guessing spread over many addresses; one
   address needs ``account_threshold / threshold`` pair locks to reach it.
3. **address** (every account): gentle. Up to ``ip_free_per_hour`` failures
   an hour cost nothing; past that, password attempts from the address are
   spaced out: one per ``2 ** n`` seconds after the quota's ``n``-th extra
   failure, never more than ``ip_max_delay_s``. Never a lock: users behind a
   shared address (a clinic's NAT, a reverse proxy) wait seconds, not an hour.
   (Second steps, the TOTP code of a login or a re-authentication, are not
   spaced out: reaching them takes the password, and the pair and account
   levels still count them.)

Keys (the account key is a SHA-256 of the normalised email, so unknown emails
are counted alike and no email reaches the broker; a pair key is a SHA-256 of
the address, the account key and the account's epoch, so no address-account
link is kept in clear):

- ``acc:fail:<k>`` / ``acc:level:<k>`` / ``acc:lock:<k>`` consecutive failures,
  locks so far, the lock's end (seconds, from the injected clock) for the
  account; ``acc:pfail:<p>`` / ``acc:plevel:<p>`` / ``acc:plock:<p>`` the same
  for a pair;
- ``acc:hour:<k>`` failures of the account in a fixed one-hour window;
- ``acc:ip:<address>`` failures from the address in a fixed one-hour window,
  ``acc:ipgate:<address>:<delay>:<n>`` the one attempt allowed in the ``n``-th
  period of ``delay`` seconds;
- ``acc:win:<k>`` / ``acc:pwin:<p>`` the current attempt window (a random id,
  replaced at every lock start and success, and at the latest after an hour)
  and ``acc:try:<k>:<w>`` / ``acc:ptry:<p>:<w>`` the attempts taken in it;
- ``acc:epoch:<k>`` replaced by an administrator's unlock, which so forgets
  every pair of the account at once;
- ``acc:nfail:<k>`` / ``acc:nlast:<k>`` / ``acc:nlock:<k>`` the failures on
  the account since its last successful login, the time of the last one and
  of the last lock start (the account's or any pair's): the **lockout
  notice**, taken by the next successful login (:meth:`Lockout.take_notice`)
  and forgotten ``notice_ttl_s`` after the first failure.

Refusals cost no hash: :meth:`Lockout.begin` refuses from the counters alone
(a few broker reads), before anything is looked up or verified. The answer is
the same as for a wrong password; see docs/accounts.md for why answering it
sooner reveals nothing.

Concurrency: checking the lock and counting the failure after the password
(or code) was verified are separate round trips, so concurrent guesses could
all pass the check before the first lock appears. Every attempt therefore
takes a slot first in the pair's and in the account's window (one atomic
``incr`` each) and is refused when either is past its threshold (a refused
attempt gives its slots back); a verified step gives its slots back too
(:meth:`Lockout.release`: a right password is not a failure). So no more than
``threshold`` verifications can fail from one address, nor ``account_threshold``
from all, however many requests arrive at once, on one node or many. A lock
start sets the lock *before* replacing the window, and an attempt checks the
locks *after* taking its slots, so an attempt that sees the new window also
sees the lock, and one that still sees the old window finds it full. The
address level is approximate: attempts already in flight when its quota is
reached are still verified.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from server.broker.base import Broker
from server.security.at_rest import normalise_email

#: Seconds of the fixed windows of the hourly counts.
HOUR_S = 3600.0
#: Seconds without a failure after which the failure count and the lock level
#: are forgotten (as a success forgets them at once).
LEVEL_TTL_S = 86400.0
#: Seconds an administrator's unlock is remembered (longer than any pair key lives).
EPOCH_TTL_S = 2 * LEVEL_TTL_S


def account_key(email: str) -> str:
    """The broker key part for an account: SHA-256 of the normalised email (hex).

    Normalised as the email index is (:func:`normalise_email`), so every
    spelling that finds an account also counts against its one lockout.
    """
    return hashlib.sha256(normalise_email(email).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class LockState:
    """Whether an attempt is refused now, and why.

    Reasons: ``source_locked`` (the pair), ``account_locked``, ``hourly_cap``,
    ``address_delay``, ``attempt_limit`` (a window full of attempts in flight).
    """

    locked: bool
    reason: str | None = None
    until: float | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """A login step's slots: ``state.locked`` means refused (nothing to verify)."""

    state: LockState
    slots: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FailureOutcome:
    """After a failure: the account's consecutive count, and the new lock if one started.

    ``scope`` is ``"account"`` or ``"source"`` (the pair) when a lock started.
    """

    failures: int
    locked_for_s: float | None = None
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """What the owner of an account is told at their next successful login.

    ``at`` (seconds since the epoch) is when the account (or a pair) was last
    locked, or of the last failure when there was no lock; ``failures`` how
    many attempts failed since the previous successful login.
    """

    at: float
    failures: int
    locked: bool


@dataclass(frozen=True, slots=True)
class _Level:
    """One lock level's key prefix (``acc:`` account, ``acc:p`` pair) and threshold."""

    prefix: str
    threshold: int

    def key(self, kind: str, ident: str) -> str:
        return f"{self.prefix}{kind}:{ident}"


class Lockout:
    """The three throttles (see the module docstring).

    ``clock`` returns seconds since the epoch (inject one in tests). Every
    method raises :class:`server.broker.base.BrokerError` when the broker fails.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        threshold: int = 5,
        account_threshold: int = 20,
        schedule_s: Sequence[int] = (60, 300, 900, 3600),
        max_per_hour: int = 100,
        ip_free_per_hour: int = 300,
        ip_max_delay_s: int = 60,
        notice_ttl_s: float = 90 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if min(threshold, account_threshold, ip_max_delay_s) <= 0 or ip_free_per_hour < 0:
            raise ValueError("lockout thresholds and delays must be > 0")
        if not schedule_s or min(schedule_s) <= 0:
            raise ValueError("lockout schedule must be > 0")
        self._broker = broker
        self.threshold = threshold
        self.account_threshold = account_threshold
        self.schedule_s = tuple(schedule_s)
        self.max_per_hour = max_per_hour
        self.ip_free_per_hour = ip_free_per_hour
        self.ip_max_delay_s = ip_max_delay_s
        self.notice_ttl_s = notice_ttl_s
        self._clock = clock
        self._pair = _Level("acc:p", threshold)
        self._account = _Level("acc:", account_threshold)

    async def _pair_key(self, account: str, source: str | None) -> str:
        raw = await self._broker.get_value(f"acc:epoch:{account}")
        epoch = raw.decode() if raw is not None else "0"
        return hashlib.sha256(f"{source or '-'}|{account}|{epoch}".encode()).hexdigest()[:40]

    async def _locked_until(self, level: _Level, ident: str) -> float | None:
        raw = await self._broker.get_value(level.key("lock", ident))
        if raw is not None:
            until = float(raw.decode())
            if until > self._clock():
                return until
        return None

    def _gate(self, source: str, failures: int) -> tuple[str, float] | None:
        """The key and period of the address's current one-attempt period, if it has one."""
        extra = failures - self.ip_free_per_hour
        if extra < 0:
            return None
        delay = float(min(self.ip_max_delay_s, 2 ** min(extra, 30)))
        period = int(self._clock() // delay)
        return f"acc:ipgate:{source}:{delay:g}:{period}", delay

    async def _address_gate(self, source: str | None) -> tuple[str, float] | None:
        if source is None:
            return None
        raw = await self._broker.get_value(f"acc:ip:{source}")
        return self._gate(source, int(raw) if raw is not None else 0)

    async def state(
        self, account: str, source: str | None, *, first_step: bool = True
    ) -> LockState:
        """Whether an attempt on ``account`` from ``source`` is refused now (reads only).

        A few broker reads: call it before anything costly, then :meth:`begin`
        (which checks again, atomically with taking the slots).
        """
        pair = await self._pair_key(account, source)
        return await self._state(account, pair, source if first_step else None)

    async def _state(self, account: str, pair: str, source: str | None) -> LockState:
        """The refusal, if any, of an attempt; ``source`` None skips the address level."""
        until = await self._locked_until(self._pair, pair)
        if until is not None:
            return LockState(True, "source_locked", until)
        until = await self._locked_until(self._account, account)
        if until is not None:
            return LockState(True, "account_locked", until)
        hour = await self._broker.get_value(f"acc:hour:{account}")
        if hour is not None and int(hour) >= self.max_per_hour:
            return LockState(True, "hourly_cap")
        gate = await self._address_gate(source)
        if gate is not None and await self._broker.get_value(gate[0]) is not None:
            return LockState(True, "address_delay")
        return LockState(False)

    async def begin(self, account: str, source: str | None, *, first_step: bool = True) -> Attempt:
        """Take the slots for one verification (password, code) before doing it.

        Refused (``state.locked``, nothing kept) when :meth:`state` says so,
        when the pair's or the account's window is full (``attempt_limit``), or,
        for a ``first_step`` (a password login), when the address has had its
        one attempt of the period (``address_delay``). An accepted attempt
        keeps its slots if it fails; call :meth:`release` when it succeeds or
        cannot be checked.
        """
        pair = await self._pair_key(account, source)
        gated = source if first_step else None
        state = await self._state(account, pair, gated)
        if state.locked:  # decided from the counters alone: no slot, no hash
            return Attempt(state)
        taken: list[str] = []
        for level, ident in ((self._pair, pair), (self._account, account)):
            slot = await self._take(level, ident)
            if slot is None:
                await self.release(Attempt(state, tuple(taken)))
                return Attempt(LockState(True, "attempt_limit"))
            taken.append(slot)
        attempt = Attempt(state, tuple(taken))
        # after the slots: a lock that started meanwhile is seen (module docstring)
        for level, ident, reason in (
            (self._pair, pair, "source_locked"),
            (self._account, account, "account_locked"),
        ):
            until = await self._locked_until(level, ident)
            if until is not None:
                await self.release(attempt)
                return Attempt(LockState(True, reason, until))
        gate = await self._address_gate(gated)
        if gate is not None and not await self._broker.set_if_absent(gate[0], b"1", gate[1]):
            await self.release(attempt)
            return Attempt(LockState(True, "address_delay"))
        return attempt

    async def _take(self, level: _Level, ident: str) -> str | None:
        """A slot in the level's current window, or None when the window is full."""
        window = await self._window(level, ident)
        if window is None:
            return None
        slot = f"{level.key('try', ident)}:{window}"
        if await self._broker.incr(slot, 1, HOUR_S) > level.threshold:
            await self._broker.incr(slot, -1, HOUR_S)
            return None
        return slot

    async def release(self, attempt: Attempt) -> None:
        """Give back the slots of an attempt that succeeded or could not be checked.

        (A right password is not a failure; neither is a full hashing queue.)
        """
        for slot in attempt.slots:
            await self._broker.incr(slot, -1, HOUR_S)

    async def _window(self, level: _Level, ident: str) -> str | None:
        key = level.key("win", ident)
        for _ in range(3):
            raw = await self._broker.get_value(key)
            if raw is not None:
                return raw.decode()
            fresh = secrets.token_hex(8)
            if await self._broker.set_if_absent(key, fresh.encode(), HOUR_S):
                return fresh
        return None  # replaced faster than we could read it: refuse, the client retries

    async def _fail_level(self, level: _Level, ident: str) -> tuple[int, float | None]:
        b = self._broker
        failures = await b.incr(level.key("fail", ident), 1, LEVEL_TTL_S)
        if failures % level.threshold:
            return failures, None
        locks = await b.incr(level.key("level", ident), 1, LEVEL_TTL_S)
        duration = float(self.schedule_s[min(locks, len(self.schedule_s)) - 1])
        until = self._clock() + duration
        await b.set_value(level.key("lock", ident), repr(until).encode(), duration + HOUR_S)
        await b.delete_value(level.key("win", ident))  # after the lock: module docstring
        return failures, duration

    async def failure(self, account: str, source: str | None) -> FailureOutcome:
        """Count a failed attempt at every level; start the locks that are due."""
        b = self._broker
        await b.incr(f"acc:hour:{account}", 1, HOUR_S)
        if source is not None:
            await b.incr(f"acc:ip:{source}", 1, HOUR_S)
        _, pair_lock = await self._fail_level(self._pair, await self._pair_key(account, source))
        failures, account_lock = await self._fail_level(self._account, account)
        now, ttl = repr(self._clock()).encode(), self.notice_ttl_s
        await b.incr(f"acc:nfail:{account}", 1, ttl)
        await b.set_value(f"acc:nlast:{account}", now, ttl)
        if pair_lock is not None or account_lock is not None:
            await b.set_value(f"acc:nlock:{account}", now, ttl)
        if account_lock is not None and account_lock >= (pair_lock or 0):
            return FailureOutcome(failures, account_lock, "account")
        if pair_lock is not None:
            return FailureOutcome(failures, pair_lock, "source")
        return FailureOutcome(failures)

    async def was_locked(self, account: str, source: str | None) -> bool:
        """True when the account, or this pair, has been locked since its last success."""
        pair = await self._pair_key(account, source)
        for key in (self._account.key("level", account), self._pair.key("level", pair)):
            if await self._broker.get_value(key) is not None:
                return True
        return False

    async def take_notice(self, account: str) -> Notice | None:
        """The lockout notice of ``account``, forgotten once read (a successful login).

        A notice is due when the account or one of its pairs was locked, or
        at least ``threshold`` attempts failed, since the previous successful
        login; None otherwise (a typo or two is not worth a notice).
        """
        keys = [f"acc:{kind}:{account}" for kind in ("nfail", "nlast", "nlock")]
        found = await self._broker.get_values(keys)
        raw_fail, raw_last, raw_lock = (found.get(k) for k in keys)
        if raw_fail is None and raw_lock is None:
            return None
        for key in keys:
            await self._broker.delete_value(key)
        failures = int(raw_fail) if raw_fail is not None else 0
        if raw_lock is None and failures < self.threshold:
            return None
        when = raw_lock if raw_lock is not None else raw_last
        at = float(when.decode()) if when is not None else self._clock()
        return Notice(at, failures, raw_lock is not None)

    async def accounts_locked(self, accounts: Sequence[str]) -> dict[str, bool]:
        """Whether each account is locked for every address now: its own lock or its
        hourly cap (pair locks are one address's, not the account's). Two batched
        broker reads."""
        locks = await self._broker.get_values([self._account.key("lock", a) for a in accounts])
        hours = await self._broker.get_values([f"acc:hour:{a}" for a in accounts])
        now = self._clock()
        out = {}
        for a in accounts:
            until = locks.get(self._account.key("lock", a))
            hour = hours.get(f"acc:hour:{a}")
            out[a] = (until is not None and float(until.decode()) > now) or (
                hour is not None and int(hour) >= self.max_per_hour
            )
        return out

    async def _reset(self, level: _Level, ident: str) -> None:
        for kind in ("fail", "level", "lock", "win"):
            await self._broker.delete_value(level.key(kind, ident))

    async def success(self, account: str, source: str | None) -> None:
        """Reset the account's and this pair's counts, levels, locks and windows.

        Other addresses' pairs stay as they are (a guesser elsewhere is not
        forgiven by the owner's success); so do the hourly counts.
        """
        await self._reset(self._pair, await self._pair_key(account, source))
        await self._reset(self._account, account)

    async def unlock(self, account: str) -> None:
        """Lift every lock of the account now (admin action): its own and every pair's.

        The hourly counts stay.
        """
        await self._reset(self._account, account)
        await self._broker.set_value(
            f"acc:epoch:{account}", secrets.token_hex(8).encode(), EPOCH_TTL_S
        )
