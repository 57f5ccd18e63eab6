"""The one place where the capabilities read accounts facts (``server/accounts`` tables).

Who a user is (organisation, role, status), their live delegations, the care
relationships around them (``follows``, ``consultation`` with its id), and the
colleagues of an organisation. Decisions are not made here: they are
:mod:`server.policy` (rule 5).

:class:`AccountsFacts` reads the accounts tables (read-only transactions, one
hand-off to a database thread each: :meth:`server.store.db.Database.run`).
Raises SQLAlchemy errors from the driver only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa

from server.accounts.tables import care_relationships, delegations, users
from server.policy import Delegation, Exam, RelationKind, Relationship, Role, Subject
from server.store.db import Database

#: The people of an EEG exam by its id (None: no such exam), for decisions about
#: what is attached to it (records). The EEG capability provides it; a node
#: without EEG passes :func:`no_exams`.
ExamPeople = Callable[[str], Awaitable[Exam | None]]


async def no_exams(exam_id: str) -> Exam | None:
    """The :data:`ExamPeople` of a node without EEG: no exam is known."""
    return None


#: Colleagues listed as "my contacts", at most (by id; past it, the rest are
#: not offered as contacts but can still be named in presence requests).
MAX_CONTACTS = 1000


@dataclass(frozen=True, slots=True)
class UserFact:
    """An active account: id, organisation, role."""

    user_id: str
    org_id: str
    role: str


@dataclass(frozen=True, slots=True)
class Consultation:
    """A consultation's organisation, patient and practitioners (from care relationships)."""

    id: str
    org_id: str
    patient_id: str
    practitioners: frozenset[str]


class Facts(Protocol):
    """What the capabilities need to know about accounts."""

    async def users(self, ids: Iterable[str]) -> dict[str, UserFact]:
        """The active accounts among ``ids``."""
        ...

    async def delegations_of(self, user_ids: Iterable[str]) -> frozenset[Delegation]:
        """Live delegations given to or by any of ``user_ids``."""
        ...

    async def relationships_of(self, user_ids: Iterable[str]) -> frozenset[Relationship]:
        """Live care relationships where one of ``user_ids`` is actor or patient."""
        ...

    async def consultation(self, consultation_id: str) -> Consultation | None:
        """The consultation ``consultation_id``, or None when it has no live relationship."""
        ...

    async def colleagues(self, org_id: str) -> list[UserFact]:
        """Active staff of ``org_id`` (at most :data:`MAX_CONTACTS`)."""
        ...


class AccountsFacts:
    """:class:`Facts` read from the accounts tables of ``db``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def users(self, ids: Iterable[str]) -> dict[str, UserFact]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        c = users.c
        query = sa.select(c.id, c.org_id, c.role).where(c.id.in_(wanted), c.status == "active")
        rows = await self._db.run(lambda c: c.execute(query).all(), readonly=True)
        return {r.id: UserFact(r.id, r.org_id, r.role) for r in rows}

    async def delegations_of(self, user_ids: Iterable[str]) -> frozenset[Delegation]:
        wanted = sorted(set(user_ids))
        if not wanted:
            return frozenset()
        c = delegations.c
        query = sa.select(delegations).where(
            sa.or_(c.delegate_id.in_(wanted), c.practitioner_id.in_(wanted)),
            c.revoked_us.is_(None),
        )
        rows = await self._db.run(lambda c: c.execute(query).all(), readonly=True)
        return frozenset(
            Delegation(
                r.practitioner_id, r.delegate_id,
                frozenset(s for s in str(r.scopes).split(",") if s), r.id,
            )
            for r in rows
        )  # fmt: skip

    async def relationships_of(self, user_ids: Iterable[str]) -> frozenset[Relationship]:
        wanted = sorted(set(user_ids))
        if not wanted:
            return frozenset()
        c = care_relationships.c
        query = sa.select(care_relationships).where(
            sa.or_(c.actor_id.in_(wanted), c.patient_id.in_(wanted)), c.ended_us.is_(None)
        )
        rows = await self._db.run(lambda c: c.execute(query).all(), readonly=True)
        return frozenset(
            Relationship(r.kind, r.actor_id, r.patient_id, r.ref_id, r.org_id) for r in rows
        )

    async def consultation(self, consultation_id: str) -> Consultation | None:
        c = care_relationships.c
        query = sa.select(care_relationships).where(
            c.kind == RelationKind.CONSULTATION.value,
            c.ref_id == consultation_id,
            c.ended_us.is_(None),
        )
        rows = await self._db.run(lambda c: c.execute(query).all(), readonly=True)
        if not rows:
            return None
        patients = {(r.patient_id, r.org_id) for r in rows}
        if len(patients) != 1:
            return None  # inconsistent facts: refuse rather than guess
        ((patient, org),) = patients
        return Consultation(consultation_id, org, patient, frozenset(r.actor_id for r in rows))

    async def colleagues(self, org_id: str) -> list[UserFact]:
        c = users.c
        query = (
            sa.select(c.id, c.org_id, c.role)
            .where(c.org_id == org_id, c.status == "active", c.role != Role.PATIENT.value)
            .order_by(c.id)
            .limit(MAX_CONTACTS)
        )
        rows = await self._db.run(lambda c: c.execute(query).all(), readonly=True)
        return [UserFact(r.id, r.org_id, r.role) for r in rows]


async def subject_of(
    facts: Facts, user_id: str, org_id: str, role: str, acting_for: str | None = None
) -> Subject:
    """The policy :class:`~server.policy.Subject` of a user, with their live delegations."""
    mine = frozenset(d for d in await facts.delegations_of([user_id]) if d.delegate_id == user_id)
    return Subject(user_id, org_id, role, mine, acting_for)
