"""Login, MFA, sessions and credential changes: the accounts use cases.

(Enrolment is :mod:`server.accounts.enrolment`, built on this service.)

Every outcome that matters goes to the audit trail (login, login_failed,
mfa_failed, lockout, unlock, logout, password_change, mfa_enroll,
session_revoke) with pseudonymous ids only. Methods raise
:class:`server.accounts.errors.ApiError` with a stable code; a full password
hashing queue raises :class:`server.accounts.passwords.HasherBusyError`
(answered 429 ``rate_limited``), a broker failure
:class:`server.broker.base.BrokerError` (``unavailable``).

Every password check asks the throttles first (a few broker reads,
:meth:`server.accounts.lockout.Lockout.state`): an attempt they refuse is
answered at once, without looking the user up or hashing anything. An
attempt they accept takes its place in the hashing queue
(:meth:`PasswordHasher.slot`) before anything else, so a flood is shed with
429 before it costs a counter, a query or a queued hash; then it takes its
throttle slots (:meth:`Lockout.begin`) and is looked up and verified.

Login is two steps: :meth:`AccountService.login_password` gives a short-lived
MFA challenge (kept in the broker, so any node can finish the login);
:meth:`AccountService.login_mfa` spends it for a session. Only the MFA steps
accept a challenge. After an administrator reset an account's MFA, the
password step answers an enrolment challenge and the TOTP data instead.

Each login outcome is one log line (:func:`log_login`: step, outcome code,
reason code, pseudonymous user id); a successful login takes the account's
lockout notice (:meth:`server.accounts.lockout.Lockout.take_notice`), which
the session's answer carries and the ``login`` audit entry records.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from server.accounts import totp
from server.accounts.authcache import AuthCache
from server.accounts.challenges import Challenges
from server.accounts.errors import ApiError
from server.accounts.lockout import Attempt, Lockout, LockState, Notice, account_key
from server.accounts.mfa import Enrolment, TotpVault
from server.accounts.passwords import (
    HasherBusyError,
    HashSlot,
    PasswordHasher,
    PasswordPolicy,
    PasswordRejectedError,
    context_words,
)
from server.accounts.revocation import Revocations
from server.accounts.sessions import (
    TOUCH_EVERY_US,
    SessionRow,
    SessionStore,
    token_hash,
)
from server.accounts.store import AccountStore, User
from server.audit.events import Action, AuditEvent, Result
from server.broker.base import Broker
from server.logs import context_id
from server.policy import STAFF_ROLES
from server.security.crypto import Keyring

log = logging.getLogger(__name__)

RESTRICTED_PASSWORD = "password_expired"  # noqa: S105 (a restriction name)
#: ``users.password_changed_us`` of an account whose password change an admin
#: forced: its next login gets a ``password_expired`` session, whatever its role.
PASSWORD_RESET_FORCED = 0
T = TypeVar("T")


class Auditor(Protocol):
    """What the service needs of the audit trail (``AuditTrail.record``)."""

    def record(self, event: AuditEvent) -> None:
        """Queue ``event``; must not block."""


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated request: its session and user."""

    session: SessionRow
    user: User
    token: str


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A new session: the token (shown once), its id, and any restriction."""

    token: str
    session: SessionRow
    user: User
    recovery_codes: list[str] | None = None
    notices: list[Notice] = dataclasses.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PasswordStep:
    """A right password: a challenge for ``/login/mfa``, or, when an admin reset the
    account's MFA, an enrolment challenge for ``/mfa/enrol`` with the TOTP data."""

    challenge: str
    enrolment: Enrolment | None = None


def log_login(step: str, outcome: str, user: User | None = None, reason: str | None = None) -> None:
    """One log line per login outcome: the step, a stable outcome code, the reason
    code and the pseudonymous user id when known (never an email, code or password)."""
    log.info(
        "login",
        extra={"step": step, "outcome": outcome, "reason": reason, "user": user and user.id},
    )


class AccountService:
    """The login and session use cases; see the module docstring."""

    def __init__(
        self,
        *,
        store: AccountStore,
        sessions: SessionStore,
        broker: Broker,
        hasher: PasswordHasher,
        policy: PasswordPolicy,
        lockout: Lockout,
        keyring: Keyring,
        audit: Auditor,
        revocations: Revocations,
        cache: AuthCache[tuple[SessionRow, User]],
        challenge_ttl_s: float,
        reauth_window_s: float,
        password_max_age_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.sessions, self.broker = store, sessions, broker
        self.hasher, self.policy, self.lockout = hasher, policy, lockout
        self.keyring, self.audit, self.revocations = keyring, audit, revocations
        self.vault = TotpVault(keyring, store)
        self.cache = cache
        self.challenges = Challenges(broker, challenge_ttl_s)
        self.challenge_ttl_s = challenge_ttl_s
        self.reauth_window_us = int(reauth_window_s * 1e6)
        self.password_max_age_us = int(password_max_age_s * 1e6)
        self.clock = clock

    def now_us(self) -> int:
        """The injected clock, in microseconds."""
        return int(self.clock() * 1_000_000)

    def event(
        self,
        action: Action,
        user: User | None,
        result: Result = Result.OK,
        *,
        reason: str | None = None,
        source: str | None = None,
        target: tuple[str, str | None] | None = None,
    ) -> None:
        """Audit ``action`` by ``user`` (None: not known), joined to the request's log lines."""
        self.audit.record(
            AuditEvent(
                action=action,
                result=result,
                reason=reason,
                source=source,
                actor=user.id if user else None,
                role=user.role if user else None,
                org=user.org_id if user else None,
                target_type=target[0] if target else None,
                target_id=target[1] if target else None,
                request_id=context_id.get(),
            )
        )

    async def set_fields(self, user_id: str, **values: object) -> None:
        """Change the user's own fields (a version row names them as its author)."""
        await self.store.update_user(user_id, by=user_id, now_us=self.now_us(), **values)
        self.user_written(user_id)

    def user_written(self, user_id: str) -> None:
        """A user row changed here: this process reads it afresh at once (the other
        nodes drop it from their caches when they read the access change log)."""
        self.cache.forget_user(user_id)
        if self.revocations.watch is not None:
            self.revocations.watch.poke()

    async def _set_session(self, caller: Caller, **values: object) -> None:
        await self.sessions.update(caller.session.id, **values)
        self.cache.forget_session(caller.user.id, caller.session.id)

    # -- challenges ------------------------------------------------------------------
    async def challenge(self, token: str, purpose: str) -> tuple[User, bytes | None]:
        """The user of a live ``purpose`` challenge (not disabled) and its invitation
        digest; raises ``challenge_invalid``."""
        data = await self.challenges.read(token, purpose)
        user = await self.store.get_user(data.user_id) if data is not None else None
        if data is None or user is None or user.status == "disabled":
            raise ApiError("challenge_invalid")
        return user, data.invitation

    async def spend_challenge(self, token: str) -> None:
        """Spend a challenge (atomically: once only); raises ``challenge_invalid``."""
        if not await self.challenges.spend(token):
            raise ApiError("challenge_invalid")

    async def pending_secret(self, user: User, **also: object) -> str:
        """The account's pending TOTP secret (:meth:`TotpVault.pending`), stored with
        the columns ``also`` when new."""
        secret, values = self.vault.pending(user)
        if also or values:
            await self.set_fields(user.id, **also, **values)
        return secret

    # -- login -------------------------------------------------------------------------
    def _current(self, found: tuple[SessionRow, User], now_us: int) -> bool:
        return self.sessions.valid(found[0], now_us) and self._usable(found[1], now_us)

    def _usable(self, user: User | None, now_us: int) -> bool:
        return (
            user is not None
            and user.status == "active"
            and user.totp_secret is not None
            and (user.expires_us is None or user.expires_us > now_us)
        )

    def _enrolment_due(self, user: User, now_us: int) -> bool:
        """An active account whose MFA an admin reset: its password leads to enrolment."""
        return (
            user.status == "active"
            and user.totp_secret is None
            and user.password_hash is not None
            and (user.expires_us is None or user.expires_us > now_us)
        )

    async def fail(
        self, user: User | None, acct: str, source: str | None, action: Action, reason: str
    ) -> None:
        """Count a failed verification against the lockout and audit it (and a lock start)."""
        outcome = await self.lockout.failure(acct, source)
        self.event(action, user, Result.FAILED, reason=reason, source=source)
        if outcome.locked_for_s is not None:
            why = "too_many_failures" if outcome.scope == "account" else "too_many_from_source"
            self.event(Action.LOCKOUT, user, Result.DENIED, reason=why, source=source)

    def refused(
        self, action: Action, user: User | None, state: LockState, source: str | None
    ) -> None:
        """Audit an attempt the throttles refused (nothing was verified)."""
        self.event(action, user, Result.DENIED, reason=state.reason or "locked", source=source)

    async def login_password(self, email: str, password: str, source: str | None) -> PasswordStep:
        """Check the password; return an MFA challenge (or, after an MFA reset, enrolment).

        Raises ``auth_failed`` alike for an unknown email, a wrong password, a
        locked, disabled, expired or unfinished account, or an attempt the
        throttles refuse (answered at once: no lookup, no hash). Raises
        :class:`HasherBusyError` (429) when the hashing queue is full, before
        the user is looked up; nothing is counted then.
        """
        acct, now_us = account_key(email), self.now_us()
        state = await self.lockout.state(acct, source)
        if state.locked:  # decided by the counters: no slot, no lookup, no hash
            self.refused(Action.LOGIN_FAILED, None, state, source)
            log_login("password", "refused", reason=state.reason)
            raise ApiError("auth_failed")
        try:
            slot_cm = self.hasher.slot()  # HasherBusyError (429) before anything is counted
        except HasherBusyError:
            log_login("password", "busy")
            raise
        with slot_cm as slot:
            attempt = await self.lockout.begin(acct, source)  # counted first: see lockout.py
            if attempt.state.locked:
                self.refused(Action.LOGIN_FAILED, None, attempt.state, source)
                log_login("password", "refused", reason=attempt.state.reason)
                raise ApiError("auth_failed")
            user = await self.checked(attempt, self.store.user_by_email(email))
            ok = await self.checked(
                attempt, slot.verify(user.password_hash if user else None, password)
            )
            enrol = ok and user is not None and self._enrolment_due(user, now_us)
            if not ok or user is None or not (enrol or self._usable(user, now_us)):
                reason = "bad_password" if not ok else "account_unusable"
                await self.fail(user, acct, source, Action.LOGIN_FAILED, reason)
                log_login("password", "failed", user, reason)
                raise ApiError("auth_failed")
            await self.lockout.release(attempt)  # a right password is not a failure
            if user.password_hash and self.hasher.needs_rehash(user.password_hash):
                await self.set_fields(user.id, password_hash=await slot.hash(password))
        if enrol:
            secret = await self.pending_secret(user)
            log_login("password", "enrol", user)
            challenge = await self.challenges.new(user.id, "enrol")
            return PasswordStep(challenge, await self.vault.enrolment(user, secret))
        log_login("password", "challenge", user)
        return PasswordStep(await self.challenges.new(user.id, "login"))

    async def checked(self, attempt: Attempt, check: Awaitable[T]) -> T:
        """Await a lookup or verification; give the attempt's slots back if it raises."""
        try:
            return await check
        except BaseException:
            await self.lockout.release(attempt)
            raise

    async def _reauth_ok(self, user: User, password: str, code: str, slot: HashSlot) -> bool:
        if not await slot.verify(user.password_hash, password):
            return False
        return await self.check_code(user, code, None)

    async def check_code(self, user: User, code: str | None, recovery: str | None) -> bool:
        """Accept a TOTP code (once only, atomically) or a recovery code (once only)."""
        if code is not None and user.totp_secret is not None:
            secret = self.vault.open(user.id, user.totp_secret)
            step = totp.match_step(secret, code, self.clock(), user.totp_last_step)
            return step is not None and await self.store.accept_totp_step(user.id, step)
        if recovery is not None:
            return await self.store.use_recovery_code(
                user.id, totp.recovery_hash(recovery), self.now_us()
            )
        return False

    async def login_mfa(
        self, challenge: str, code: str | None, recovery: str | None, source: str | None
    ) -> LoginResult:
        """Spend a login challenge with a TOTP or recovery code; return a new session.

        Raises ``challenge_invalid`` (unknown or expired challenge) or
        ``mfa_failed`` (wrong, replayed or expired code, or the account locked).
        The session carries a lockout notice when the account was locked, or
        saw many failures, since its previous successful login.
        """
        try:
            user, _ = await self.challenge(challenge, "login")
        except ApiError:
            log_login("mfa", "challenge_invalid")
            raise
        acct = account_key(user.email)
        attempt = await self.lockout.begin(acct, source, first_step=False)  # see lockout.py
        if attempt.state.locked:
            self.refused(Action.MFA_FAILED, user, attempt.state, source)
            log_login("mfa", "refused", user, attempt.state.reason)
            raise ApiError("mfa_failed")
        if not await self.checked(attempt, self.check_code(user, code, recovery)):
            await self.fail(user, acct, source, Action.MFA_FAILED, "bad_code")
            log_login("mfa", "failed", user, "bad_code")
            raise ApiError("mfa_failed")
        await self.lockout.release(attempt)
        await self.spend_challenge(challenge)
        notice = await self.succeeded(user, acct, source)
        log_login("mfa", "ok", user, "recovery_code" if code is None else None)
        return await self.open_session(user, source, notice=notice)

    async def succeeded(self, user: User, acct: str, source: str | None) -> Notice | None:
        """A login completed: take its lockout notice, forget the failures and locks."""
        if await self.lockout.was_locked(acct, source):
            self.event(Action.UNLOCK, user, reason="login_after_lock", source=source)
        notice = await self.lockout.take_notice(acct)
        await self.lockout.success(acct, source)
        return notice

    async def open_session(
        self,
        user: User,
        source: str | None,
        recovery_codes: list[str] | None = None,
        notice: Notice | None = None,
    ) -> LoginResult:
        """A new session for ``user`` (restricted when their password expired or an admin
        forced its change); audited ``login`` (reason ``lockout_notice`` when it carries
        the lockout notice: the audit trail records that the owner was told)."""
        now_us = self.now_us()
        changed = user.password_changed_us
        forced = changed == PASSWORD_RESET_FORCED
        age = now_us - (changed or now_us)
        expired = forced or (user.role in STAFF_ROLES and age > self.password_max_age_us)
        restricted = RESTRICTED_PASSWORD if expired else None
        token, row = await self.sessions.create(
            user.id, now_us, source=source, restricted=restricted
        )
        reason = "lockout_notice" if notice is not None else None
        self.event(Action.LOGIN, user, reason=reason, source=source, target=("session", row.id))
        notices = [notice] if notice is not None else []
        return LoginResult(token, row, user, recovery_codes, notices)

    def check_policy(self, user: User, password: str) -> str:
        """The password, normalised, if the policy accepts it; raises a ``password_*`` code."""
        try:
            return self.policy.check(password, context=context_words(user.name, user.email))
        except PasswordRejectedError as exc:
            raise ApiError(exc.code) from exc

    # -- sessions --------------------------------------------------------------------------
    async def authenticate(self, token: str) -> Caller:
        """The caller of a session token; raises ``unauthenticated``.

        One cached lookup (:mod:`server.accounts.authcache`): a dictionary read
        when cached, else one query joining the session and its user.
        """
        key = token_hash(token)
        return await self._caller(key, token, lambda: self.sessions.with_user(token=token))

    async def session_caller(self, session_id: str) -> Caller:
        """The caller of a session id (a spent WebSocket ticket); raises ``unauthenticated``.

        The same checks as :meth:`authenticate`: the session valid, its user
        usable (active, enrolled, a guest account not past its end).
        """
        key = b"id:" + session_id.encode()
        return await self._caller(key, "", lambda: self.sessions.with_user(session_id=session_id))

    async def _caller(
        self,
        key: bytes,
        token: str,
        load: Callable[[], Awaitable[tuple[SessionRow, Any] | None]],
    ) -> Caller:
        now_us = self.now_us()
        cached = self.cache.get(key)
        if cached is not None and not self._current(cached, now_us):
            # the copy may be older than the database (another node or the socket
            # keeper used the session since): never refuse on a cached copy alone
            self.cache.forget_session(cached[1].id, cached[0].id)
            cached = None
        if cached is None:
            found = await load()
            if found is None:
                raise ApiError("unauthenticated")
            cached = (found[0], self.store.user_from_row(found[1]))
            if not self._current(cached, now_us):
                raise ApiError("unauthenticated")
            self.cache.put(key, cached, cached[1].id, cached[0].id)
        session, user = cached
        if now_us - session.last_seen_us >= TOUCH_EVERY_US:  # at most once a minute
            await self.sessions.touch(session.id, now_us)
            session = dataclasses.replace(session, last_seen_us=now_us)
            self.cache.put(key, (session, user), user.id, session.id)
        return Caller(session, user, token)

    async def revoke(
        self,
        caller: Caller,
        *,
        only: str | None = None,
        keep: str | None = None,
        reason: str = "user_request",
        source: str | None = None,
    ) -> list[str]:
        """Revoke sessions of the caller's user and close their sockets on every node."""
        ids = await self.sessions.revoke(caller.user.id, self.now_us(), only=only, keep=keep)
        for sid in ids:
            self.event(
                Action.SESSION_REVOKE,
                caller.user,
                reason=reason,
                source=source,
                target=("session", sid),
            )
        await self.revocations.sessions_revoked(ids)
        return ids

    async def logout(self, caller: Caller, source: str | None) -> None:
        """End the caller's session (and its sockets)."""
        await self.sessions.revoke(caller.user.id, self.now_us(), only=caller.session.id)
        self.event(Action.LOGOUT, caller.user, source=source, target=("session", caller.session.id))
        await self.revocations.sessions_revoked([caller.session.id])

    async def ws_ticket(self, caller: Caller, ttl_s: float) -> str:
        """A single-use WebSocket ticket for the caller's session (broker, ``ttl_s``)."""
        return await self.challenges.new_ticket(caller.session.id, ttl_s)

    async def take_ticket(self, ticket: str) -> str | None:
        """The session id of a ticket, spent atomically; None if unknown, used or expired."""
        return await self.challenges.take_ticket(ticket)

    # -- re-authentication and credential changes ------------------------------------
    async def reauthenticate(
        self, caller: Caller, password: str, code: str, source: str | None
    ) -> None:
        """Confirm password and TOTP: sensitive changes are allowed for ``reauth_window_s``.

        Failures count towards the lockout. Raises ``auth_failed`` (also at
        once when the throttles refuse) or :class:`HasherBusyError` (429).
        """
        acct = account_key(caller.user.email)
        state = await self.lockout.state(acct, source, first_step=False)
        if state.locked:  # decided by the counters: no slot, no hash
            self.refused(Action.LOGIN_FAILED, caller.user, state, source)
            raise ApiError("auth_failed")
        with self.hasher.slot() as slot:  # HasherBusyError (429) before anything is counted
            attempt = await self.lockout.begin(acct, source, first_step=False)  # see lockout.py
            if attempt.state.locked:
                self.refused(Action.LOGIN_FAILED, caller.user, attempt.state, source)
                raise ApiError("auth_failed")
            ok = await self.checked(attempt, self._reauth_ok(caller.user, password, code, slot))
        if not ok:
            await self.fail(caller.user, acct, source, Action.LOGIN_FAILED, "reauth_failed")
            raise ApiError("auth_failed")
        await self.lockout.release(attempt)
        await self._set_session(caller, auth_us=self.now_us())

    def require_recent_auth(self, caller: Caller) -> None:
        """Raise ``reauth_required`` unless password + TOTP were given recently."""
        if self.now_us() - caller.session.auth_us > self.reauth_window_us:
            raise ApiError("reauth_required")

    async def change_password(self, caller: Caller, new: str, source: str | None) -> None:
        """Set a new password (recent re-authentication needed); revokes other sessions.

        Raises ``reauth_required``, ``password_reused`` or a ``password_*`` code.
        """
        self.require_recent_auth(caller)
        clean = self.check_policy(caller.user, new)
        with self.hasher.slot() as slot:
            if await slot.verify(caller.user.password_hash, clean):
                raise ApiError("password_reused")
            hashed = await slot.hash(clean)
        await self.set_fields(
            caller.user.id, password_hash=hashed, password_changed_us=self.now_us()
        )
        await self._set_session(caller, restricted=None)
        self.event(Action.PASSWORD_CHANGE, caller.user, source=source)
        await self.revoke(caller, keep=caller.session.id, reason="password_change", source=source)
