"""SQL for the audit trail (SQLAlchemy Core; identical on SQLite and PostgreSQL).

Every function takes a connection already inside a transaction (the writer's
``lock_head`` and ``append`` a synchronous one, in ``Database.run``; the
others an ``AsyncConnection``) except the ``iter_*`` helpers, which open
short read transactions per page so that a long verification or export never
holds a lock or a snapshot for long. SQL errors propagate unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from server.audit.chain import Checkpoint, CheckpointKind, Entry
from server.store.db import Database
from server.store.fastsql import MultiInsert, Prepared
from server.store.schema import audit_anchor, audit_chain_head, audit_log

#: Audit rows read per query while verifying or exporting (bounds memory).
PAGE_ROWS = 5000
HOUR_US = 3_600_000_000  #: microseconds per hour (statistics buckets)


def _entry(row: sa.Row[Any]) -> Entry:
    return Entry(**row._mapping)


_LOCK_HEAD = Prepared(
    sa.select(audit_chain_head.c.seq, audit_chain_head.c.tag)
    .where(audit_chain_head.c.id == 1)
    .with_for_update()
)
_MOVE_HEAD = Prepared(
    audit_chain_head.update()
    .where(audit_chain_head.c.id == 1)
    .values(seq=sa.bindparam("seq"), tag=sa.bindparam("tag"), updated_us=sa.bindparam("at"))
)
_INSERT = MultiInsert(audit_log, Entry._fields)


def lock_head(conn: Connection) -> tuple[int, bytes]:
    """The chain head ``(seq, tag)``, locked until the transaction ends.

    PostgreSQL takes a row lock (``FOR UPDATE``); SQLite ignores the clause but
    its ``BEGIN IMMEDIATE`` already excludes other writers. Raises
    ``LookupError`` if the head row is missing (database not migrated).
    """
    row = _LOCK_HEAD.execute(conn, {}).first()
    if row is None:
        raise LookupError("audit_chain_head row missing: run medhub migrate")
    return int(row.seq), bytes(row.tag)


async def read_head(conn: AsyncConnection) -> tuple[int, bytes]:
    """The chain head ``(seq, tag)`` without locking it."""
    stmt = sa.select(audit_chain_head.c.seq, audit_chain_head.c.tag)
    row = (await conn.execute(stmt.where(audit_chain_head.c.id == 1))).first()
    if row is None:
        raise LookupError("audit_chain_head row missing: run medhub migrate")
    return int(row.seq), bytes(row.tag)


def append(conn: Connection, entries: Sequence[Entry], now_us: int) -> None:
    """Insert sealed ``entries`` (consecutive seqs after the locked head) and move the head.

    Synchronous (the writer's transaction, :meth:`server.store.db.Database.run`).
    """
    if not entries:
        return
    _INSERT.execute(conn, entries)
    last = entries[-1]
    _MOVE_HEAD.execute(conn, {"seq": last.seq, "tag": last.tag, "at": now_us})


async def iter_entries(
    db: Database, *, from_seq: int = 1, to_seq: int | None = None, org: str | None = None,
    from_us: int | None = None, to_us: int | None = None,
) -> AsyncIterator[Entry]:  # fmt: skip
    """Entries in ascending seq within the bounds (inclusive seqs, ``[from_us, to_us)``)."""
    after = from_seq - 1
    while True:
        stmt = sa.select(audit_log).where(audit_log.c.seq > after)
        if to_seq is not None:
            stmt = stmt.where(audit_log.c.seq <= to_seq)
        if org is not None:
            stmt = stmt.where(audit_log.c.org == org)
        if from_us is not None:
            stmt = stmt.where(audit_log.c.ts_us >= from_us)
        if to_us is not None:
            stmt = stmt.where(audit_log.c.ts_us < to_us)
        async with db.begin(readonly=True) as conn:
            rows = (await conn.execute(stmt.order_by(audit_log.c.seq).limit(PAGE_ROWS))).all()
        for row in rows:
            yield _entry(row)
        if len(rows) < PAGE_ROWS:
            return
        after = int(rows[-1].seq)


async def count_entries(conn: AsyncConnection) -> int:
    """How many entries the table holds."""
    return int((await conn.execute(sa.select(sa.func.count()).select_from(audit_log))).scalar_one())


async def anchors(conn: AsyncConnection) -> list[Checkpoint]:
    """Every purge anchor stored in the database, ascending seq."""
    rows = (await conn.execute(sa.select(audit_anchor).order_by(audit_anchor.c.seq))).all()
    return [
        Checkpoint(CheckpointKind.ANCHOR, int(r.seq), bytes(r.tag), int(r.ts_us), r.node,
                   r.key_id, bytes(r.mac))
        for r in rows
    ]  # fmt: skip


async def purge_boundary(conn: AsyncConnection, cutoff_us: int) -> tuple[int, bytes] | None:
    """``(seq, tag)`` of the last entry of the oldest prefix entirely older than ``cutoff_us``.

    Entries are purged as a prefix of the chain, so an entry younger than the
    cutoff is never removed even if an older one follows it. ``None`` when
    there is nothing to purge.
    """
    young = sa.select(sa.func.min(audit_log.c.seq)).where(audit_log.c.ts_us >= cutoff_us)
    first_young = (await conn.execute(young)).scalar_one_or_none()
    last = sa.select(audit_log.c.seq, audit_log.c.tag)
    if first_young is not None:
        last = last.where(audit_log.c.seq < first_young)
    row = (await conn.execute(last.order_by(audit_log.c.seq.desc()).limit(1))).first()
    return None if row is None else (int(row.seq), bytes(row.tag))


async def delete_through(conn: AsyncConnection, anchor: Checkpoint) -> int:
    """Store ``anchor`` and delete every entry with ``seq <= anchor.seq``; returns the count."""
    await conn.execute(
        audit_anchor.insert().values(
            seq=anchor.seq, tag=anchor.tag, ts_us=anchor.ts_us, node=anchor.node,
            key_id=anchor.key_id, mac=anchor.mac,
        )
    )  # fmt: skip
    result = await conn.execute(audit_log.delete().where(audit_log.c.seq <= anchor.seq))
    return int(result.rowcount)


async def hourly_counts(
    conn: AsyncConnection, *, from_us: int | None = None, to_us: int | None = None
) -> list[tuple[int, str, str, int]]:
    """``(hour_start_us, action, result, count)`` rows, ascending: no ids at all."""
    hour = (audit_log.c.ts_us // HOUR_US).label("hour")
    stmt = sa.select(hour, audit_log.c.action, audit_log.c.result, sa.func.count().label("n"))
    if from_us is not None:
        stmt = stmt.where(audit_log.c.ts_us >= from_us)
    if to_us is not None:
        stmt = stmt.where(audit_log.c.ts_us < to_us)
    stmt = stmt.group_by(hour, audit_log.c.action, audit_log.c.result).order_by(
        hour, audit_log.c.action, audit_log.c.result
    )
    rows = (await conn.execute(stmt)).all()
    return [(int(r.hour) * HOUR_US, r.action, r.result, int(r.n)) for r in rows]
