"""Display names for those allowed to see them: ``POST /directory``.

Ids are pseudonymous everywhere (sockets, chat, presence, the audit trail);
clients turn them into names here. The caller names up to
:data:`~server.accounts.schemas.DIRECTORY_MAX_IDS` ids and gets the name,
role and organisation of those :func:`server.policy.name_visible` lets them
see; the others are simply left out, so the answer never tells an unknown
id from a hidden one. Names are decrypted only for the visible ids.

Facts: the users named (one query, names still sealed), the live care
relationships of the caller and of the patients named, and the live
delegations of the caller and of the secretaries named (one query each, only
when a rule needs them). Each call is one audit entry: ``read`` of target
type ``directory`` by the caller (reason ``cross_org`` when a superadmin saw
another organisation's names).
"""

from __future__ import annotations

from dataclasses import dataclass

from server.accounts.schemas import DirectoryOut, DirectoryRequest, PersonOut
from server.accounts.service import AccountService, Caller
from server.accounts.web import Context, Endpoint
from server.audit.events import Action
from server.facts import Facts
from server.policy import Delegation, Relationship, Role, Subject, name_visible
from server.policy import Facts as PolicyFacts


@dataclass(frozen=True, slots=True)
class Person:
    """What a viewer may know of someone: name, role, organisation."""

    name: str
    role: str
    org_id: str


@dataclass
class Directory:
    """The names use case and its endpoint."""

    accounts: AccountService
    facts: Facts

    async def people(self, caller: Caller, ids: list[str]) -> dict[str, Person]:
        """The people among ``ids`` the caller may see (others left out); audited once."""
        me = caller.user
        refs = await self.accounts.store.user_refs(ids)
        staff = me.role not in (Role.ADMIN, Role.SUPERADMIN)
        patients = [r.id for r in refs.values() if r.role == Role.PATIENT and r.org_id == me.org_id]
        secretaries = [
            r.id for r in refs.values() if r.role == Role.SECRETARY and r.org_id == me.org_id
        ]
        delegated = [me.id] if me.role == Role.SECRETARY else []
        if me.role == Role.PATIENT:
            delegated += secretaries
        delegations: frozenset[Delegation] = (
            await self.facts.delegations_of(delegated) if delegated else frozenset()
        )
        relationships: frozenset[Relationship] = frozenset()
        if staff and (me.role == Role.PATIENT or patients):
            relationships = await self.facts.relationships_of([me.id, *patients])
        viewer = Subject(me.id, me.org_id, me.role, delegations)
        known = PolicyFacts(relationships)
        found: dict[str, Person] = {}
        crossed = False
        for ref in refs.values():
            decision = name_visible(
                viewer, Subject(ref.id, ref.org_id, ref.role, delegations), known
            )
            if decision.allowed:
                found[ref.id] = Person(self.accounts.store.open_name(ref), ref.role, ref.org_id)
                crossed = crossed or decision.cross_org
        self.accounts.event(
            Action.READ,
            me,
            reason="cross_org" if crossed else None,
            target=("directory", None),
        )
        return found

    async def directory(self, ctx: Context) -> DirectoryOut:
        b: DirectoryRequest = ctx.body
        found = await self.people(ctx.me, b.ids)
        return DirectoryOut({i: PersonOut(p.name, p.role, p.org_id) for i, p in found.items()})

    def endpoints(self) -> list[Endpoint]:
        """The directory endpoint (added to the API table)."""
        return [
            Endpoint(
                "POST",
                "/directory",
                self.directory,
                "Names, roles and organisations of the ids I may see (others left out)",
                DirectoryOut,
                DirectoryRequest,
            )
        ]
