"""Tampering with the stored rows: verify names the first broken seq and the kind of break."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from server.audit import chain, ops
from server.audit.chain import BreakKind, Entry
from server.audit.checkpoints import FileCheckpointSink
from server.audit.events import Action, AuditEvent
from server.store.db import Database
from tests.audit.conftest import KEYRING, MakeTrail
from tests.audit.util import broken_at

N = 10


@pytest.fixture
async def ten(db: Database, make_trail: MakeTrail) -> Database:
    """``db`` holding entries 1..10, flushed and checkpointed (head = 10)."""
    trail = make_trail()
    await trail.start()
    for i in range(N):
        trail.record(AuditEvent(action=Action.READ, actor=f"u-{i}", org="org-1",
                                target_type="record", target_id=f"r-{i}"))  # fmt: skip
    await trail.close()
    return db


async def sql(db: Database, statement: str, **params: Any) -> None:
    async with db.begin() as conn:
        await conn.execute(sa.text(statement), params)


async def row(db: Database, seq: int) -> Entry:
    async with db.begin(readonly=True) as conn:
        found = (
            await conn.execute(sa.text("SELECT * FROM audit_log WHERE seq = :s"), {"s": seq})
        ).one()
    return Entry(**found._mapping)


async def verify(db: Database, sink: FileCheckpointSink | None = None, **kw: Any) -> Any:
    return broken_at(await ops.verify_log(db, KEYRING, sinks=[sink] if sink else [], **kw))


async def test_untouched_log_verifies(ten: Database, sink: FileCheckpointSink) -> None:
    result = await ops.verify_log(ten, KEYRING, sinks=[sink])
    assert (result.ok, result.checked, result.last_seq) == (True, N, N)
    assert await verify(ten, sink, from_seq=4, to_seq=8) is None


@pytest.mark.parametrize(
    ("column", "value"),
    [("actor", "u-x"), ("ts_us", 1), ("action", "delete"), ("org", None), ("node", "evil")],
)
async def test_changed_field(
    ten: Database, sink: FileCheckpointSink, column: str, value: Any
) -> None:
    await sql(ten, f"UPDATE audit_log SET {column} = :v WHERE seq = 6", v=value)
    assert await verify(ten, sink) == (6, BreakKind.BAD_TAG)


async def test_flipped_byte_in_tag(ten: Database, sink: FileCheckpointSink) -> None:
    tag = bytearray((await row(ten, 3)).tag)
    tag[17] ^= 0x01
    await sql(ten, "UPDATE audit_log SET tag = :t WHERE seq = 3", t=bytes(tag))
    assert await verify(ten, sink) == (3, BreakKind.BAD_TAG)


async def test_deleted_entry(ten: Database, sink: FileCheckpointSink) -> None:
    await sql(ten, "DELETE FROM audit_log WHERE seq = 5")
    assert await verify(ten, sink) == (5, BreakKind.GAP)
    assert await verify(ten, sink, from_seq=6) == (5, BreakKind.GAP)  # range needs seq 5


async def test_reordered_entries(ten: Database, sink: FileCheckpointSink) -> None:
    await sql(ten, "UPDATE audit_log SET seq = -1 WHERE seq = 4")
    await sql(ten, "UPDATE audit_log SET seq = 4 WHERE seq = 8")
    await sql(ten, "UPDATE audit_log SET seq = 8 WHERE seq = -1")
    assert await verify(ten, sink) == (4, BreakKind.BAD_TAG)


async def test_truncated_tail_with_head_rewound(ten: Database, sink: FileCheckpointSink) -> None:
    """A careful attacker also rewinds the head row: the external checkpoint catches it."""
    last_kept = await row(ten, 7)
    await sql(ten, "DELETE FROM audit_log WHERE seq > 7")
    await sql(ten, "UPDATE audit_chain_head SET seq = 7, tag = :t", t=last_kept.tag)
    assert await verify(ten, sink) == (8, BreakKind.TRUNCATED)
    assert await verify(ten) is None  # without the external checkpoint it would pass


async def test_truncated_tail_detected_by_head(ten: Database) -> None:
    await sql(ten, "DELETE FROM audit_log WHERE seq > 7")
    assert await verify(ten) == (8, BreakKind.TRUNCATED)


async def test_everything_deleted(ten: Database, sink: FileCheckpointSink) -> None:
    await sql(ten, "DELETE FROM audit_log")
    await sql(ten, "UPDATE audit_chain_head SET seq = 0")
    assert await verify(ten, sink) == (1, BreakKind.TRUNCATED)


async def _forge(db: Database, seq: int, key: bytes, key_id: str = "k1") -> None:
    prev = (await row(db, seq - 1)).tag
    forged = chain.seal(key, prev, Entry(seq, 1, "node-a", "u-evil", None, None, "org-1", "read",
                                          None, None, "ok", None, None, None, key_id))  # fmt: skip
    await sql(db, "DELETE FROM audit_log WHERE seq = :s", s=seq)
    async with db.begin() as conn:
        await conn.execute(sa.text(
            "INSERT INTO audit_log (seq, ts_us, node, actor, org, action, result, key_id, tag) "
            "VALUES (:seq, :ts_us, :node, :actor, :org, :action, :result, :key_id, :tag)"
        ), {"seq": seq, "ts_us": 1, "node": "node-a", "actor": "u-evil", "org": "org-1",
            "action": "read", "result": "ok", "key_id": key_id, "tag": forged.tag})  # fmt: skip


async def test_forged_entry_with_a_wrong_key(ten: Database, sink: FileCheckpointSink) -> None:
    await _forge(ten, 4, b"w" * 32)
    assert await verify(ten, sink) == (4, BreakKind.BAD_TAG)


async def test_forged_entry_appended(ten: Database, sink: FileCheckpointSink) -> None:
    await _forge(ten, N + 1, b"w" * 32)
    assert await verify(ten, sink) == (N + 1, BreakKind.BAD_TAG)


async def test_forged_entry_with_an_unknown_key_id(ten: Database, sink: FileCheckpointSink) -> None:
    await _forge(ten, 9, b"w" * 32, key_id="k-evil")
    assert await verify(ten, sink) == (9, BreakKind.UNKNOWN_KEY)


async def test_chain_rewritten_with_the_key_is_caught_by_checkpoints(
    ten: Database, sink: FileCheckpointSink
) -> None:
    """Even with the key, rewriting an entry changes every later tag: checkpoints differ."""
    await _forge(ten, N, KEYRING["k1"])
    assert await verify(ten) is None  # internally consistent...
    assert await verify(ten, sink) == (N, BreakKind.CHECKPOINT_MISMATCH)  # ...but not outside
