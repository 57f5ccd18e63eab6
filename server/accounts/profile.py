"""The user's own identity data: changing the email (``POST /me/email``).

An email change needs a recent re-authentication (password + TOTP within
``reauth_window_s``), like a password change. The new email is stored
encrypted with its blind index and a version row (:mod:`server.accounts.store`);
it is refused with ``409 conflict`` when another account uses it
(case-insensitively). It is audited (``update``, reason ``email_change``,
target the user), and the user's other sessions are revoked (their sockets
close), as after a password change: whoever knew the old address must log in
again. The password policy's context words come from the stored name and
email, so the next password change is checked against the new address.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.accounts.errors import ApiError
from server.accounts.schemas import EmailChange, Ok
from server.accounts.service import AccountService, Caller
from server.accounts.store import DuplicateError
from server.accounts.web import Context, Endpoint
from server.audit.events import Action, AuditEvent


@dataclass
class Profile:
    """The ``/me/email`` use case and its endpoint."""

    accounts: AccountService

    async def change_email(self, caller: Caller, email: str, source: str | None) -> None:
        """Set the caller's email; raises ``reauth_required`` or ``conflict``."""
        svc, u = self.accounts, caller.user
        svc.require_recent_auth(caller)
        try:
            await svc.store.update_user(u.id, by=u.id, now_us=svc.now_us(), email=email)
        except DuplicateError as exc:
            raise ApiError("conflict", "email already used") from exc
        svc.user_written(u.id)
        svc.audit.record(
            AuditEvent(
                action=Action.UPDATE,
                actor=u.id,
                role=u.role,
                org=u.org_id,
                target_type="user",
                target_id=u.id,
                reason="email_change",
                source=source,
            )
        )
        await svc.revoke(caller, keep=caller.session.id, reason="email_change", source=source)

    async def set_email(self, ctx: Context) -> Ok:
        b: EmailChange = ctx.body
        await self.change_email(ctx.me, b.email, ctx.source)
        return Ok()

    def endpoints(self) -> list[Endpoint]:
        """The profile endpoints (added to the API table)."""
        return [
            Endpoint(
                "POST",
                "/me/email",
                self.set_email,
                "Change my email (other sessions end)",
                Ok,
                EmailChange,
                errors=("reauth_required", "conflict"),
            )
        ]
