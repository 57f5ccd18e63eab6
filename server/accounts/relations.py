"""SQL for delegations and care relationships, and loading them as policy facts.

Every grant and revocation of a delegation inserts its ``delegation_versions``
row (who, when, the delegation as it became) in the same transaction: the
history cannot miss a change that was committed. Version rows are never
updated or deleted.

Raises SQLAlchemy errors from the driver only.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from server.accounts import access_log
from server.accounts.tables import care_relationships, delegation_versions, delegations
from server.policy import Delegation, Relationship
from server.store.db import Database
from server.store.ids import new_id


@dataclass(frozen=True, slots=True)
class DelegationVersion:
    """One version row of a delegation: the delegation as ``changed_by`` left it."""

    delegation_id: str
    version: int
    action: str  # grant | revoke | baseline (existed before the history began)
    changed_by: str | None  # user id; None: the system or the CLI
    changed_us: int
    org_id: str
    practitioner_id: str
    delegate_id: str
    scopes: frozenset[str]
    revoked_us: int | None


class RelationStore:
    """Delegations (practitioner -> secretary, scoped) and care relationships."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def grant_delegation(
        self,
        org_id: str,
        practitioner_id: str,
        delegate_id: str,
        scopes: list[str],
        now_us: int,
        by: str | None = None,
    ) -> str:
        """Store a delegation and its version 1 (``grant`` by ``by``: a user id, or None for
        the system or the CLI); returns its id."""
        delegation_id = new_id("d")
        row = {
            "org_id": org_id,
            "practitioner_id": practitioner_id,
            "delegate_id": delegate_id,
            "scopes": ",".join(sorted(scopes)),
            "revoked_us": None,
        }
        async with self.db.begin() as conn:
            await conn.execute(
                sa.insert(delegations).values(id=delegation_id, created_us=now_us, **row)
            )
            await conn.execute(
                sa.insert(delegation_versions).values(
                    delegation_id=delegation_id,
                    version=1,
                    action="grant",
                    changed_by=by,
                    changed_us=now_us,
                    **row,
                )
            )
            await access_log.record(conn, access_log.ChangeKind.RIGHTS, [delegate_id], now_us)
        return delegation_id

    async def delegation(self, delegation_id: str) -> tuple[str, Delegation] | None:
        """(org id, delegation) of a live delegation, or None."""
        query = sa.select(delegations).where(
            delegations.c.id == delegation_id, delegations.c.revoked_us.is_(None)
        )
        async with self.db.begin(readonly=True) as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return str(row.org_id), _delegation(row)

    async def revoke_delegation(
        self, delegation_id: str, now_us: int, by: str | None = None
    ) -> bool:
        """Revoke a live delegation and write its ``revoke`` version (by ``by``, as for
        :meth:`grant_delegation`); False if none."""
        live = (delegations.c.id == delegation_id, delegations.c.revoked_us.is_(None))
        stmt = sa.update(delegations).where(*live).values(revoked_us=now_us)
        v = delegation_versions.c
        last = sa.select(sa.func.max(v.version)).where(v.delegation_id == delegation_id)
        async with self.db.begin() as conn:
            row = (await conn.execute(sa.select(delegations).where(*live))).first()
            if row is None or (await conn.execute(stmt)).rowcount != 1:
                return False
            version = int((await conn.execute(last)).scalar_one() or 0) + 1
            await conn.execute(
                sa.insert(delegation_versions).values(
                    delegation_id=delegation_id,
                    version=version,
                    action="revoke",
                    changed_by=by,
                    changed_us=now_us,
                    org_id=row.org_id,
                    practitioner_id=row.practitioner_id,
                    delegate_id=row.delegate_id,
                    scopes=row.scopes,
                    revoked_us=now_us,
                )
            )
            await access_log.record(conn, access_log.ChangeKind.RIGHTS, [row.delegate_id], now_us)
            return True

    async def delegation_history(self, delegation_id: str) -> list[DelegationVersion]:
        """The version rows of a delegation (live or revoked), oldest first; [] if unknown."""
        v = delegation_versions.c
        query = (
            sa.select(delegation_versions)
            .where(v.delegation_id == delegation_id)
            .order_by(v.version)
        )
        async with self.db.begin(readonly=True) as conn:
            rows = (await conn.execute(query)).all()
        return [_delegation_version(r) for r in rows]

    async def delegations_of(self, user_id: str) -> list[Delegation]:
        """Live delegations given to or by ``user_id``."""
        query = sa.select(delegations).where(
            sa.or_(delegations.c.delegate_id == user_id, delegations.c.practitioner_id == user_id),
            delegations.c.revoked_us.is_(None),
        )
        async with self.db.begin(readonly=True) as conn:
            return [_delegation(r) for r in await conn.execute(query)]

    async def add_relationship(self, org_id: str, rel: Relationship, now_us: int) -> str:
        """Store a care relationship; returns its id."""
        rel_id = new_id("r")
        async with self.db.begin() as conn:
            await conn.execute(
                sa.insert(care_relationships).values(
                    id=rel_id,
                    org_id=org_id,
                    kind=rel.kind,
                    actor_id=rel.actor_id,
                    patient_id=rel.patient_id,
                    ref_id=rel.ref_id,
                    created_us=now_us,
                    ended_us=None,
                )
            )
        return rel_id

    async def end_relationship(self, rel_id: str, org_id: str, now_us: int) -> Relationship | None:
        """End a live relationship of ``org_id``; the relationship ended, or None if none."""
        c = care_relationships.c
        live = (c.id == rel_id, c.org_id == org_id, c.ended_us.is_(None))
        async with self.db.begin() as conn:
            row = (await conn.execute(sa.select(care_relationships).where(*live))).first()
            if row is None:
                return None
            stmt = sa.update(care_relationships).where(*live).values(ended_us=now_us)
            if (await conn.execute(stmt)).rowcount != 1:
                return None  # ended concurrently: that caller notifies
            # its actor, its patient, and the secretaries the actor delegates to
            d = delegations.c
            found = await conn.execute(
                sa.select(d.delegate_id).where(
                    d.practitioner_id == row.actor_id, d.revoked_us.is_(None)
                )
            )
            affected = dict.fromkeys([row.actor_id, row.patient_id, *(r[0] for r in found)])
            await access_log.record(conn, access_log.ChangeKind.RIGHTS, list(affected), now_us)
        return Relationship(row.kind, row.actor_id, row.patient_id, row.ref_id, row.org_id)

    async def relationship(self, rel_id: str) -> Relationship | None:
        """The live relationship ``rel_id`` (its ``org_id`` filled), or None."""
        c = care_relationships.c
        query = sa.select(care_relationships).where(c.id == rel_id, c.ended_us.is_(None))
        async with self.db.begin(readonly=True) as conn:
            r = (await conn.execute(query)).first()
        return None if r is None else _relationship(r)

    async def relationships_in(self, org_id: str) -> list[tuple[str, Relationship]]:
        """(id, relationship) of the live relationships of ``org_id``, by id."""
        c = care_relationships.c
        query = (
            sa.select(care_relationships)
            .where(c.org_id == org_id, c.ended_us.is_(None))
            .order_by(c.id)
        )
        async with self.db.begin(readonly=True) as conn:
            return [(str(r.id), _relationship(r)) for r in await conn.execute(query)]

    async def delegations_in(self, org_id: str) -> list[Delegation]:
        """The live delegations of ``org_id``, by id."""
        d = delegations.c
        query = (
            sa.select(delegations).where(d.org_id == org_id, d.revoked_us.is_(None)).order_by(d.id)
        )
        async with self.db.begin(readonly=True) as conn:
            return [_delegation(r) for r in await conn.execute(query)]

    async def relationships_of(self, user_ids: list[str]) -> list[tuple[str, Relationship]]:
        """(id, relationship) of live relationships where a user is actor or patient."""
        c = care_relationships.c
        query = (
            sa.select(care_relationships)
            .where(
                sa.or_(c.actor_id.in_(user_ids), c.patient_id.in_(user_ids)),
                c.ended_us.is_(None),
            )
            .order_by(c.id)
        )
        async with self.db.begin(readonly=True) as conn:
            return [
                (str(r.id), Relationship(r.kind, r.actor_id, r.patient_id, r.ref_id, r.org_id))
                for r in await conn.execute(query)
            ]


def _relationship(row: sa.Row[object]) -> Relationship:
    m = row._mapping
    return Relationship(m["kind"], m["actor_id"], m["patient_id"], m["ref_id"], m["org_id"])


def _delegation(row: sa.Row[object]) -> Delegation:
    m = row._mapping
    scopes = frozenset(s for s in str(m["scopes"]).split(",") if s)
    return Delegation(str(m["practitioner_id"]), str(m["delegate_id"]), scopes, str(m["id"]))


def _delegation_version(row: sa.Row[object]) -> DelegationVersion:
    m = row._mapping
    scopes = frozenset(s for s in str(m["scopes"]).split(",") if s)
    return DelegationVersion(
        str(m["delegation_id"]), int(m["version"]), str(m["action"]), m["changed_by"],
        int(m["changed_us"]), str(m["org_id"]), str(m["practitioner_id"]),
        str(m["delegate_id"]), scopes, m["revoked_us"],
    )  # fmt: skip
