"""Administration use cases: organisations, invitations, roles, delegation, care.

Every decision goes through :func:`server.policy.decide`; a refusal is audited
(``denied`` with the policy's reason) and answered ``forbidden``, except that a
target in another organisation is answered ``not_found`` (its existence is not
revealed). That holds for *every* id a request names, in the path or in the
body (a delegation's practitioner and delegate, a care relationship's actor
and patient): an id of another organisation answers exactly as an unknown
one, before any rule about roles or organisations "fitting" is applied. A
superadmin crossing organisations is audited (``admin``, ``cross_org``).

``caller`` None is the ``medhub admin`` CLI: the operator of the machine,
who is not checked by the policy, and is audited with no actor. The CLI and
the REST routes call the same methods. Raises
:class:`server.accounts.errors.ApiError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.accounts.errors import ApiError
from server.accounts.lockout import Lockout, account_key
from server.accounts.relations import RelationStore
from server.accounts.revocation import Revocations
from server.accounts.service import AccountService, Caller
from server.accounts.sessions import new_token, token_hash
from server.accounts.store import AccountStore, DuplicateError, Org, User
from server.audit.events import Action, AuditEvent, Result
from server.logs import context_id
from server.policy import (
    Action as Do,
)
from server.policy import (
    Decision,
    Delegation,
    RelationKind,
    Relationship,
    Role,
    Subject,
    Target,
    decide,
)

PLATFORM_ORG = "medhub platform"
_KIND_ROLE = {
    RelationKind.FOLLOWS: Role.PRACTITIONER,
    RelationKind.CONSULTATION: Role.PRACTITIONER,
    RelationKind.EEG_TECHNICIAN: Role.TECHNICIAN,
    RelationKind.EEG_INTERPRETER: Role.INTERPRETER,
}


@dataclass(frozen=True, slots=True)
class UserView:
    """A user as administrators see them: the row, and whether the account is locked."""

    user: User
    locked: bool


@dataclass(frozen=True, slots=True)
class Invitation:
    """A new invited user and the one-time invitation token (shown once)."""

    user: User
    token: str
    expires_us: int


class AdminService:
    """Organisations, users, roles, delegations and care relationships."""

    def __init__(
        self,
        *,
        accounts: AccountService,
        store: AccountStore,
        relations: RelationStore,
        lockout: Lockout,
        revocations: Revocations,
        invitation_ttl_s: float,
    ) -> None:
        self.accounts, self.store, self.relations = accounts, store, relations
        self.lockout, self.revocations = lockout, revocations
        self.invitation_ttl_us = int(invitation_ttl_s * 1e6)

    # -- decisions ------------------------------------------------------------------
    async def subject(self, caller: Caller) -> Subject:
        """The policy subject of a caller, with their live delegations."""
        u = caller.user
        return Subject(u.id, u.org_id, u.role, frozenset(await self.relations.delegations_of(u.id)))

    async def check(self, caller: Caller, action: Do, target: Target) -> Decision:
        """Decide and audit; raises ``not_found`` (other org) or ``forbidden``."""
        decision = decide(await self.subject(caller), action, target)
        u = caller.user

        def event(action: Action, result: Result, reason: str) -> AuditEvent:
            return AuditEvent(
                action=action,
                result=result,
                reason=reason,
                actor=u.id,
                role=u.role,
                org=target.org_id,
                target_type=target.kind,
                target_id=target.id,
                request_id=context_id.get(),
            )

        if not decision.allowed:
            self.accounts.audit.record(event(Action.DENIED, Result.DENIED, decision.reason))
            raise ApiError("not_found" if decision.reason == "other_org" else "forbidden")
        if decision.cross_org:
            self.accounts.audit.record(event(Action.ADMIN, Result.OK, "cross_org"))
        return decision

    def _audit(
        self,
        caller: Caller | None,
        action: Action,
        org: str,
        kind: str,
        target: str,
        reason: str | None = None,
    ) -> None:
        u = caller.user if caller else None
        self.accounts.audit.record(
            AuditEvent(
                action=action,
                actor=u.id if u else None,
                role=u.role if u else None,
                org=org,
                target_type=kind,
                target_id=target,
                reason=reason,
                request_id=context_id.get(),
            )
        )

    async def allowed(self, caller: Caller | None, action: Do, target: Target) -> None:
        """:meth:`check` for a REST caller; the CLI (``caller`` None) is not checked."""
        if caller is not None:
            await self.check(caller, action, target)

    async def view(self, user: User) -> UserView:
        """``user`` with its lock state (one broker read)."""
        return (await self.views([user]))[0]

    async def views(self, found: list[User]) -> list[UserView]:
        """``found`` with their lock states (batched broker reads)."""
        keys = [account_key(u.email) for u in found]
        locked = await self.lockout.accounts_locked(keys) if keys else {}
        return [UserView(u, locked[k]) for u, k in zip(found, keys, strict=True)]

    async def user_or_404(self, user_id: str) -> User:
        """The user ``user_id``; raises ``not_found``."""
        user = await self.store.get_user(user_id)
        if user is None:
            raise ApiError("not_found")
        return user

    async def _visible_user(self, caller: Caller | None, action: Do, user_id: str) -> User:
        """A user the request names; ``not_found`` alike when unknown or in another org.

        The organisation check is the policy's (audited ``denied`` /
        ``other_org``); a superadmin sees every organisation.
        """
        user = await self.user_or_404(user_id)
        if caller is not None and user.org_id != caller.user.org_id:
            await self.check(caller, action, Target("user", user.org_id, id=user.id))
        return user

    # -- organisations ---------------------------------------------------------------
    async def create_org(self, caller: Caller | None, name: str) -> Org:
        """A new organisation (superadmins only; ``caller`` None: the CLI)."""
        if caller is not None:
            await self.check(caller, Do.ORG_CREATE, Target("org", caller.user.org_id))
        org = await self.store.create_org(name, self.accounts.now_us())
        self._audit(caller, Action.ADMIN, org.id, "org", org.id, "org_create")
        return org

    async def list_orgs(self, caller: Caller) -> list[Org]:
        """Every organisation for a superadmin; the caller's own otherwise."""
        if caller.user.role == Role.SUPERADMIN:
            return await self.store.list_orgs()
        org = await self.store.get_org(caller.user.org_id)
        return [org] if org else []

    # -- users -------------------------------------------------------------------------
    async def invite(
        self,
        caller: Caller | None,
        org_id: str,
        *,
        role: str,
        name: str,
        email: str,
        phone: str = "",
        guest_days: int | None = None,
    ) -> Invitation:
        """Create an invited user and a one-time invitation (``caller`` None: the CLI).

        Raises ``not_found`` (no such org), ``forbidden`` or ``conflict`` (email taken).
        """
        if caller is not None:
            await self.check(caller, Do.USER_INVITE, Target("user", org_id, user_role=role))
        if await self.store.get_org(org_id) is None:
            raise ApiError("not_found")
        now_us = self.accounts.now_us()
        expires = None if guest_days is None else now_us + guest_days * 86_400_000_000
        try:
            user = await self.store.create_user(
                org_id=org_id,
                role=role,
                name=name,
                email=email,
                phone=phone,
                status="invited",
                now_us=now_us,
                expires_us=expires,
                by=caller.user.id if caller else None,
            )
        except DuplicateError as exc:
            raise ApiError("conflict", "email already used") from exc
        token = new_token()
        until = now_us + self.invitation_ttl_us
        await self.store.create_invitation(token_hash(token), user.id, until)
        self._audit(caller, Action.ACCOUNT_CREATE, org_id, "user", user.id, None)
        return Invitation(user, token, until)

    async def list_users(self, caller: Caller | None, org_id: str | None) -> list[UserView]:
        """The users of an organisation (its admins, or a superadmin), with their lock
        states; names are decrypted only once the policy allowed the listing.

        ``org_id`` None (the CLI only): every organisation.
        """
        if caller is not None or org_id is not None:
            org = org_id or (caller.user.org_id if caller else "")
            await self.allowed(caller, Do.USER_LIST, Target("org", org, id=org))
            if await self.store.get_org(org) is None:
                raise ApiError("not_found")
        return await self.views(await self.store.list_users(org_id))

    async def get_user(self, caller: Caller, user_id: str) -> UserView:
        """One user (themself, their org's admins, a superadmin); else ``not_found``."""
        user = await self.user_or_404(user_id)
        await self.check(caller, Do.USER_READ, user_target(user))
        return await self.view(user)

    async def disable(self, caller: Caller | None, user_id: str) -> UserView:
        """Disable an account and revoke all its sessions (sockets closed at once)."""
        user = await self.user_or_404(user_id)
        await self.allowed(caller, Do.USER_DISABLE, user_target(user))
        return await self.change_account(
            caller, user, Action.ACCOUNT_DISABLE, None, revoke="disabled", status="disabled"
        )

    async def change_account(
        self,
        caller: Caller | None,
        user: User,
        action: Action,
        reason: str | None,
        *,
        revoke: str | None,
        **values: object,
    ) -> UserView:
        """Write ``values`` to ``user`` (a version row names the caller), audit ``action``
        / ``reason``, revoke every session (audited with the reason ``revoke``) unless
        it is None, and tell every node (cached credentials dropped, sockets closed)."""
        now_us = self.accounts.now_us()
        by = caller.user.id if caller else None
        # sessions first: the sockets close 4010 (signed out), not 4011 (reconnect)
        ids = await self.accounts.sessions.revoke(user.id, now_us) if revoke else []
        await self.store.update_user(user.id, by=by, now_us=now_us, **values)
        self.accounts.user_written(user.id)
        self._audit(caller, action, user.org_id, "user", user.id, reason)
        for sid in ids:
            self._audit(caller, Action.SESSION_REVOKE, user.org_id, "session", sid, revoke)
        await self.revocations.sessions_revoked(ids)
        await self.revocations.user_changed(user.id)
        return await self.view(await self.user_or_404(user.id))

    async def set_role(self, caller: Caller, user_id: str, role: str) -> UserView:
        """Change a user's role (recent re-authentication needed); their sockets close."""
        self.accounts.require_recent_auth(caller)
        user = await self.user_or_404(user_id)
        await self.check(caller, Do.ROLE_GRANT, user_target(user))
        await self.check(
            caller,
            Do.ROLE_GRANT,
            Target("user", user.org_id, id=user.id, user_id=user.id, user_role=role),
        )
        await self.store.update_user(
            user.id, by=caller.user.id, now_us=self.accounts.now_us(), role=role
        )
        self.accounts.user_written(user.id)
        self._audit(caller, Action.ROLE_REVOKE, user.org_id, "user", user.id, f"role_{user.role}")
        self._audit(caller, Action.ROLE_GRANT, user.org_id, "user", user.id, f"role_{role}")
        await self.revocations.user_changed(user.id)
        return await self.view(await self.user_or_404(user.id))

    async def unlock(self, caller: Caller | None, user_id: str) -> None:
        """Lift every temporary lock on an account (its own and every address's)."""
        user = await self.user_or_404(user_id)
        await self.allowed(caller, Do.USER_UNLOCK, user_target(user))
        await self.lockout.unlock(account_key(user.email))
        self._audit(caller, Action.UNLOCK, user.org_id, "user", user.id, "admin_unlock")

    # -- delegation and care ----------------------------------------------------------
    async def grant_delegation(
        self, caller: Caller | None, practitioner_id: str, delegate_id: str, scopes: list[str]
    ) -> str:
        """A practitioner (or their admin) delegates scoped rights to a secretary."""
        pract = await self._visible_user(caller, Do.DELEGATION_GRANT, practitioner_id)
        delegate = await self._visible_user(caller, Do.DELEGATION_GRANT, delegate_id)
        await self.allowed(caller, Do.DELEGATION_GRANT, user_target(delegate, pract.id))
        if delegate.role != Role.SECRETARY:
            raise ApiError("forbidden", "only a secretary receives a delegation")
        if pract.role != Role.PRACTITIONER or pract.org_id != delegate.org_id:
            raise ApiError("forbidden", "only a practitioner of the same organisation delegates")
        did = await self.relations.grant_delegation(
            pract.org_id, pract.id, delegate.id, scopes, self.accounts.now_us(),
            by=caller.user.id if caller else None,
        )  # fmt: skip
        self._audit(caller, Action.DELEGATION_GRANT, pract.org_id, "delegation", did)
        await self.revocations.user_changed(delegate.id)
        return did

    async def revoke_delegation(self, caller: Caller | None, delegation_id: str) -> None:
        """Revoke a delegation; the delegate's live sockets close at once."""
        found = await self.relations.delegation(delegation_id)
        if found is None:
            raise ApiError("not_found")
        org_id, d = found
        target = Target("delegation", org_id, id=delegation_id, practitioner_id=d.practitioner_id)
        await self.allowed(caller, Do.DELEGATION_REVOKE, target)
        await self.relations.revoke_delegation(
            delegation_id, self.accounts.now_us(), by=caller.user.id if caller else None
        )
        self._audit(caller, Action.DELEGATION_REVOKE, org_id, "delegation", delegation_id)
        await self.revocations.user_changed(d.delegate_id)

    async def delegations(self, caller: Caller) -> list[Delegation]:
        """The caller's live delegations (given or received)."""
        return await self.relations.delegations_of(caller.user.id)

    async def list_delegations(self, caller: Caller | None, org_id: str) -> list[Delegation]:
        """The live delegations of an organisation (its admins, or a superadmin)."""
        await self.allowed(caller, Do.DELEGATION_LIST, Target("org", org_id, id=org_id))
        if await self.store.get_org(org_id) is None:
            raise ApiError("not_found")
        return await self.relations.delegations_in(org_id)

    async def list_care(self, caller: Caller | None, org_id: str) -> list[tuple[str, Relationship]]:
        """(id, relationship) of an organisation's live care relationships (its admins)."""
        await self.allowed(caller, Do.CARE_LIST, Target("org", org_id, id=org_id))
        if await self.store.get_org(org_id) is None:
            raise ApiError("not_found")
        return await self.relations.relationships_in(org_id)

    async def add_care(self, caller: Caller | None, rel: Relationship) -> str:
        """Record a care relationship (its org's admins)."""
        actor = await self._visible_user(caller, Do.CARE_ASSIGN, rel.actor_id)
        patient = await self._visible_user(caller, Do.CARE_ASSIGN, rel.patient_id)
        await self.allowed(caller, Do.CARE_ASSIGN, Target("care", patient.org_id))
        if (
            actor.org_id != patient.org_id
            or patient.role != Role.PATIENT
            or actor.role != _KIND_ROLE[RelationKind(rel.kind)]
        ):
            raise ApiError("forbidden", "roles or organisations do not fit this relationship")
        rid = await self.relations.add_relationship(patient.org_id, rel, self.accounts.now_us())
        self._audit(caller, Action.ADMIN, patient.org_id, "care", rid, "care_assign")
        return rid

    async def end_care(self, caller: Caller | None, rel_id: str) -> None:
        """End a care relationship; affected sockets close.

        The rights it gave end at once: the sockets of its actor, its patient
        (who saw the actor's presence) and the secretaries the actor delegates
        to (whose access to the patient came through the actor) are closed
        (4010), so they reconnect with their current rights. Another
        organisation's relationship answers ``not_found`` as an unknown one.
        """
        found = await self.relations.relationship(rel_id)
        org = found.org_id if found is not None and found.org_id else None
        if caller is not None:  # an admin at all? then: of that relationship's org?
            mine = caller.user.org_id
            await self.check(caller, Do.CARE_ASSIGN, Target("care", mine, id=rel_id))
            if org is not None and org != mine:
                await self.check(caller, Do.CARE_ASSIGN, Target("care", org, id=rel_id))
        if org is None:
            raise ApiError("not_found")
        rel = await self.relations.end_relationship(rel_id, org, self.accounts.now_us())
        if rel is None:
            raise ApiError("not_found")
        self._audit(caller, Action.ADMIN, org, "care", rel_id, "care_end")
        delegates = [
            d.delegate_id
            for d in await self.relations.delegations_of(rel.actor_id)
            if d.practitioner_id == rel.actor_id
        ]
        for user_id in dict.fromkeys([rel.actor_id, rel.patient_id, *delegates]):
            await self.revocations.user_changed(user_id)

    async def create_superadmin(self, name: str, email: str) -> Invitation:
        """Bootstrap (CLI): a superadmin in the platform organisation, with an invitation."""
        orgs = [o for o in await self.store.list_orgs() if o.name == PLATFORM_ORG]
        org = orgs[0] if orgs else await self.create_org(None, PLATFORM_ORG)
        return await self.invite(None, org.id, role=Role.SUPERADMIN, name=name, email=email)


def user_target(user: User, practitioner_id: str | None = None) -> Target:
    """The policy target of an account (``practitioner_id``: a delegation's grantor)."""
    return Target(
        "user",
        user.org_id,
        id=user.id,
        user_id=user.id,
        user_role=user.role,
        practitioner_id=practitioner_id,
    )
