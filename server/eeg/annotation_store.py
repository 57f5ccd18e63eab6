"""The SQL of EEG annotations: the current annotations and their numbered log (sync).

As :mod:`server.eeg.store`: each function takes a ``Connection`` inside a
transaction; texts are sealed with the at-rest keyring. Raises
:class:`server.eeg.store.NotFound` and the driver's errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.eeg.store import NotFound
from server.eeg.tables import eeg_annotation, eeg_annotation_log, eeg_stream
from server.security.crypto import Keyring, aad


# -- annotations -------------------------------------------------------------------------
@dataclass
class Annotation:
    """A live annotation (what viewers get, with ``seq``: its log position)."""

    id: str
    onset: int
    duration: int
    text: str
    kind: str
    author: str
    version: int
    at_us: int
    frequency_hz: float | None = None
    deleted: bool = False
    seq: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def wire(self) -> dict[str, Any]:
        """The annotation as viewers get it."""
        out: dict[str, Any] = {
            "id": self.id,
            "onset": self.onset,
            "duration": self.duration,
            "text": self.text,
            "kind": self.kind,
            "author": self.author,
            "version": self.version,
            "at": self.at_us,
        }
        if self.frequency_hz is not None:
            out["frequency_hz"] = self.frequency_hz
        if self.deleted:
            out["deleted"] = True
        return out


def _body_aad(sid: str, aid: str) -> bytes:
    return aad("eeg_annotation", "body", f"{sid}:{aid}")


def _log_aad(sid: str, seq: int) -> bytes:
    return aad("eeg_annotation_log", "snapshot", f"{sid}:{seq}")


def _next_seq(conn: Connection, sid: str) -> int:
    s = eeg_stream.c
    row = conn.execute(sa.select(s.ann_seq).where(s.id == sid).with_for_update()).first()
    if row is None:
        raise NotFound(sid)
    seq = int(row.ann_seq) + 1
    conn.execute(sa.update(eeg_stream).where(s.id == sid).values(ann_seq=seq))
    return seq


def _log(conn: Connection, keys: Keyring, sid: str, a: Annotation, action: str) -> None:
    conn.execute(
        sa.insert(eeg_annotation_log).values(
            stream_id=sid,
            seq=a.seq,
            annotation_id=a.id,
            version=a.version,
            action=action,
            actor=a.author,
            at_us=a.at_us,
            snapshot=keys.seal(msgpack.packb(a.wire()), _log_aad(sid, a.seq)),
        )
    )


def add_annotation(
    conn: Connection, keys: Keyring, sid: str, client_id: str, a: Annotation
) -> tuple[Annotation, bool]:
    """Insert ``a`` (its id, version 1), or return the one already added with ``client_id``
    by the same author; ``(annotation, created)``."""
    t = eeg_annotation.c
    found = conn.execute(
        sa.select(eeg_annotation).where(
            t.stream_id == sid, t.author == a.author, t.client_id == client_id
        )
    ).first()
    if found is not None:
        return _annotation_of(found, sid, keys), False
    a.seq = _next_seq(conn, sid)
    conn.execute(
        sa.insert(eeg_annotation).values(
            stream_id=sid,
            id=a.id,
            client_id=client_id,
            author=a.author,
            onset=a.onset,
            duration=a.duration,
            kind=a.kind,
            body=_seal_body(keys, sid, a),
            version=1,
            created_us=a.at_us,
            updated_us=a.at_us,
        )
    )
    _log(conn, keys, sid, a, "create")
    return a, True


def _seal_body(keys: Keyring, sid: str, a: Annotation) -> bytes:
    body = msgpack.packb({"text": a.text, "frequency_hz": a.frequency_hz})
    return keys.seal(body, _body_aad(sid, a.id))


def _annotation_of(r: Any, sid: str, keys: Keyring) -> Annotation:
    body = msgpack.unpackb(keys.open(r.body, _body_aad(sid, r.id)))
    return Annotation(
        r.id,
        r.onset,
        r.duration,
        body["text"],
        r.kind,
        r.author,
        r.version,
        r.updated_us,
        body.get("frequency_hz"),
        r.deleted_us is not None,
    )


def change_annotation(
    conn: Connection,
    keys: Keyring,
    sid: str,
    aid: str,
    actor: str,
    now_us: int,
    new: Annotation | None,
) -> Annotation:
    """Edit (``new``) or delete (None) annotation ``aid``: a new version, logged.

    Raises NotFound (no such annotation, or already deleted).
    """
    t = eeg_annotation.c
    r = conn.execute(sa.select(eeg_annotation).where(t.stream_id == sid, t.id == aid)).first()
    if r is None or r.deleted_us is not None:
        raise NotFound(aid)
    old = _annotation_of(r, sid, keys)
    a = new if new is not None else old
    a.id, a.version, a.author, a.at_us = aid, old.version + 1, actor, now_us
    a.deleted = new is None
    a.seq = _next_seq(conn, sid)
    values: dict[str, Any] = {"version": a.version, "updated_us": now_us}
    if new is None:
        values["deleted_us"] = now_us
    else:
        values.update(
            onset=a.onset, duration=a.duration, kind=a.kind, body=_seal_body(keys, sid, a)
        )
    conn.execute(sa.update(eeg_annotation).where(t.stream_id == sid, t.id == aid).values(**values))
    _log(conn, keys, sid, a, "delete" if new is None else "update")
    return a


def live_annotations(conn: Connection, keys: Keyring, sid: str) -> list[Annotation]:
    """The live (not deleted) annotations of a stream, by onset."""
    t = eeg_annotation.c
    rows = conn.execute(
        sa.select(eeg_annotation)
        .where(t.stream_id == sid, t.deleted_us.is_(None))
        .order_by(t.onset, t.id)
    )
    return [_annotation_of(r, sid, keys) for r in rows]


def annotation_log(
    conn: Connection, keys: Keyring, sid: str, after: int, until: int
) -> list[tuple[int, str, dict[str, Any]]]:
    """Log entries ``after < seq < until`` as ``(seq, action, annotation as on the wire)``."""
    g = eeg_annotation_log.c
    rows = conn.execute(
        sa.select(eeg_annotation_log)
        .where(g.stream_id == sid, g.seq > after, g.seq < until)
        .order_by(g.seq)
    )
    return [
        (r.seq, r.action, msgpack.unpackb(keys.open(r.snapshot, _log_aad(sid, r.seq))))
        for r in rows
    ]


def ann_seqs(conn: Connection, sids: Sequence[str]) -> dict[str, int]:
    """The last annotation seq of each existing stream among ``sids``."""
    s = eeg_stream.c
    return {
        r.id: int(r.ann_seq) for r in conn.execute(sa.select(s.id, s.ann_seq).where(s.id.in_(sids)))
    }
