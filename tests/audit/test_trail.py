"""The batched writer on SQLite and PostgreSQL: fields, durability, concurrency, shutdown."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from server.audit import ops, store
from server.audit.checkpoints import FileCheckpointSink
from server.audit.events import Action, AuditEvent, Result
from server.audit.trail import AuditClosedError, AuditTrail, to_us
from server.store.db import Database
from tests.audit.conftest import KEY, KEY_ID, KEYRING, FakeClock, MakeTrail
from tests.audit.util import broken_at

RESULTS = [Result.OK, Result.DENIED, Result.FAILED]


def full_event(i: int, action: Action) -> AuditEvent:
    result = RESULTS[i % 3]
    return AuditEvent(
        action=action, result=result, actor=f"u-{i}", acting_for=f"p-{i}", role="secretary",
        org=f"org-{i % 2}", target_type="record", target_id=f"r-{i}",
        reason=None if result is Result.OK else f"code_{i}", source=f"10.0.{i}.1",
        request_id=f"req-{i}",
    )  # fmt: skip


async def entries(db: Database) -> list[Any]:
    return [e async for e in store.iter_entries(db)]


async def test_every_action_is_written_with_all_fields(
    db: Database, make_trail: MakeTrail, clock: FakeClock, sink: FileCheckpointSink
) -> None:
    trail = make_trail()
    await trail.start()
    sent = []
    for i, action in enumerate(Action):
        clock.advance(seconds=1)
        sent.append((full_event(i, action), to_us(clock.now)))
        trail.record(sent[-1][0])
    await trail.flush()
    stored = await entries(db)
    assert len(stored) == len(Action)
    for seq, ((ev, ts_us), e) in enumerate(zip(sent, stored, strict=True), start=1):
        assert (e.seq, e.ts_us, e.node, e.key_id) == (seq, ts_us, "node-a", KEY_ID)
        assert (e.action, e.result, e.reason) == (ev.action.value, ev.result.value, ev.reason)
        assert (e.actor, e.acting_for, e.role, e.org) == (ev.actor, ev.acting_for, ev.role, ev.org)
        assert (e.target_type, e.target_id) == (ev.target_type, ev.target_id)
        assert (e.source, e.request_id) == (ev.source, ev.request_id)
    result = await ops.verify_log(db, KEYRING, sinks=[sink])
    assert broken_at(result) is None
    assert (result.checked, result.checkpoints_checked) == (len(Action), 1)
    assert trail.stats.written == len(Action)


async def test_explicit_time_is_kept_and_naive_means_utc(
    db: Database, make_trail: MakeTrail
) -> None:
    trail = make_trail()
    await trail.start()
    trail.record(AuditEvent(action=Action.LOGIN, at=datetime(2024, 5, 1, 8, 30, tzinfo=UTC)))
    trail.record(AuditEvent(action=Action.LOGOUT, at=datetime(2024, 5, 1, 9, 30)))
    await trail.flush()
    stored = await entries(db)
    assert [ops.iso_us(e.ts_us) for e in stored] == [
        "2024-05-01T08:30:00.000000Z",
        "2024-05-01T09:30:00.000000Z",
    ]


async def test_record_durable_returns_committed_seq(
    db: Database, make_trail: MakeTrail, sink: FileCheckpointSink
) -> None:
    trail = make_trail(flush_interval_ms=60_000)  # only urgency can trigger a write
    await trail.start()
    for i in range(5):
        trail.record(full_event(i, Action.READ))
    seq = await trail.record_durable(AuditEvent(action=Action.ADMIN, actor="admin-1"))
    assert seq == 6
    stored = await entries(db)  # committed before record_durable returned
    assert [e.seq for e in stored] == [1, 2, 3, 4, 5, 6]
    checkpoints = await sink.read_all()
    assert checkpoints[-1].seq == 6  # and checkpointed outside the database


async def test_concurrent_writers_form_one_valid_chain(migrated_url: str, tmp_path: Path) -> None:
    per_node = 1500
    async with Database(migrated_url) as db_a, Database(migrated_url) as db_b:
        sinks = [FileCheckpointSink(tmp_path / f"{n}.checkpoints") for n in "ab"]
        trails = [
            AuditTrail(db, key_id=KEY_ID, key=KEY, node_id=f"node-{n}", sink=sink, batch_max=100,
                       flush_interval_ms=1)
            for db, n, sink in zip((db_a, db_b), "ab", sinks, strict=True)
        ]  # fmt: skip
        for trail in trails:
            await trail.start()

        async def produce(trail: AuditTrail, node: int) -> None:
            for i in range(per_node):
                trail.record(full_event(i, Action.READ))
                if i % 50 == 0:
                    await trail.record_durable(full_event(i, Action.UPDATE))

        await asyncio.gather(*(produce(t, n) for n, t in enumerate(trails)))
        for trail in trails:
            await trail.close()
        stored = await entries(db_a)
        assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
        assert len(stored) == 2 * (per_node + per_node // 50)
        assert {e.node for e in stored} == {"node-a", "node-b"}
        result = await ops.verify_log(db_a, KEYRING, sinks=sinks)
        assert broken_at(result) is None
        assert result.checkpoints_checked >= 2


async def test_clean_shutdown_under_load_loses_nothing(
    db: Database, make_trail: MakeTrail, sink: FileCheckpointSink
) -> None:
    trail = make_trail(batch_max=200)
    await trail.start()
    accepted = [0]
    busy = asyncio.Event()

    async def produce() -> None:
        i = 0
        while True:
            try:
                trail.record(full_event(i, Action.READ))
            except AuditClosedError:
                return
            accepted[0] += 1
            i += 1
            if accepted[0] >= 5000:
                busy.set()
            if i % 25 == 0:
                await asyncio.sleep(0)  # let the other producers and the writer run

    producers = [asyncio.create_task(produce()) for _ in range(4)]
    await busy.wait()
    assert trail.stats.queued > 0  # shutting down with work in flight
    await trail.close()
    await asyncio.gather(*producers)
    assert trail.stats.written == accepted[0] == trail.stats.recorded
    async with db.begin(readonly=True) as conn:
        assert await store.count_entries(conn) == accepted[0]
    assert broken_at(await ops.verify_log(db, KEYRING, sinks=[sink])) is None
    with pytest.raises(AuditClosedError):
        trail.record(full_event(0, Action.READ))


async def test_queue_full_never_drops_and_durable_callers_wait(
    db: Database, make_trail: MakeTrail
) -> None:
    trail = make_trail(queue_max=10)
    for i in range(15):  # not started: everything stays queued
        trail.record(full_event(i, Action.READ))
    assert trail.saturated
    assert (trail.stats.queued, trail.stats.overflow) == (15, 5)
    durable = asyncio.create_task(trail.record_durable(AuditEvent(action=Action.EXPORT)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not durable.done()  # backpressure: waits for room
    await trail.start()
    assert await durable == 16
    await trail.flush()
    assert not trail.saturated
    assert trail.stats.written == 16


async def test_failed_transaction_is_retried(
    migrated_url: str, make_trail: MakeTrail, sink: FileCheckpointSink
) -> None:
    class Flaky(Database):
        failures = 1

        async def run(self, fn: Any, **kwargs: Any) -> Any:
            if self.failures and kwargs.get("durable"):
                self.failures -= 1
                raise OperationalError("INSERT", {}, Exception("database is locked"))
            return await super().run(fn, **kwargs)

    async with Flaky(migrated_url) as flaky:
        trail = make_trail(database=flaky)
        await trail.start()
        trail.record(full_event(1, Action.LOGIN))
        await trail.flush()
        assert (trail.stats.write_errors, trail.stats.written) == (1, 1)
        assert broken_at(await ops.verify_log(flaky, KEYRING, sinks=[sink])) is None


async def test_close_without_start_and_flush_requires_start(make_trail: MakeTrail) -> None:
    trail = make_trail()
    with pytest.raises(RuntimeError, match="start"):
        await trail.flush()
    await trail.close()
    with pytest.raises(AuditClosedError):
        trail.record(AuditEvent(action=Action.LOGIN))
