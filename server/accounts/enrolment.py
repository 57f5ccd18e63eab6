"""Enrolment: invitation -> password -> first TOTP code; and replacing one's TOTP secret.

An invitation (:meth:`server.accounts.admin.AdminService.invite`, or a
re-invitation, :mod:`server.accounts.recovery`) is accepted with a password
(``POST /invitations/accept``): the password is stored, a pending TOTP secret
is made (or the one already pending kept), and an enrolment challenge names
the invitation. The enrolment is confirmed with a first code
(``POST /mfa/enrol``): only then is the invitation spent and the account
activated. So:

- a wrong first code answers ``mfa_failed`` and changes nothing: the same
  challenge takes another code, and the invitation can be accepted again
  (a new challenge, the same pending secret) until it expires, is replaced by
  a re-invitation, or the enrolment is confirmed;
- wrong codes count against the lockout like any TOTP failure (a locked pair
  or account answers ``mfa_failed`` without checking the code), so the
  tries are bounded;
- of two confirmations of one invitation, one wins (the invitation is spent
  atomically before the secret is stored); the other answers
  ``invitation_invalid``.

After an administrator reset an account's MFA, its owner's password login
answers an enrolment challenge (no invitation) confirmed the same way.

Raises :class:`server.accounts.errors.ApiError`; the hashing queue
:class:`server.accounts.passwords.HasherBusyError`.
"""

from __future__ import annotations

from server.accounts import totp
from server.accounts.errors import ApiError
from server.accounts.lockout import account_key
from server.accounts.mfa import Enrolment
from server.accounts.service import AccountService, Caller, LoginResult, log_login
from server.accounts.sessions import token_hash
from server.accounts.store import User
from server.audit.events import Action


class Enrolments:
    """The enrolment use cases, on top of :class:`AccountService`."""

    def __init__(self, accounts: AccountService) -> None:
        self.accounts = accounts

    async def accept_invitation(
        self, token: str, password: str, source: str | None
    ) -> tuple[str, Enrolment]:
        """Set the invitee's password; return an enrolment challenge and the TOTP data.

        May be called again with the same invitation until the enrolment is
        confirmed (the person closed the page): the new password replaces the
        first, the pending secret stays. Raises ``invitation_invalid`` or a
        ``password_*`` policy code (the invitation is not spent by either).
        """
        svc = self.accounts
        digest, now_us = token_hash(token), svc.now_us()
        user_id = await svc.store.peek_invitation(digest, now_us)
        user = await svc.store.get_user(user_id) if user_id else None
        if user is None or user.status != "invited":
            raise ApiError("invitation_invalid")
        hashed = await svc.hasher.hash(svc.check_policy(user, password))
        if await svc.store.peek_invitation(digest, svc.now_us()) != user.id:
            raise ApiError("invitation_invalid")  # replaced or confirmed meanwhile
        fresh = await svc.store.get_user(user.id)
        if fresh is None or fresh.status != "invited":
            raise ApiError("invitation_invalid")
        secret = await svc.pending_secret(fresh, password_hash=hashed, password_changed_us=now_us)
        svc.event(Action.PASSWORD_CHANGE, fresh, source=source)
        challenge = await svc.challenges.new(fresh.id, "enrol", invitation=digest)
        return challenge, await svc.vault.enrolment(fresh, secret)

    async def confirm_enrolment(self, challenge: str, code: str, source: str | None) -> LoginResult:
        """Confirm TOTP with a first code: activate the account and open a session.

        Returns ten recovery codes (shown once). Raises ``challenge_invalid``,
        ``mfa_failed`` (a wrong code, or the account locked: the challenge
        stays usable) or ``invitation_invalid`` (it expired or was replaced).
        """
        svc = self.accounts
        try:
            user, invitation = await svc.challenge(challenge, "enrol")
        except ApiError:
            log_login("enrol", "challenge_invalid")
            raise
        step = await self._check_first_code(user, code, source, "enrol")
        if not await svc.challenges.spend(challenge):
            raise ApiError("challenge_invalid")  # a concurrent confirmation won
        if invitation is not None and (
            await svc.store.take_invitation(invitation, svc.now_us()) != user.id
        ):
            log_login("enrol", "failed", user, "invitation_invalid")
            raise ApiError("invitation_invalid")
        codes = await self._switch(user, step, source, activate=True)
        notice = await svc.succeeded(user, account_key(user.email), source)
        fresh = await svc.store.get_user(user.id)
        assert fresh is not None
        log_login("enrol", "ok", fresh)
        return await svc.open_session(fresh, source, codes, notice)

    async def _check_first_code(
        self, user: User, code: str, source: str | None, step_name: str
    ) -> tuple[str, int]:
        """(secret, step) of a right first code for the pending secret; ``mfa_failed``
        otherwise, the failure counted against the lockout."""
        svc = self.accounts
        acct = account_key(user.email)
        attempt = await svc.lockout.begin(acct, source, first_step=False)
        if attempt.state.locked:
            svc.refused(Action.MFA_FAILED, user, attempt.state, source)
            log_login(step_name, "refused", user, attempt.state.reason)
            raise ApiError("mfa_failed")
        if user.totp_pending is None:
            await svc.lockout.release(attempt)
            raise ApiError("mfa_failed")
        secret = svc.vault.open(user.id, user.totp_pending, "totp_pending")
        step = totp.match_step(secret, code, svc.clock(), -1)
        if step is None:
            await svc.fail(user, acct, source, Action.MFA_FAILED, "bad_enrol_code")
            log_login(step_name, "failed", user, "bad_enrol_code")
            raise ApiError("mfa_failed")
        await svc.lockout.release(attempt)
        return secret, step

    async def _switch(
        self, user: User, confirmed: tuple[str, int], source: str | None, *, activate: bool
    ) -> list[str]:
        """Make the confirmed pending secret the account's; new recovery codes (returned)."""
        svc = self.accounts
        secret, step = confirmed
        values: dict[str, object] = {
            "totp_secret": svc.vault.seal(user.id, secret),
            "totp_pending": None,
            "totp_last_step": step,
        }
        if activate and user.status == "invited":
            values["status"] = "active"
        codes = totp.new_recovery_codes()
        await svc.set_fields(user.id, **values)
        await svc.store.replace_recovery_codes(user.id, [totp.recovery_hash(c) for c in codes])
        svc.event(Action.MFA_ENROLL, user, source=source)
        return codes

    # -- replacing one's own secret ---------------------------------------------------
    async def start_mfa_change(self, caller: Caller) -> Enrolment:
        """A new pending TOTP secret (recent re-authentication needed)."""
        svc = self.accounts
        svc.require_recent_auth(caller)
        secret = totp.new_secret()
        await svc.set_fields(
            caller.user.id, totp_pending=svc.vault.seal(caller.user.id, secret, "totp_pending")
        )
        return await svc.vault.enrolment(caller.user, secret)

    async def confirm_mfa_change(self, caller: Caller, code: str, source: str | None) -> list[str]:
        """Switch to the pending secret; new recovery codes; other sessions revoked.

        A wrong code counts against the lockout (``mfa_failed``).
        """
        svc = self.accounts
        svc.require_recent_auth(caller)
        user = await svc.store.get_user(caller.user.id)
        assert user is not None
        confirmed = await self._check_first_code(user, code, source, "mfa_change")
        codes = await self._switch(user, confirmed, source, activate=False)
        await svc.revoke(caller, keep=caller.session.id, reason="mfa_change", source=source)
        return codes
