"""The accounts REST endpoints (thin: parse, authorise, call the service, reply).

The table :data:`ENDPOINTS` is the API; :mod:`server.accounts.openapi`
describes it. See docs/accounts.md for the sequences and error codes.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.accounts import csrf
from server.accounts.admin import AdminService, UserView
from server.accounts.enrolment import Enrolments
from server.accounts.errors import ApiError
from server.accounts.schemas import (
    CareCreate,
    CareList,
    CareOut,
    Challenge,
    CodeRequest,
    Created,
    DelegationCreate,
    DelegationList,
    DelegationOut,
    EnrolConfirm,
    EnrolmentOut,
    InvitationAccept,
    InviteOut,
    InviteRequest,
    LoginRequest,
    MfaRequest,
    NoticeOut,
    Ok,
    OrgCreate,
    OrgList,
    OrgOut,
    PasswordChange,
    ReauthRequest,
    RecoveryCodesOut,
    Revoked,
    RoleChange,
    SessionItem,
    SessionList,
    SessionOut,
    TicketOut,
    UserList,
    UserOut,
)
from server.accounts.service import AccountService, LoginResult
from server.accounts.store import Org
from server.accounts.web import Context, Endpoint
from server.policy import Relationship

#: The code of the notice a login carries after a lockout (docs/accounts.md).
LOCKED_RECENTLY = "account_locked_recently"


@dataclass
class Api:
    """The handlers, bound to their services."""

    accounts: AccountService
    enrolments: Enrolments
    admin: AdminService
    csrf_key: bytes
    ticket_ttl_s: float

    def _session(self, ctx: Context, result: LoginResult, mode: str) -> SessionOut:
        row = result.session
        if mode == "cookie":
            max_age = max(1, (row.expires_us - row.created_us) // 1_000_000)
            ctx.headers.append(("set-cookie", csrf.session_cookie(result.token, max_age)))
        return SessionOut(
            session_id=row.id,
            user_id=result.user.id,
            org_id=result.user.org_id,
            role=result.user.role,
            csrf_token=csrf.csrf_token(self.csrf_key, result.token),
            expires_at_us=row.expires_us,
            restricted=row.restricted,
            token=result.token if mode == "bearer" else None,
            recovery_codes=result.recovery_codes,
            notices=[NoticeOut(LOCKED_RECENTLY, int(n.at), n.failures) for n in result.notices],
        )

    # -- login --------------------------------------------------------------------
    async def login(self, ctx: Context) -> Challenge:
        b: LoginRequest = ctx.body
        step = await self.accounts.login_password(b.email, b.password, ctx.source)
        ttl = self.accounts.challenge_ttl_s
        if step.enrolment is None:
            return Challenge(step.challenge, ttl)
        e = step.enrolment
        return Challenge(step.challenge, ttl, "enrol", e.otpauth_uri, e.qr_svg)

    async def login_mfa(self, ctx: Context) -> SessionOut:
        b: MfaRequest = ctx.body
        if (b.code is None) == (b.recovery_code is None):
            raise ApiError("bad_request", "give exactly one of code and recovery_code")
        result = await self.accounts.login_mfa(b.challenge, b.code, b.recovery_code, ctx.source)
        return self._session(ctx, result, b.session)

    async def accept_invitation(self, ctx: Context) -> EnrolmentOut:
        b: InvitationAccept = ctx.body
        challenge, enrol = await self.enrolments.accept_invitation(b.token, b.password, ctx.source)
        return EnrolmentOut(enrol.otpauth_uri, enrol.qr_svg, challenge)

    async def confirm_enrolment(self, ctx: Context) -> SessionOut:
        b: EnrolConfirm = ctx.body
        result = await self.enrolments.confirm_enrolment(b.challenge, b.code, ctx.source)
        return self._session(ctx, result, b.session)

    # -- the current session ------------------------------------------------------
    async def current_session(self, ctx: Context) -> SessionOut:
        me = ctx.me
        return SessionOut(
            session_id=me.session.id,
            user_id=me.user.id,
            org_id=me.user.org_id,
            role=me.user.role,
            csrf_token=csrf.csrf_token(self.csrf_key, me.token),
            expires_at_us=me.session.expires_us,
            restricted=me.session.restricted,
        )

    async def logout(self, ctx: Context) -> Ok:
        await self.accounts.logout(ctx.me, ctx.source)
        ctx.headers.append(("set-cookie", csrf.clear_cookie()))
        return Ok()

    async def reauth(self, ctx: Context) -> Ok:
        b: ReauthRequest = ctx.body
        await self.accounts.reauthenticate(ctx.me, b.password, b.code, ctx.source)
        return Ok()

    async def change_password(self, ctx: Context) -> Ok:
        b: PasswordChange = ctx.body
        await self.accounts.change_password(ctx.me, b.new_password, ctx.source)
        return Ok()

    async def start_mfa_change(self, ctx: Context) -> EnrolmentOut:
        enrol = await self.enrolments.start_mfa_change(ctx.me)
        return EnrolmentOut(enrol.otpauth_uri, enrol.qr_svg)

    async def confirm_mfa_change(self, ctx: Context) -> RecoveryCodesOut:
        b: CodeRequest = ctx.body
        codes = await self.enrolments.confirm_mfa_change(ctx.me, b.code, ctx.source)
        return RecoveryCodesOut(codes)

    async def list_sessions(self, ctx: Context) -> SessionList:
        me = ctx.me
        rows = await self.accounts.sessions.list_for(me.user.id, self.accounts.now_us())
        return SessionList(
            [
                SessionItem(
                    r.id,
                    r.created_us,
                    r.last_seen_us,
                    r.expires_us,
                    r.id == me.session.id,
                    r.source,
                )
                for r in rows
            ]
        )

    async def revoke_session(self, ctx: Context) -> Revoked:
        ids = await self.accounts.revoke(ctx.me, only=ctx.param("session_id"), source=ctx.source)
        if not ids:
            raise ApiError("not_found")
        return Revoked(len(ids))

    async def revoke_other_sessions(self, ctx: Context) -> Revoked:
        me = ctx.me
        return Revoked(len(await self.accounts.revoke(me, keep=me.session.id, source=ctx.source)))

    async def ws_ticket(self, ctx: Context) -> TicketOut:
        return TicketOut(
            await self.accounts.ws_ticket(ctx.me, self.ticket_ttl_s), self.ticket_ttl_s
        )

    # -- administration ----------------------------------------------------------
    async def list_orgs(self, ctx: Context) -> OrgList:
        return OrgList([_org(o) for o in await self.admin.list_orgs(ctx.me)])

    async def create_org(self, ctx: Context) -> OrgOut:
        b: OrgCreate = ctx.body
        return _org(await self.admin.create_org(ctx.me, b.name))

    async def list_users(self, ctx: Context) -> UserList:
        return UserList(
            [user_out(v) for v in await self.admin.list_users(ctx.me, ctx.param("org_id"))]
        )

    async def list_users_query(self, ctx: Context) -> UserList:
        org = ctx.query("org") or ctx.me.user.org_id
        return UserList([user_out(v) for v in await self.admin.list_users(ctx.me, org)])

    async def list_care(self, ctx: Context) -> CareList:
        found = await self.admin.list_care(ctx.me, ctx.param("org_id"))
        return CareList(
            [CareOut(rid, r.kind, r.actor_id, r.patient_id, r.ref_id) for rid, r in found]
        )

    async def list_org_delegations(self, ctx: Context) -> DelegationList:
        found = await self.admin.list_delegations(ctx.me, ctx.param("org_id"))
        return DelegationList(
            [DelegationOut(d.id, d.practitioner_id, d.delegate_id, sorted(d.scopes)) for d in found]
        )

    async def invite_user(self, ctx: Context) -> InviteOut:
        b: InviteRequest = ctx.body
        inv = await self.admin.invite(
            ctx.me,
            ctx.param("org_id"),
            role=b.role,
            name=b.name,
            email=b.email,
            phone=b.phone,
            guest_days=b.guest_days,
        )
        return InviteOut(inv.user.id, inv.token, inv.expires_us)

    async def get_user(self, ctx: Context) -> UserOut:
        return user_out(await self.admin.get_user(ctx.me, ctx.param("user_id")))

    async def disable_user(self, ctx: Context) -> UserOut:
        return user_out(await self.admin.disable(ctx.me, ctx.param("user_id")))

    async def set_role(self, ctx: Context) -> UserOut:
        b: RoleChange = ctx.body
        return user_out(await self.admin.set_role(ctx.me, ctx.param("user_id"), b.role))

    async def unlock_user(self, ctx: Context) -> Ok:
        await self.admin.unlock(ctx.me, ctx.param("user_id"))
        return Ok()

    async def list_delegations(self, ctx: Context) -> DelegationList:
        return DelegationList(
            [
                DelegationOut(d.id, d.practitioner_id, d.delegate_id, sorted(d.scopes))
                for d in await self.admin.delegations(ctx.me)
            ]
        )

    async def grant_delegation(self, ctx: Context) -> Created:
        b: DelegationCreate = ctx.body
        return Created(
            await self.admin.grant_delegation(
                ctx.me, b.practitioner_id, b.delegate_id, list(b.scopes)
            )
        )

    async def revoke_delegation(self, ctx: Context) -> Ok:
        await self.admin.revoke_delegation(ctx.me, ctx.param("delegation_id"))
        return Ok()

    async def add_care(self, ctx: Context) -> Created:
        b: CareCreate = ctx.body
        rel = Relationship(b.kind, b.actor_id, b.patient_id, b.ref_id)
        return Created(await self.admin.add_care(ctx.me, rel))

    async def end_care(self, ctx: Context) -> Ok:
        await self.admin.end_care(ctx.me, ctx.param("rel_id"))
        return Ok()

    def endpoints(self) -> list[Endpoint]:
        """The API table."""
        E = Endpoint
        return [
            E(
                "POST",
                "/login",
                self.login,
                "Password step: get an MFA challenge",
                Challenge,
                LoginRequest,
                "public",
                errors=("auth_failed",),
            ),
            E(
                "POST",
                "/login/mfa",
                self.login_mfa,
                "MFA step: spend the challenge for a session",
                SessionOut,
                MfaRequest,
                "public",
                errors=("challenge_invalid", "mfa_failed"),
            ),
            E(
                "POST",
                "/invitations/accept",
                self.accept_invitation,
                "Set the invitee's password; get TOTP enrolment data",
                EnrolmentOut,
                InvitationAccept,
                "public",
                errors=("invitation_invalid", "password_common"),
            ),
            E(
                "POST",
                "/mfa/enrol",
                self.confirm_enrolment,
                "Confirm TOTP enrolment with a first code; get a session and recovery codes",
                SessionOut,
                EnrolConfirm,
                "public",
                errors=("challenge_invalid", "mfa_failed"),
            ),
            E(
                "GET",
                "/session",
                self.current_session,
                "The current session and its CSRF token",
                SessionOut,
                auth="restricted_ok",
            ),
            E("POST", "/logout", self.logout, "End the current session", Ok, auth="restricted_ok"),
            E(
                "POST",
                "/reauth",
                self.reauth,
                "Re-authenticate (password + TOTP)",
                Ok,
                ReauthRequest,
                "restricted_ok",
                errors=("auth_failed",),
            ),
            E(
                "POST",
                "/me/password",
                self.change_password,
                "Change my password",
                Ok,
                PasswordChange,
                "restricted_ok",
                errors=("reauth_required", "password_common"),
            ),
            E(
                "POST",
                "/me/mfa",
                self.start_mfa_change,
                "Start replacing my TOTP secret",
                EnrolmentOut,
                errors=("reauth_required",),
            ),
            E(
                "POST",
                "/me/mfa/confirm",
                self.confirm_mfa_change,
                "Confirm the new TOTP secret",
                RecoveryCodesOut,
                CodeRequest,
                errors=("reauth_required", "mfa_failed"),
            ),
            E("GET", "/me/sessions", self.list_sessions, "My live sessions", SessionList),
            E(
                "DELETE",
                "/me/sessions/{session_id}",
                self.revoke_session,
                "Revoke one of my sessions (its sockets close)",
                Revoked,
            ),
            E(
                "POST",
                "/me/sessions/revoke-others",
                self.revoke_other_sessions,
                "Revoke all my other sessions",
                Revoked,
            ),
            E(
                "GET",
                "/me/delegations",
                self.list_delegations,
                "Delegations I gave or received",
                DelegationList,
            ),
            E("POST", "/ws-ticket", self.ws_ticket, "A single-use WebSocket ticket", TicketOut),
            E("GET", "/orgs", self.list_orgs, "Organisations I may see", OrgList),
            E(
                "POST",
                "/orgs",
                self.create_org,
                "Create an organisation (superadmin)",
                OrgOut,
                OrgCreate,
                status=201,
            ),
            E("GET", "/orgs/{org_id}/users", self.list_users, "Users of an organisation", UserList),
            E(
                "GET",
                "/users",
                self.list_users_query,
                "Users of an organisation (?org=, default mine), with their state",
                UserList,
                query=("org",),
            ),
            E(
                "GET",
                "/orgs/{org_id}/care-relationships",
                self.list_care,
                "Live care relationships of an organisation",
                CareList,
            ),
            E(
                "GET",
                "/orgs/{org_id}/delegations",
                self.list_org_delegations,
                "Live delegations of an organisation",
                DelegationList,
            ),
            E(
                "POST",
                "/orgs/{org_id}/users",
                self.invite_user,
                "Invite a user",
                InviteOut,
                InviteRequest,
                status=201,
                errors=("conflict",),
            ),
            E("GET", "/users/{user_id}", self.get_user, "One user", UserOut),
            E(
                "POST",
                "/users/{user_id}/disable",
                self.disable_user,
                "Disable an account (all its sessions end)",
                UserOut,
            ),
            E(
                "POST",
                "/users/{user_id}/role",
                self.set_role,
                "Change a user's role",
                UserOut,
                RoleChange,
                errors=("reauth_required",),
            ),
            E("POST", "/users/{user_id}/unlock", self.unlock_user, "Lift a temporary lock", Ok),
            E(
                "POST",
                "/delegations",
                self.grant_delegation,
                "Delegate rights to a secretary",
                Created,
                DelegationCreate,
                status=201,
            ),
            E(
                "DELETE",
                "/delegations/{delegation_id}",
                self.revoke_delegation,
                "Revoke a delegation (effective at once)",
                Ok,
            ),
            E(
                "POST",
                "/care-relationships",
                self.add_care,
                "Record a care relationship",
                Created,
                CareCreate,
                status=201,
            ),
            E(
                "DELETE",
                "/care-relationships/{rel_id}",
                self.end_care,
                "End a care relationship",
                Ok,
            ),
        ]


def _org(o: Org) -> OrgOut:
    return OrgOut(o.id, o.name, o.disabled)


def user_out(view: UserView) -> UserOut:
    """The API's view of a user (for those allowed to see it)."""
    u = view.user
    return UserOut(
        u.id, u.org_id, u.role, u.name, u.email, u.phone, u.status, view.locked,
        u.created_us // 1_000_000,
    )  # fmt: skip
