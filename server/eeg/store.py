"""The SQL of the EEG capability: exams, streams, chunks, annotations (sync, one connection).

Every function takes a SQLAlchemy ``Connection`` inside a transaction: run it
with :meth:`server.store.db.Database.run` (reads) or in a write job of the
node's write sequence (:mod:`server.store.jobs`), so a change commits with its
audit entries and its version row. Sensitive values are sealed with the
at-rest keyring, their AAD naming the row (:func:`server.security.crypto.aad`).

Raises SQLAlchemy errors from the driver, :class:`~server.security.crypto.CryptoError`
for a value that fails its integrity check, and the exceptions below.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from protocol.eeg import StreamMeta
from server import policy
from server.eeg.tables import (
    eeg_chunk,
    eeg_exam,
    eeg_exam_interpreter,
    eeg_exam_version,
    eeg_stream,
    eeg_stream_version,
)
from server.security.crypto import Keyring, aad


class NotFound(Exception):
    """No such exam, stream or annotation."""


class Conflict(Exception):
    """The target changed meanwhile (a stream taken over by another node, a deleted row)."""


# -- exams -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExamRow:
    """An exam: its people (:attr:`people`, what the policy decides on) and its state."""

    people: policy.Exam
    state: str
    indication: str
    version: int
    created_us: int
    updated_us: int

    @property
    def id(self) -> str:
        return self.people.id


EXAM_FIELDS = ("patient_id", "ordering_id", "technician_id", "interpreters", "state", "indication")


def _exam_snapshot(row: ExamRow) -> bytes:
    p = row.people
    return msgpack.packb(  # type: ignore[no-any-return]
        {
            "org_id": p.org_id,
            "patient_id": p.patient_id,
            "ordering_id": p.ordering_id,
            "technician_id": p.technician_id,
            "interpreters": sorted(p.interpreters),
            "state": row.state,
            "indication": row.indication,
        }
    )


def create_exam(conn: Connection, keys: Keyring, row: ExamRow, by: str | None) -> None:
    """Insert ``row`` (version 1) with its interpreters and its first version row."""
    p = row.people
    conn.execute(
        sa.insert(eeg_exam).values(
            id=p.id,
            org_id=p.org_id,
            patient_id=p.patient_id,
            ordering_id=p.ordering_id,
            technician_id=p.technician_id,
            state=row.state,
            indication=keys.seal(row.indication.encode(), aad("eeg_exam", "indication", p.id)),
            created_by=by,
            created_us=row.created_us,
            updated_us=row.updated_us,
            version=1,
        )
    )
    _set_interpreters(conn, p.id, p.interpreters)
    _exam_version(conn, keys, row, 1, "create", by, EXAM_FIELDS)


def _set_interpreters(conn: Connection, exam_id: str, users: Iterable[str]) -> None:
    conn.execute(sa.delete(eeg_exam_interpreter).where(eeg_exam_interpreter.c.exam_id == exam_id))
    rows = [{"exam_id": exam_id, "user_id": u} for u in sorted(set(users))]
    if rows:
        conn.execute(sa.insert(eeg_exam_interpreter), rows)


def _exam_version(
    conn: Connection,
    keys: Keyring,
    row: ExamRow,
    version: int,
    action: str,
    by: str | None,
    fields: Sequence[str],
) -> None:
    conn.execute(
        sa.insert(eeg_exam_version).values(
            exam_id=row.id,
            version=version,
            action=action,
            changed_by=by,
            changed_us=row.updated_us,
            fields=",".join(fields),
            snapshot=keys.seal(
                _exam_snapshot(row), aad("eeg_exam_version", "snapshot", f"{row.id}:{version}")
            ),
        )
    )


def update_exam(
    conn: Connection, keys: Keyring, new: ExamRow, expected_version: int, by: str | None
) -> ExamRow:
    """Replace an exam's assignments/state with ``new`` and write a version row.

    Raises :class:`Conflict` when the exam is not at ``expected_version`` any more.
    """
    old = get_exam(conn, keys, new.id)
    if old is None:
        raise NotFound(new.id)
    version = expected_version + 1
    done = conn.execute(
        sa.update(eeg_exam)
        .where(eeg_exam.c.id == new.id, eeg_exam.c.version == expected_version)
        .values(
            ordering_id=new.people.ordering_id,
            technician_id=new.people.technician_id,
            state=new.state,
            updated_us=new.updated_us,
            version=version,
            indication=keys.seal(new.indication.encode(), aad("eeg_exam", "indication", new.id)),
        )
    )
    if done.rowcount != 1:
        raise Conflict(new.id)
    _set_interpreters(conn, new.id, new.people.interpreters)
    changed = [f for f in EXAM_FIELDS if _field(old, f) != _field(new, f)]
    row = ExamRow(new.people, new.state, new.indication, version, old.created_us, new.updated_us)
    _exam_version(conn, keys, row, version, "update", by, changed)
    return row


def _field(row: ExamRow, name: str) -> Any:
    if name in ("state", "indication"):
        return getattr(row, name)
    return getattr(row.people, name)


def _exam_of(r: Any, interpreters: Iterable[str], keys: Keyring) -> ExamRow:
    indication = (
        keys.open(r.indication, aad("eeg_exam", "indication", r.id)).decode()
        if r.indication is not None
        else ""
    )
    people = policy.Exam(
        r.id, r.org_id, r.patient_id, r.ordering_id, r.technician_id, frozenset(interpreters)
    )
    return ExamRow(people, r.state, indication, r.version, r.created_us, r.updated_us)


def get_exam(conn: Connection, keys: Keyring, exam_id: str) -> ExamRow | None:
    """The exam ``exam_id``, or None."""
    r = conn.execute(sa.select(eeg_exam).where(eeg_exam.c.id == exam_id)).first()
    if r is None:
        return None
    c = eeg_exam_interpreter.c
    interps = conn.execute(sa.select(c.user_id).where(c.exam_id == exam_id)).scalars().all()
    return _exam_of(r, interps, keys)


def exams_for(
    conn: Connection, keys: Keyring, user_id: str, org_id: str, *, everyone: bool, limit: int
) -> list[ExamRow]:
    """The exams of ``org_id`` ``user_id`` is assigned to (``everyone``: all of them), newest
    first, at most ``limit``."""
    e, i = eeg_exam.c, eeg_exam_interpreter.c
    query = sa.select(eeg_exam).where(e.org_id == org_id)
    if not everyone:
        mine = sa.select(i.exam_id).where(i.user_id == user_id)
        query = query.where(
            sa.or_(e.technician_id == user_id, e.ordering_id == user_id, e.id.in_(mine))
        )
    rows = conn.execute(query.order_by(e.created_us.desc(), e.id).limit(limit)).all()
    ids = [r.id for r in rows]
    interps: dict[str, list[str]] = {}
    if ids:
        for x in conn.execute(sa.select(i.exam_id, i.user_id).where(i.exam_id.in_(ids))):
            interps.setdefault(x.exam_id, []).append(x.user_id)
    return [_exam_of(r, interps.get(r.id, ()), keys) for r in rows]


def exam_versions(conn: Connection, keys: Keyring, exam_id: str) -> list[dict[str, Any]]:
    """Every version of an exam, oldest first (snapshots opened)."""
    v = eeg_exam_version.c
    out = []
    for r in conn.execute(
        sa.select(eeg_exam_version).where(v.exam_id == exam_id).order_by(v.version)
    ):
        snap = keys.open(r.snapshot, aad("eeg_exam_version", "snapshot", f"{exam_id}:{r.version}"))
        out.append(
            {
                "version": r.version,
                "action": r.action,
                "changed_by": r.changed_by,
                "changed_us": r.changed_us,
                "fields": [f for f in r.fields.split(",") if f],
                "snapshot": msgpack.unpackb(snap),
            }
        )
    return out


# -- streams -------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamRow:
    """A stream's row (its metadata is versioned apart: :func:`stream_meta`)."""

    id: str
    number: int
    exam_id: str
    org_id: str
    created_by: str
    created_us: int
    rate: int
    format: str
    channels: int
    state: str
    durable_end: int
    writer_epoch: int
    owner_node: str | None
    meta_version: int
    ann_seq: int
    clock_offset_us: int | None = None
    clock_rtt_us: int | None = None
    closed_us: int | None = None


def _stream_of(r: Any) -> StreamRow:
    return StreamRow(**{name: getattr(r, name) for name in StreamRow.__dataclass_fields__})


def get_stream(conn: Connection, sid: str) -> StreamRow | None:
    """The stream ``sid``, or None."""
    r = conn.execute(sa.select(eeg_stream).where(eeg_stream.c.id == sid)).first()
    return None if r is None else _stream_of(r)


def streams_of(conn: Connection, exam_ids: Sequence[str]) -> dict[str, list[StreamRow]]:
    """The streams of each exam, oldest first."""
    if not exam_ids:
        return {}
    s = eeg_stream.c
    out: dict[str, list[StreamRow]] = {}
    for r in conn.execute(
        sa.select(eeg_stream).where(s.exam_id.in_(exam_ids)).order_by(s.created_us)
    ):
        out.setdefault(r.exam_id, []).append(_stream_of(r))
    return out


def _meta_aad(sid: str, version: int) -> bytes:
    return aad("eeg_stream_version", "meta", f"{sid}:{version}")


def create_stream(
    conn: Connection,
    keys: Keyring,
    *,
    sid: str,
    number: int,
    exam_id: str,
    org_id: str,
    by: str,
    meta: StreamMeta,
    now_us: int,
    node: str,
) -> StreamRow:
    """Insert a live stream (epoch 1, owned by ``node``) and its metadata version 1.

    Raises ``IntegrityError`` when the number is taken (pick another).
    """
    values = dict(
        id=sid,
        number=number,
        exam_id=exam_id,
        org_id=org_id,
        created_by=by,
        created_us=now_us,
        rate=meta.rate,
        format=meta.format,
        channels=len(meta.channels),
        state="live",
        durable_end=0,
        writer_epoch=1,
        owner_node=node,
        meta_version=1,
        ann_seq=0,
    )
    conn.execute(sa.insert(eeg_stream).values(**values))
    _meta_version(conn, keys, sid, 1, by, meta, now_us)
    return StreamRow(**values)  # type: ignore[arg-type]


def _meta_version(
    conn: Connection, keys: Keyring, sid: str, version: int, by: str, meta: StreamMeta, now: int
) -> None:
    conn.execute(
        sa.insert(eeg_stream_version).values(
            stream_id=sid,
            version=version,
            changed_by=by,
            changed_us=now,
            meta=keys.seal(msgspec.msgpack.encode(meta), _meta_aad(sid, version)),
        )
    )


def stream_meta(conn: Connection, keys: Keyring, sid: str, version: int) -> StreamMeta:
    """Version ``version`` of the stream's metadata; raises NotFound."""
    v = eeg_stream_version.c
    r = conn.execute(
        sa.select(v.meta).where(v.stream_id == sid, v.version == version)
    ).scalar_one_or_none()
    if r is None:
        raise NotFound(sid)
    return msgspec.msgpack.decode(keys.open(r, _meta_aad(sid, version)), type=StreamMeta)


def take_over(
    conn: Connection, keys: Keyring, sid: str, node: str, meta: StreamMeta, by: str, now_us: int
) -> StreamRow:
    """``node`` becomes the stream's owner (its epoch + 1: the previous owner is fenced).

    A ``meta`` whose descriptive fields differ from the current version becomes a
    new version. Raises NotFound, or Conflict for a closed stream.
    """
    row = get_stream(conn, sid)
    if row is None:
        raise NotFound(sid)
    if row.state != "live":
        raise Conflict(sid)
    version = row.meta_version
    if stream_meta(conn, keys, sid, version) != meta:
        version += 1
        _meta_version(conn, keys, sid, version, by, meta, now_us)
    conn.execute(
        sa.update(eeg_stream)
        .where(eeg_stream.c.id == sid)
        .values(owner_node=node, writer_epoch=row.writer_epoch + 1, meta_version=version)
    )
    return get_stream(conn, sid)  # type: ignore[return-value]


def close_stream(conn: Connection, sid: str, epoch: int, now_us: int) -> bool:
    """Mark the stream closed (its owner at ``epoch`` only); False when fenced."""
    s = eeg_stream.c
    done = conn.execute(
        sa.update(eeg_stream)
        .where(s.id == sid, s.writer_epoch == epoch)
        .values(state="closed", closed_us=now_us, owner_node=None)
    )
    return done.rowcount == 1


def set_clock(conn: Connection, sid: str, offset_us: int, rtt_us: int) -> None:
    """Keep the clock mapping of the lowest round trip (only a better one replaces it)."""
    s = eeg_stream.c
    conn.execute(
        sa.update(eeg_stream)
        .where(s.id == sid, sa.or_(s.clock_rtt_us.is_(None), s.clock_rtt_us > rtt_us))
        .values(clock_offset_us=offset_us, clock_rtt_us=rtt_us)
    )


# -- chunks --------------------------------------------------------------------------------
@dataclass
class Chunk:
    """Samples ``[first, first + count)``: ``data`` little-endian sample-major, None: a gap."""

    first: int
    count: int
    data: bytes | bytearray | None  #: a bytearray once other frames were merged into it
    device_us: int | None = None


def _chunk_aad(sid: str, first: int) -> bytes:
    return aad("eeg_chunk", "data", f"{sid}:{first}")


def store_chunks(
    conn: Connection, keys: Keyring, sid: str, epoch: int, chunks: Sequence[Chunk]
) -> int | None:
    """Append ``chunks`` (contiguous from the stored end) if ``epoch`` still owns the stream.

    Returns the new durable end, or None when the stream was taken over
    (nothing written). Chunks below the stored end (already there) are skipped.
    """
    s = eeg_stream.c
    row = conn.execute(
        sa.select(s.durable_end, s.writer_epoch).where(s.id == sid).with_for_update()
    ).first()
    if row is None or row.writer_epoch != epoch:
        return None
    end = int(row.durable_end)
    values = []
    for ch in chunks:
        if ch.first + ch.count <= end:
            continue
        if ch.first != end:
            raise ValueError(f"chunk at {ch.first} does not follow the stored end {end}")
        sealed = None if ch.data is None else keys.seal(bytes(ch.data), _chunk_aad(sid, ch.first))
        values.append(
            {
                "stream_id": sid,
                "first": ch.first,
                "count": ch.count,
                "device_us": ch.device_us,
                "data": sealed,
            }
        )
        end = ch.first + ch.count
    if values:
        conn.execute(sa.insert(eeg_chunk), values)
        conn.execute(sa.update(eeg_stream).where(s.id == sid).values(durable_end=end))
    return end


def read_chunks(
    conn: Connection, keys: Keyring, sid: str, a: int, b: int, max_bytes: int | None = None
) -> list[Chunk]:
    """The stored chunks overlapping ``[a, b)``, ascending (whole chunks, opened).

    With ``max_bytes``, stops once that many sample bytes were read (at least one chunk).
    """
    c = eeg_chunk.c
    start = conn.execute(
        sa.select(sa.func.max(c.first)).where(c.stream_id == sid, c.first <= a)
    ).scalar()
    query = (
        sa.select(eeg_chunk)
        .where(c.stream_id == sid, c.first >= (start if start is not None else a), c.first < b)
        .order_by(c.first)
    )
    out: list[Chunk] = []
    used = 0
    for r in conn.execute(query):
        data = None if r.data is None else keys.open(r.data, _chunk_aad(sid, r.first))
        m = r._mapping
        out.append(Chunk(m["first"], m["count"], data, m["device_us"]))
        used += len(data or b"")
        if max_bytes is not None and used >= max_bytes:
            break
    return out
