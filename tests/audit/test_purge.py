"""Retention: never below 366 days (injected clock), anchors keep the rest verifiable."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from server.audit import ops, store
from server.audit.chain import BreakKind, CheckpointKind
from server.audit.checkpoints import FileCheckpointSink
from server.audit.events import Action, AuditEvent
from server.store.db import Database
from tests.audit.conftest import KEY_ID, KEYRING, FakeClock, MakeTrail
from tests.audit.util import broken_at


async def fill(make_trail: MakeTrail, clock: FakeClock, days: list[int]) -> None:
    """One entry per listed day offset (days since the clock's time), flushed; clock restored."""
    start = clock.now
    trail = make_trail()
    await trail.start()
    for i, day in enumerate(days):
        clock.now = start
        clock.advance(days=day)
        trail.record(AuditEvent(action=Action.READ, actor=f"u-{i}", org="org-1"))
    await trail.close()
    clock.now = start


async def run_purge(
    db: Database, sink: FileCheckpointSink, now: datetime, days: int
) -> ops.PurgeResult:
    return await ops.purge(db, key_id=KEY_ID, keyring=KEYRING, node="node-a", sink=sink, now=now,
                           retention_days=days)  # fmt: skip


async def seqs(db: Database) -> list[int]:
    return [e.seq async for e in store.iter_entries(db)]


async def test_purge_respects_the_floor_and_the_rest_verifies(
    db: Database, make_trail: MakeTrail, clock: FakeClock, sink: FileCheckpointSink
) -> None:
    start = clock.now
    await fill(make_trail, clock, [0, 10, 20, 300, 400, 500])
    # retention 100 days asked: the 366-day floor wins; at day 365 nothing is old enough
    assert (await run_purge(db, sink, start + timedelta(days=365), 100)).purged == 0
    assert (await run_purge(db, sink, start + timedelta(days=366), 100)).purged == 0  # not <
    clock.advance(days=366 + 15)  # entries of day 0 and 10 are past the floor, day 20 is not
    result = await run_purge(db, sink, clock.now, 100)
    assert result.purged == 2
    assert result.anchor is not None
    assert result.anchor.seq == 2
    assert await seqs(db) == [3, 4, 5, 6]
    verified = await ops.verify_log(db, KEYRING, sinks=[sink])
    assert broken_at(verified) is None
    assert (verified.first_seq, verified.checked) == (3, 4)
    kinds = [cp.kind for cp in await sink.read_all()]
    assert CheckpointKind.ANCHOR in kinds  # the anchor is also outside the database
    # a second purge at the same time has nothing left to do
    assert (await run_purge(db, sink, clock.now, 100)).purged == 0


async def test_younger_entry_is_never_purged_even_behind_an_older_one(
    db: Database, make_trail: MakeTrail, clock: FakeClock, sink: FileCheckpointSink
) -> None:
    """Purge removes a prefix: seq 2 is young, so old seq 3 stays too."""
    await fill(make_trail, clock, [0, 200, 0, 0])
    clock.advance(days=400)
    result = await run_purge(db, sink, clock.now, 366)
    assert result.purged == 1
    assert await seqs(db) == [2, 3, 4]


async def test_new_entries_after_purge_keep_verifying(
    db: Database, make_trail: MakeTrail, clock: FakeClock, sink: FileCheckpointSink
) -> None:
    await fill(make_trail, clock, [0, 0, 0])
    clock.advance(days=800)
    assert (await run_purge(db, sink, clock.now, 400)).purged == 3  # everything
    assert broken_at(await ops.verify_log(db, KEYRING, sinks=[sink])) is None
    await fill(make_trail, clock, [0, 1])
    assert await seqs(db) == [4, 5]
    assert broken_at(await ops.verify_log(db, KEYRING, sinks=[sink])) is None


async def test_tampered_anchor_and_deleted_anchor_are_detected(
    db: Database, make_trail: MakeTrail, clock: FakeClock, sink: FileCheckpointSink
) -> None:
    await fill(make_trail, clock, [0, 0, 500, 500])
    clock.advance(days=400)
    assert (await run_purge(db, sink, clock.now, 366)).purged == 2
    async with db.begin() as conn:
        await conn.execute(sa.text("UPDATE audit_anchor SET seq = 3"))  # "purge" one more
        await conn.execute(sa.text("DELETE FROM audit_log WHERE seq = 3"))
    assert broken_at(await ops.verify_log(db, KEYRING)) == (3, BreakKind.BAD_CHECKPOINT)
    async with db.begin() as conn:
        await conn.execute(sa.text("DELETE FROM audit_anchor"))
    assert broken_at(await ops.verify_log(db, KEYRING)) == (1, BreakKind.GAP)


async def test_purge_refuses_a_broken_chain(
    db: Database, make_trail: MakeTrail, clock: FakeClock, sink: FileCheckpointSink
) -> None:
    await fill(make_trail, clock, [0, 0, 0])
    async with db.begin() as conn:
        await conn.execute(sa.text("UPDATE audit_log SET actor = 'u-x' WHERE seq = 2"))
    clock.advance(days=800)
    with pytest.raises(ops.PurgeRefusedError) as info:
        await run_purge(db, sink, clock.now, 400)
    assert info.value.brk is not None
    assert info.value.brk.seq == 2
    assert await seqs(db) == [1, 2, 3]  # the evidence is kept
