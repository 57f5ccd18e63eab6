"""Operations on the stored trail: verify, purge, export, anonymous statistics.

Used by :mod:`server.audit.cli` and by tests; each takes a connected
:class:`~server.store.db.Database` of a migrated schema. SQL errors propagate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from server.audit import chain, store
from server.audit.chain import Break, BreakKind, Checkpoint, CheckpointKind, VerifyResult
from server.audit.checkpoints import CheckpointSink
from server.audit.trail import to_us
from server.config import MIN_RETENTION_DAYS
from server.store.db import Database

#: HDS: audit entries are kept at least one year; a purge never goes below this.


async def verify_log(
    db: Database,
    keyring: Mapping[str, bytes],
    *,
    sinks: Sequence[CheckpointSink] = (),
    from_seq: int | None = None,
    to_seq: int | None = None,
) -> VerifyResult:
    """Verify the stored chain (or ``[from_seq, to_seq]``) against ``keyring`` and the sinks.

    The whole chain is checked from genesis or from the newest authentic purge
    anchor. A range starting at ``from_seq`` trusts the stored tag of entry
    ``from_seq - 1`` (its own integrity is only proved by a full run).
    Checkpoints read from ``sinks`` must match the stored tags; one beyond the
    last entry means the tail was truncated. Never raises on tampering: the
    result names the first broken seq.
    """
    async with db.begin(readonly=True) as conn:
        head_seq, _ = await store.read_head(conn)
        anchors = await store.anchors(conn)
    external: list[Checkpoint] = []
    for sink in sinks:
        external.extend(await sink.read_all())
    bad = [a for a in anchors if not chain.checkpoint_authentic(a, keyring)]
    if bad:
        detail = "purge anchor with an invalid MAC"
        return VerifyResult(Break(bad[0].seq, BreakKind.BAD_CHECKPOINT, detail), 0, None, None)
    start_seq, prev_tag = 1, chain.GENESIS_TAG
    if anchors:
        start_seq, prev_tag = anchors[-1].seq + 1, anchors[-1].tag
    if from_seq is not None and from_seq > start_seq:
        async for before in store.iter_entries(db, from_seq=from_seq - 1, to_seq=from_seq - 1):
            start_seq, prev_tag = from_seq, before.tag
        if start_seq != from_seq:
            gap = Break(from_seq - 1, BreakKind.GAP, "the entry before the range is missing")
            return VerifyResult(gap, 0, None, None)
    verifier = chain.ChainVerifier(keyring, start_seq, prev_tag, to_seq, external)
    async for entry in store.iter_entries(db, from_seq=start_seq, to_seq=to_seq):
        verifier.feed(entry)
        if verifier.broken:
            break
    return verifier.finish(head_seq=head_seq)


class PurgeRefusedError(RuntimeError):
    """The chain does not verify: purging would destroy the evidence. Carries the break."""

    def __init__(self, brk: Break | None) -> None:
        super().__init__(f"audit chain broken at seq {brk.seq if brk else '?'}: purge refused")
        self.brk = brk


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """``purged`` entries deleted; ``anchor`` written (``None`` when nothing was old enough)."""

    purged: int
    anchor: Checkpoint | None
    cutoff: datetime


async def purge(
    db: Database,
    *,
    key_id: str,
    keyring: Mapping[str, bytes],
    node: str,
    sink: CheckpointSink,
    now: datetime,
    retention_days: int,
) -> PurgeResult:
    """Delete the oldest entries older than ``max(retention_days, 366)`` days before ``now``.

    Entries go as a prefix of the chain, so none younger than the cutoff is
    ever removed. The whole chain is verified first (raises
    :class:`PurgeRefusedError` if broken); then an anchor (seq and tag of the
    last purged entry, MAC'd with ``keyring[key_id]``) is appended to ``sink``
    and stored in the database in the deleting transaction, so the rest still
    verifies.
    """
    days = max(retention_days, MIN_RETENTION_DAYS)
    cutoff = now - timedelta(days=days)
    result = await verify_log(db, keyring, sinks=[sink])
    if not result.ok:
        raise PurgeRefusedError(result.first_break)
    async with db.begin(durable=True) as conn:
        boundary = await store.purge_boundary(conn, to_us(cutoff))
        if boundary is None:
            return PurgeResult(0, None, cutoff)
        seq, tag = boundary
        anchor = chain.sign_checkpoint(
            keyring[key_id], key_id, CheckpointKind.ANCHOR, seq, tag, to_us(now), node
        )
        await sink.append(anchor)
        purged = await store.delete_through(conn, anchor)
    return PurgeResult(purged, anchor, cutoff)


def iso_us(ts_us: int) -> str:
    """``2025-01-31T10:00:00.123456Z`` for microseconds since the epoch."""
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ts_us)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def export_lines(
    db: Database, *, org: str, start: datetime, end: datetime
) -> AsyncIterator[bytes]:
    """JSON lines (with newline) of ``org``'s entries with ``start <= time < end``, by seq.

    Each line holds every stored field of :class:`~server.audit.chain.Entry`, plus
    ``time`` (ISO 8601 UTC) after ``seq``, and ``tag`` in hex.
    """
    encoder = msgspec.json.Encoder()
    async for e in store.iter_entries(db, org=org, from_us=to_us(start), to_us=to_us(end)):
        fields = e._asdict()
        line = {"seq": fields.pop("seq"), "time": iso_us(e.ts_us), **fields, "tag": e.tag.hex()}
        yield encoder.encode(line) + b"\n"


class StatsLine(msgspec.Struct, frozen=True):
    """Anonymous usage: how many entries per hour, action and result (no ids)."""

    hour: str
    action: str
    result: str
    count: int


async def usage_stats(
    db: Database, *, start: datetime | None = None, end: datetime | None = None
) -> list[StatsLine]:
    """Counts by UTC hour, action and result within ``[start, end)``."""
    async with db.begin(readonly=True) as conn:
        rows = await store.hourly_counts(
            conn,
            from_us=None if start is None else to_us(start),
            to_us=None if end is None else to_us(end),
        )
    return [StatsLine(iso_us(h)[:13] + ":00Z", a, r, n) for h, a, r, n in rows]
