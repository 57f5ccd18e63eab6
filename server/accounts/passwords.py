"""Password policy and Argon2id hashing in a bounded thread pool.

Policy (defaults from :class:`server.config.Settings`, see docs/accounts.md for
where it departs from NIST SP 800-63B): at least ``min_length`` characters
(Unicode code points after NFKC normalisation), at most ``max_length`` (never
truncated), at least ``min_classes`` of four classes (lower-case, upper-case,
digit, other), not one of the common passwords shipped by ``zxcvbn`` (30,000;
compared case-insensitively, also with leading/trailing digits and symbols
stripped), and containing none of the context words (the user's names, the
local part and domain of their email, the product name).

Hashing: :class:`PasswordHasher` runs argon2-cffi in a ``ThreadPoolExecutor`` of
``threads`` threads, with at most ``queue_max`` hashes queued or running;
past that, :class:`HasherBusyError` (answered 429 ``rate_limited`` with
``Retry-After``), so a login flood cannot grow an unbounded queue. A caller
that has work to do before its hash (the login looks the user up first) takes
its place with :meth:`PasswordHasher.slot` *before* that work, so a refusal
costs nothing and the work done is bounded by ``queue_max`` too. Unknown users
get a dummy verification of the same cost, so timing does not reveal which
emails exist.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import secrets
import time
import unicodedata
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

T = TypeVar("T")
PRODUCT_WORDS = ("medhub",)
#: OWASP Password Storage Cheat Sheet, Argon2id first profile.
OWASP_MIN_MEMORY_KIB = 19456
OWASP_MIN_TIME_COST = 2


class PasswordRejectedError(ValueError):
    """A new password breaks the policy; ``code`` says which rule (stable)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class HasherBusyError(RuntimeError):
    """Too many password hashes are queued: answer 429 with ``retry_after_s`` (seconds, >= 1)."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("password hashing queue is full")
        self.retry_after_s = retry_after_s


@functools.cache
def common_passwords() -> frozenset[str]:
    """The 30,000 most common passwords of zxcvbn's frequency list (lower-case)."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS  # type: ignore[import-untyped]

    return frozenset(word.lower() for word in FREQUENCY_LISTS["passwords"])


def normalise(password: str) -> str:
    """NFKC form: the same password typed on two keyboards hashes the same."""
    return unicodedata.normalize("NFKC", password)


def char_classes(password: str) -> int:
    """How many of lower-case, upper-case, digit and other the password uses."""
    lower = any(c.islower() for c in password)
    upper = any(c.isupper() for c in password)
    digit = any(c.isdigit() for c in password)
    other = any(not (c.islower() or c.isupper() or c.isdigit()) for c in password)
    return lower + upper + digit + other


def context_words(name: str, email: str) -> list[str]:
    """Words a password must not contain: name parts, email parts, product name."""
    local, _, domain = email.lower().partition("@")
    words = re.split(r"[\W_]+", name.lower()) + re.split(r"[\W_]+", local)
    words.append(domain.split(".")[0])
    words.extend(PRODUCT_WORDS)
    return sorted({w for w in words if len(w) >= 3})


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    """The rules a new password must pass (see the module docstring)."""

    min_length: int = 12
    max_length: int = 128
    min_classes: int = 4

    def check(self, password: str, *, context: Iterable[str] = ()) -> str:
        """Return the normalised password, or raise :class:`PasswordRejectedError`.

        Codes: ``password_too_short``, ``password_too_long``,
        ``password_too_simple`` (classes), ``password_common``,
        ``password_contains_context``.
        """
        pw = normalise(password)
        if len(pw) < self.min_length:
            raise PasswordRejectedError("password_too_short")
        if len(pw) > self.max_length:
            raise PasswordRejectedError("password_too_long")
        if char_classes(pw) < self.min_classes:
            raise PasswordRejectedError("password_too_simple")
        lowered = pw.lower()
        core = re.sub(r"^[\W\d_]+|[\W\d_]+$", "", lowered)
        common = common_passwords()
        if lowered in common or core in common:
            raise PasswordRejectedError("password_common")
        if any(word in lowered for word in context):
            raise PasswordRejectedError("password_contains_context")
        return pw


#: Seconds one hash is assumed to take before the first one is measured.
INITIAL_HASH_S = 0.05
#: Longest ``Retry-After`` a full queue answers (seconds).
MAX_RETRY_AFTER_S = 60


class HashSlot:
    """One place in the hashing queue, taken before the work that leads to a hash.

    Use it once (:meth:`verify` or :meth:`hash`), then :meth:`release` it (or use
    it as a context manager); releasing twice is harmless.
    """

    def __init__(self, hasher: PasswordHasher) -> None:
        self._hasher: PasswordHasher | None = hasher

    async def verify(self, stored: str | None, password: str) -> bool:
        """As :meth:`PasswordHasher.verify`, in this slot (never busy)."""
        assert self._hasher is not None, "slot already released"
        return await self._hasher._execute(self._hasher._verify_job(stored, password))

    async def hash(self, password: str) -> str:
        """As :meth:`PasswordHasher.hash`, in this slot (never busy)."""
        assert self._hasher is not None, "slot already released"
        return await self._hasher._execute(functools.partial(self._hasher._hash_sync, password))

    def release(self) -> None:
        """Give the place back (idempotent)."""
        if self._hasher is not None:
            self._hasher._in_flight -= 1
            self._hasher = None

    def __enter__(self) -> HashSlot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class PasswordHasher:
    """Argon2id hashing and verification off the event loop.

    ``time_cost`` passes, ``memory_kib`` KiB, ``parallelism`` lanes; ``threads``
    worker threads; ``queue_max`` hashes queued or running (or reserved with
    :meth:`slot`) before :class:`HasherBusyError`. Call :meth:`close` at shutdown.
    """

    def __init__(
        self,
        *,
        time_cost: int,
        memory_kib: int,
        parallelism: int,
        threads: int = 2,
        queue_max: int = 64,
    ) -> None:
        if min(time_cost, memory_kib, parallelism, threads, queue_max) <= 0:
            raise ValueError("argon2 parameters and pool sizes must be > 0")
        self._ph = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2")
        self._threads = threads
        self._slots = queue_max
        self._in_flight = 0
        self._mean_s = INITIAL_HASH_S
        self._dummy: str | None = None

    @property
    def parameters(self) -> argon2.Parameters:
        """The parameters new hashes get."""
        return argon2.extract_parameters(self._ph.hash("x"))

    @property
    def in_flight(self) -> int:
        """Hashes queued, running or reserved now."""
        return self._in_flight

    def retry_after_s(self) -> int:
        """Seconds until the queue has drained at the measured hash rate (1 to 60)."""
        drain = self._in_flight * self._mean_s / self._threads
        return min(MAX_RETRY_AFTER_S, max(1, math.ceil(drain)))

    def slot(self) -> HashSlot:
        """Take a place in the queue now; raises :class:`HasherBusyError` when it is full.

        Nothing waits: the caller answers 429 at once (``retry_after_s``).
        """
        if self._in_flight >= self._slots:
            raise HasherBusyError(self.retry_after_s())
        self._in_flight += 1
        return HashSlot(self)

    def _timed(self, func: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return func()
        finally:  # runs in a worker thread: one float store, no lock needed
            self._mean_s = 0.8 * self._mean_s + 0.2 * (time.perf_counter() - start)

    async def _execute(self, func: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(self._timed, func))

    async def _run(self, func: Callable[[], T]) -> T:
        with self.slot():
            return await self._execute(func)

    def _hash_sync(self, password: str) -> str:
        return self._ph.hash(normalise(password))

    async def hash(self, password: str) -> str:
        """The PHC string of ``password`` (normalised NFKC). Raises HasherBusyError."""
        return await self._run(functools.partial(self._hash_sync, password))

    def _verify_sync(self, stored: str | None, password: str) -> bool:
        if stored is None:  # the dummy: the same work as a real verification
            if self._dummy is None:
                self._dummy = self._ph.hash(secrets.token_urlsafe(16))
            stored, password = self._dummy, "x"
        try:
            return self._ph.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _verify_job(self, stored: str | None, password: str) -> Callable[[], bool]:
        clean = password if stored is None else normalise(password)
        return functools.partial(self._verify_sync, stored, clean)

    async def verify(self, stored: str | None, password: str) -> bool:
        """True when ``password`` matches ``stored``; a dummy of equal cost when None.

        Never raises for a wrong password or a malformed hash (False); raises
        :class:`HasherBusyError` when the queue is full.
        """
        job = self._verify_job(stored, password)
        ok = await self._run(job)
        return ok and stored is not None

    def needs_rehash(self, stored: str) -> bool:
        """True when ``stored`` was hashed with other parameters (rehash at login)."""
        try:
            return self._ph.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    def close(self) -> None:
        """Stop the worker threads (waits for running hashes)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
