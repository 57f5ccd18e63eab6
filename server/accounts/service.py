"""Login, MFA, enrolment, sessions and credential changes: the accounts use cases.

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
accept a challenge.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import msgpack

from server.accounts import totp
from server.accounts.authcache import AuthCache
from server.accounts.errors import ApiError
from server.accounts.lockout import Attempt, Lockout, LockState, account_key
from server.accounts.passwords import (
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
    new_token,
    token_hash,
)
from server.accounts.store import AccountStore, User
from server.audit.events import Action, AuditEvent, Result
from server.broker.base import Broker
from server.policy import STAFF_ROLES
from server.security.crypto import Keyring, aad

RESTRICTED_PASSWORD = "password_expired"  # noqa: S105 (a restriction name)
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


@dataclass(frozen=True, slots=True)
class Enrolment:
    """TOTP enrolment data shown once: the secret's URI and its QR code."""

    otpauth_uri: str
    qr_svg: str


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
        self.cache = cache
        self.challenge_ttl_s = challenge_ttl_s
        self.reauth_window_us = int(reauth_window_s * 1e6)
        self.password_max_age_us = int(password_max_age_s * 1e6)
        self.clock = clock

    def now_us(self) -> int:
        """The injected clock, in microseconds."""
        return int(self.clock() * 1_000_000)

    def _event(
        self,
        action: Action,
        user: User | None,
        result: Result = Result.OK,
        *,
        reason: str | None = None,
        source: str | None = None,
        target: tuple[str, str] | None = None,
    ) -> None:
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
            )
        )

    async def _set(self, user_id: str, **values: object) -> None:
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

    # -- TOTP secrets at rest ----------------------------------------------------
    def seal_totp(self, user_id: str, secret: str, column: str = "totp_secret") -> bytes:
        """The secret sealed for ``users.<column>`` of ``user_id``."""
        return self.keyring.seal(secret.encode(), aad("users", column, user_id))

    def open_totp(self, user_id: str, envelope: bytes, column: str = "totp_secret") -> str:
        """The clear secret; raises :class:`server.security.crypto.CryptoError`."""
        return self.keyring.open(envelope, aad("users", column, user_id)).decode()

    # -- challenges ------------------------------------------------------------------
    async def _new_challenge(self, user_id: str, purpose: str) -> str:
        token = new_token()
        payload = msgpack.packb({"u": user_id, "p": purpose})
        await self.broker.set_value(_ckey(token), payload, self.challenge_ttl_s)
        return token

    async def _challenge(self, token: str, purpose: str) -> User:
        raw = await self.broker.get_value(_ckey(token))
        data = msgpack.unpackb(raw) if raw is not None else None
        if not isinstance(data, dict) or data.get("p") != purpose:
            raise ApiError("challenge_invalid")
        user = await self.store.get_user(str(data["u"]))
        if user is None or user.status == "disabled":
            raise ApiError("challenge_invalid")
        return user

    async def _spend_challenge(self, token: str) -> None:
        if await self.broker.pop_value(_ckey(token)) is None:
            raise ApiError("challenge_invalid")

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

    async def _fail(
        self, user: User | None, acct: str, source: str | None, action: Action, reason: str
    ) -> None:
        outcome = await self.lockout.failure(acct, source)
        self._event(action, user, Result.FAILED, reason=reason, source=source)
        if outcome.locked_for_s is not None:
            why = "too_many_failures" if outcome.scope == "account" else "too_many_from_source"
            self._event(Action.LOCKOUT, user, Result.DENIED, reason=why, source=source)

    def _refused(
        self, action: Action, user: User | None, state: LockState, source: str | None
    ) -> None:
        """Audit an attempt the throttles refused (nothing was verified)."""
        self._event(action, user, Result.DENIED, reason=state.reason or "locked", source=source)

    async def login_password(self, email: str, password: str, source: str | None) -> str:
        """Check the password; return an MFA challenge token.

        Raises ``auth_failed`` alike for an unknown email, a wrong password, a
        locked, disabled, expired or unfinished account, or an attempt the
        throttles refuse (answered at once: no lookup, no hash). Raises
        :class:`HasherBusyError` (429) when the hashing queue is full, before
        the user is looked up; nothing is counted then.
        """
        acct, now_us = account_key(email), self.now_us()
        state = await self.lockout.state(acct, source)
        if state.locked:  # decided by the counters: no slot, no lookup, no hash
            self._refused(Action.LOGIN_FAILED, None, state, source)
            raise ApiError("auth_failed")
        with self.hasher.slot() as slot:  # HasherBusyError (429) before anything is counted
            attempt = await self.lockout.begin(acct, source)  # counted first: see lockout.py
            if attempt.state.locked:
                self._refused(Action.LOGIN_FAILED, None, attempt.state, source)
                raise ApiError("auth_failed")
            user = await self._checked(attempt, self.store.user_by_email(email))
            ok = await self._checked(
                attempt, slot.verify(user.password_hash if user else None, password)
            )
            if not ok or user is None or not self._usable(user, now_us):
                reason = "bad_password" if not ok else "account_unusable"
                await self._fail(user, acct, source, Action.LOGIN_FAILED, reason)
                raise ApiError("auth_failed")
            await self.lockout.release(attempt)  # a right password is not a failure
            if user.password_hash and self.hasher.needs_rehash(user.password_hash):
                await self._set(user.id, password_hash=await slot.hash(password))
        return await self._new_challenge(user.id, "login")

    async def _checked(self, attempt: Attempt, check: Awaitable[T]) -> T:
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
            secret = self.open_totp(user.id, user.totp_secret)
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
        """
        user = await self._challenge(challenge, "login")
        acct = account_key(user.email)
        attempt = await self.lockout.begin(acct, source, first_step=False)  # see lockout.py
        if attempt.state.locked:
            self._refused(Action.MFA_FAILED, user, attempt.state, source)
            raise ApiError("mfa_failed")
        if not await self._checked(attempt, self.check_code(user, code, recovery)):
            await self._fail(user, acct, source, Action.MFA_FAILED, "bad_code")
            raise ApiError("mfa_failed")
        await self.lockout.release(attempt)
        await self._spend_challenge(challenge)
        if await self.lockout.was_locked(acct, source):
            self._event(Action.UNLOCK, user, reason="login_after_lock", source=source)
        await self.lockout.success(acct, source)
        return await self._open_session(user, source)

    async def _open_session(
        self, user: User, source: str | None, recovery_codes: list[str] | None = None
    ) -> LoginResult:
        now_us = self.now_us()
        changed = user.password_changed_us or now_us
        expired = user.role in STAFF_ROLES and now_us - changed > self.password_max_age_us
        restricted = RESTRICTED_PASSWORD if expired else None
        token, row = await self.sessions.create(
            user.id, now_us, source=source, restricted=restricted
        )
        self._event(Action.LOGIN, user, source=source, target=("session", row.id))
        return LoginResult(token, row, user, recovery_codes)

    # -- enrolment (invitation -> password -> TOTP) ------------------------------------
    async def accept_invitation(
        self, token: str, password: str, source: str | None
    ) -> tuple[str, Enrolment]:
        """Set the invitee's password; return an enrolment challenge and the TOTP data.

        Raises ``invitation_invalid`` or a ``password_*`` policy code.
        """
        digest, now_us = token_hash(token), self.now_us()
        user_id = await self.store.peek_invitation(digest, now_us)
        user = await self.store.get_user(user_id) if user_id else None
        if user is None or user.status != "invited":
            raise ApiError("invitation_invalid")
        clean = self._check_policy(user, password)
        hashed = await self.hasher.hash(clean)
        if await self.store.take_invitation(digest, now_us) != user.id:
            raise ApiError("invitation_invalid")
        secret = totp.new_secret()
        await self._set(
            user.id,
            password_hash=hashed,
            password_changed_us=now_us,
            totp_pending=self.seal_totp(user.id, secret, "totp_pending"),
        )
        self._event(Action.PASSWORD_CHANGE, user, reason=None, source=source)
        challenge = await self._new_challenge(user.id, "enrol")
        return challenge, self._enrolment(user, secret)

    def _enrolment(self, user: User, secret: str) -> Enrolment:
        uri = totp.provisioning_uri(secret, user.id)
        return Enrolment(uri, totp.qr_svg(uri))

    async def confirm_enrolment(self, challenge: str, code: str, source: str | None) -> LoginResult:
        """Confirm TOTP with a first code: activate the account and open a session.

        Returns ten recovery codes (shown once). Raises ``challenge_invalid`` or
        ``mfa_failed``.
        """
        user = await self._challenge(challenge, "enrol")
        codes = await self._confirm_totp(user, code, source)
        await self._spend_challenge(challenge)
        await self._set(user.id, status="active")
        fresh = await self.store.get_user(user.id)
        assert fresh is not None
        return await self._open_session(fresh, source, codes)

    async def _confirm_totp(self, user: User, code: str, source: str | None) -> list[str]:
        if user.totp_pending is None:
            raise ApiError("mfa_failed")
        secret = self.open_totp(user.id, user.totp_pending, "totp_pending")
        step = totp.match_step(secret, code, self.clock(), -1)
        if step is None:
            self._event(
                Action.MFA_FAILED, user, Result.FAILED, reason="bad_enrol_code", source=source
            )
            raise ApiError("mfa_failed")
        codes = totp.new_recovery_codes()
        await self._set(
            user.id,
            totp_secret=self.seal_totp(user.id, secret),
            totp_pending=None,
            totp_last_step=step,
        )
        await self.store.replace_recovery_codes(user.id, [totp.recovery_hash(c) for c in codes])
        self._event(Action.MFA_ENROLL, user, source=source)
        return codes

    def _check_policy(self, user: User, password: str) -> str:
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
            self._event(
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
        self._event(
            Action.LOGOUT, caller.user, source=source, target=("session", caller.session.id)
        )
        await self.revocations.sessions_revoked([caller.session.id])

    async def ws_ticket(self, caller: Caller, ttl_s: float) -> str:
        """A single-use WebSocket ticket for the caller's session (broker, ``ttl_s``)."""
        ticket = new_token()
        await self.broker.set_value(_tkey(ticket), caller.session.id.encode(), ttl_s)
        return ticket

    async def take_ticket(self, ticket: str) -> str | None:
        """The session id of a ticket, spent atomically; None if unknown, used or expired."""
        raw = await self.broker.pop_value(_tkey(ticket))
        return None if raw is None else raw.decode()

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
            self._refused(Action.LOGIN_FAILED, caller.user, state, source)
            raise ApiError("auth_failed")
        with self.hasher.slot() as slot:  # HasherBusyError (429) before anything is counted
            attempt = await self.lockout.begin(acct, source, first_step=False)  # see lockout.py
            if attempt.state.locked:
                self._refused(Action.LOGIN_FAILED, caller.user, attempt.state, source)
                raise ApiError("auth_failed")
            ok = await self._checked(attempt, self._reauth_ok(caller.user, password, code, slot))
        if not ok:
            await self._fail(caller.user, acct, source, Action.LOGIN_FAILED, "reauth_failed")
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
        clean = self._check_policy(caller.user, new)
        with self.hasher.slot() as slot:
            if await slot.verify(caller.user.password_hash, clean):
                raise ApiError("password_reused")
            hashed = await slot.hash(clean)
        await self._set(caller.user.id, password_hash=hashed, password_changed_us=self.now_us())
        await self._set_session(caller, restricted=None)
        self._event(Action.PASSWORD_CHANGE, caller.user, source=source)
        await self.revoke(caller, keep=caller.session.id, reason="password_change", source=source)

    async def start_mfa_change(self, caller: Caller) -> Enrolment:
        """A new pending TOTP secret (recent re-authentication needed)."""
        self.require_recent_auth(caller)
        secret = totp.new_secret()
        await self._set(
            caller.user.id, totp_pending=self.seal_totp(caller.user.id, secret, "totp_pending")
        )
        return self._enrolment(caller.user, secret)

    async def confirm_mfa_change(self, caller: Caller, code: str, source: str | None) -> list[str]:
        """Switch to the pending secret; new recovery codes; other sessions revoked."""
        self.require_recent_auth(caller)
        user = await self.store.get_user(caller.user.id)
        assert user is not None
        codes = await self._confirm_totp(user, code, source)
        await self.revoke(caller, keep=caller.session.id, reason="mfa_change", source=source)
        return codes


def _ckey(token: str) -> str:
    return "acc:mfa:" + token_hash(token).hex()


def _tkey(ticket: str) -> str:
    return "acc:ticket:" + token_hash(ticket).hex()
