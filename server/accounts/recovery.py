"""Administrators' recovery actions: re-invite, reset MFA, enable, force a password change.

Each is authorised by :mod:`server.policy` (the organisation's admins, or a
superadmin; another organisation's id answers ``not_found`` as an unknown
one), audited (``admin`` with the reason ``reinvite``, ``mfa_reset``,
``account_enable`` or ``password_reset_forced``; each revoked session
``session_revoke``), versioned, and reaches every node (sessions revoked,
sockets closed). The ``medhub admin user ...`` commands call the same methods
with ``caller`` None (the machine's operator: not checked, audited with no
actor).

- **re-invite**: a fresh one-time invitation (the older ones stop working)
  for an account that never finished enrolling (``invited``), or whose
  onboarding must restart (``disabled``, or ``active`` with its MFA reset):
  the password, TOTP secrets and recovery codes are cleared, its sessions
  revoked, and it is ``invited`` until the new enrolment is confirmed.
  An ``active`` enrolled account answers ``409 conflict`` (reset its MFA).
- **reset MFA**: the TOTP secret and recovery codes are cleared and the
  sessions revoked; the owner's next password login answers an enrolment
  challenge with a new QR code (:meth:`AccountService.login_password`).
  An account that never enrolled answers ``409 conflict`` (re-invite it).
- **enable**: a ``disabled`` account becomes ``active`` again (``invited``
  if it never enrolled); any other answers ``409 conflict``.
- **force a password change**: the sessions are revoked and the next login
  gets a ``password_expired`` session (it can only change the password),
  whatever the role. An account with no password yet answers ``409``.

Re-inviting and resetting MFA hand the account to whoever receives the new
invitation or knows the password: like a role change, they need a recent
re-authentication of the administrator (``403 reauth_required``).
Raises :class:`server.accounts.errors.ApiError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.accounts.admin import AdminService, Invitation, UserView, user_target
from server.accounts.errors import ApiError
from server.accounts.routes import user_out
from server.accounts.schemas import ReinviteOut, UserOut
from server.accounts.service import PASSWORD_RESET_FORCED, Caller
from server.accounts.sessions import new_token, token_hash
from server.accounts.store import User
from server.accounts.web import Context, Endpoint
from server.audit.events import Action
from server.policy import Action as Do


@dataclass
class Recovery:
    """The recovery use cases and their endpoints."""

    admin: AdminService

    async def _target(
        self, caller: Caller | None, action: Do, user_id: str, *, reauth: bool
    ) -> User:
        """The account named (``not_found`` alike when unknown or in another org), once
        the policy allowed ``action`` on it (and, with ``reauth``, the caller re-authed)."""
        user = await self.admin.user_or_404(user_id)
        await self.admin.allowed(caller, action, user_target(user))
        if caller is not None and reauth:
            self.admin.accounts.require_recent_auth(caller)
        return user

    async def reinvite(self, caller: Caller | None, user_id: str) -> Invitation:
        """A fresh invitation; the account restarts its onboarding (see the module)."""
        user = await self._target(caller, Do.USER_REINVITE, user_id, reauth=True)
        if user.status == "active" and user.totp_secret is not None:
            raise ApiError("conflict", "the account is enrolled: reset its MFA instead")
        svc = self.admin.accounts
        await self.admin.change_account(
            caller, user, Action.ADMIN, "reinvite", revoke="reinvite",
            status="invited", password_hash=None, password_changed_us=None,
            totp_secret=None, totp_pending=None,
        )  # fmt: skip
        now_us = svc.now_us()
        await svc.store.replace_recovery_codes(user.id, [])
        await svc.store.revoke_invitations(user.id, now_us)
        token, until = new_token(), now_us + self.admin.invitation_ttl_us
        await svc.store.create_invitation(token_hash(token), user.id, until)
        return Invitation(user, token, until)

    async def reset_mfa(self, caller: Caller | None, user_id: str) -> UserView:
        """Clear the TOTP secret and recovery codes; revoke the sessions."""
        user = await self._target(caller, Do.USER_RESET_MFA, user_id, reauth=True)
        if user.status == "invited":
            raise ApiError("conflict", "the account has not enrolled yet: re-invite it")
        await self.admin.accounts.store.replace_recovery_codes(user.id, [])
        return await self.admin.change_account(
            caller, user, Action.ADMIN, "mfa_reset", revoke="mfa_reset",
            totp_secret=None, totp_pending=None,
        )  # fmt: skip

    async def enable(self, caller: Caller | None, user_id: str) -> UserView:
        """Enable a disabled account again."""
        user = await self._target(caller, Do.USER_ENABLE, user_id, reauth=False)
        if user.status != "disabled":
            raise ApiError("conflict", "the account is not disabled")
        status = "active" if user.totp_secret is not None else "invited"
        return await self.admin.change_account(
            caller, user, Action.ADMIN, "account_enable", revoke=None, status=status
        )

    async def force_password_reset(self, caller: Caller | None, user_id: str) -> UserView:
        """Revoke the sessions; the next login may only change the password."""
        user = await self._target(caller, Do.USER_FORCE_PASSWORD_RESET, user_id, reauth=False)
        if user.password_hash is None or user.status == "invited":
            raise ApiError("conflict", "the account has no password yet: re-invite it")
        return await self.admin.change_account(
            caller, user, Action.ADMIN, "password_reset_forced", revoke="password_reset_forced",
            password_changed_us=PASSWORD_RESET_FORCED,
        )  # fmt: skip

    # -- endpoints -------------------------------------------------------------------
    async def reinvite_user(self, ctx: Context) -> ReinviteOut:
        inv = await self.reinvite(ctx.me, ctx.param("user_id"))
        return ReinviteOut(inv.token, inv.expires_us // 1_000_000)

    async def reset_user_mfa(self, ctx: Context) -> UserOut:
        return user_out(await self.reset_mfa(ctx.me, ctx.param("user_id")))

    async def enable_user(self, ctx: Context) -> UserOut:
        return user_out(await self.enable(ctx.me, ctx.param("user_id")))

    async def force_user_password_reset(self, ctx: Context) -> UserOut:
        return user_out(await self.force_password_reset(ctx.me, ctx.param("user_id")))

    def endpoints(self) -> list[Endpoint]:
        """The recovery endpoints (added to the API table)."""
        E = Endpoint
        return [
            E(
                "POST",
                "/users/{user_id}/reinvite",
                self.reinvite_user,
                "A new one-time invitation; the account restarts its enrolment",
                ReinviteOut,
                errors=("conflict", "reauth_required"),
            ),
            E(
                "POST",
                "/users/{user_id}/reset-mfa",
                self.reset_user_mfa,
                "Clear the TOTP secret and recovery codes; the next login enrols again",
                UserOut,
                errors=("conflict", "reauth_required"),
            ),
            E(
                "POST",
                "/users/{user_id}/enable",
                self.enable_user,
                "Enable a disabled account",
                UserOut,
                errors=("conflict",),
            ),
            E(
                "POST",
                "/users/{user_id}/force-password-reset",
                self.force_user_password_reset,
                "End the sessions; the next login may only change the password",
                UserOut,
                errors=("conflict",),
            ),
        ]
