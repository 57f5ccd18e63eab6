"""The records SQL: documents, reports, their versions, data keys and blob metadata.

Synchronous functions of a ``sqlalchemy.Connection``, run inside one
transaction by :meth:`server.store.db.Database.run` or a write job
(:mod:`server.store.jobs`). Sealed values are opened here with the record's
data key (:class:`server.records.sealing.RecordKeys`), so callers get clear
dataclasses and never see envelopes. Every change writes its version row in
the same transaction. Raises :class:`Conflict` when an expected version is
not the current one, :class:`~server.security.crypto.CryptoError` for a value
that does not open, SQLAlchemy errors otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.audit.events import AuditEvent
from server.records.sealing import RecordCipher, RecordKeys
from server.records.tables import (
    record_blobs,
    record_document_versions,
    record_documents,
    record_keys,
)
from server.store.jobs import JobWriter, write

#: Document metadata sealed in ``record_documents.meta`` (free text).
META_FIELDS = ("title", "filename", "description")


class Conflict(Exception):
    """The record changed meanwhile (its version is not the one expected), or the
    change is not allowed in its state (a final report edited, a signed report deleted)."""


T = TypeVar("T")
#: Expected refusals raised by a write before it writes anything.
REFUSALS = (Conflict, LookupError, ValueError)


async def commit(jobs: JobWriter, fn: Callable[[Connection], tuple[T, list[AuditEvent]]]) -> T:
    """:func:`server.store.jobs.write` for a change that may be refused (:data:`REFUSALS`,
    raised before it writes anything): the refusal is raised here, after the write
    sequence's transaction went on without it (so it is not a failed transaction)."""

    def job(conn: Connection) -> tuple[T | Exception, list[AuditEvent]]:
        try:
            return fn(conn)
        except REFUSALS as exc:
            return exc, []

    value = await write(jobs, job)
    if isinstance(value, REFUSALS):
        raise value
    return cast(T, value)


# -- data keys ----------------------------------------------------------------------------
def new_key(conn: Connection, keys: RecordKeys, record_id: str, now: int) -> RecordCipher:
    """Make, wrap and store the data key of a new record; its cipher."""
    cipher, wrapped = keys.new(record_id)
    conn.execute(
        record_keys.insert().values(
            record_id=record_id, key_id=keys.current_id, wrapped=wrapped, created_us=now
        )
    )
    return cipher


def cipher_of(conn: Connection, keys: RecordKeys, record_id: str) -> RecordCipher:
    """The cipher of a stored record; raises ``LookupError`` when it has no key."""
    c = record_keys.c
    wrapped = conn.execute(sa.select(c.wrapped).where(c.record_id == record_id)).scalar()
    if wrapped is None:
        raise LookupError(record_id)
    return keys.cipher(record_id, bytes(wrapped))


# -- documents ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Document:
    """A document as stored (its metadata opened)."""

    id: str
    org_id: str
    patient_id: str
    consultation_id: str | None
    exam_id: str | None
    version: int
    blob_id: str | None
    media_type: str | None
    size: int | None
    title: str
    filename: str
    description: str
    created_by: str | None
    created_us: int
    updated_us: int
    deleted_us: int | None
    area: str


def _document(r: Any, cipher: RecordCipher) -> Document:
    meta = cipher.open("record_documents", "meta", r.id, bytes(r.meta))
    return Document(
        r.id,
        r.org_id,
        r.patient_id,
        r.consultation_id,
        r.exam_id,
        r.version,
        r.blob_id,
        r.media_type,
        r.size,
        str(meta.get("title", "")),
        str(meta.get("filename", "")),
        str(meta.get("description", "")),
        r.created_by,
        r.created_us,
        r.updated_us,
        r.deleted_us,
        r.area,
    )


def _document_version(
    conn: Connection,
    cipher: RecordCipher,
    doc: Document,
    action: str,
    by: str | None,
    now: int,
    changed: Mapping[str, Any],
) -> None:
    snapshot = cipher.seal(
        "record_document_versions", "snapshot", f"{doc.id}:{doc.version}", changed
    )
    conn.execute(
        record_document_versions.insert().values(
            document_id=doc.id,
            version=doc.version,
            action=action,
            changed_by=by,
            changed_us=now,
            fields=",".join(sorted(changed)),
            blob_id=doc.blob_id,
            media_type=doc.media_type,
            size=doc.size,
            snapshot=snapshot,
        )
    )


def create_document(
    conn: Connection, keys: RecordKeys, doc: Document, by: str | None, now: int
) -> Document:
    """Insert ``doc`` (version 1, no content yet) with its key and ``create`` version."""
    cipher = new_key(conn, keys, doc.id, now)
    meta = {name: getattr(doc, name) for name in META_FIELDS}
    conn.execute(
        record_documents.insert().values(
            id=doc.id,
            org_id=doc.org_id,
            patient_id=doc.patient_id,
            consultation_id=doc.consultation_id,
            exam_id=doc.exam_id,
            version=1,
            blob_id=None,
            media_type=None,
            size=None,
            meta=cipher.seal("record_documents", "meta", doc.id, meta),
            created_by=by,
            created_us=now,
            updated_us=now,
            deleted_us=None,
            area="hot",
        )
    )
    changed = {
        **meta,
        "patient_id": doc.patient_id,
        "consultation_id": doc.consultation_id,
        "exam_id": doc.exam_id,
    }
    _document_version(conn, cipher, doc, "create", by, now, changed)
    return doc


def get_document(conn: Connection, keys: RecordKeys, doc_id: str) -> Document | None:
    """The document ``doc_id`` (tombstoned ones too), or None."""
    r = conn.execute(sa.select(record_documents).where(record_documents.c.id == doc_id)).first()
    return None if r is None else _document(r, cipher_of(conn, keys, doc_id))


def documents_of(
    conn: Connection, keys: RecordKeys, org_id: str, patient_id: str, limit: int
) -> list[Document]:
    """The live documents of a patient, newest first."""
    c = record_documents.c
    rows = conn.execute(
        sa.select(record_documents)
        .where(c.org_id == org_id, c.patient_id == patient_id, c.deleted_us.is_(None))
        .order_by(c.updated_us.desc())
        .limit(limit)
    ).all()
    return [_document(r, cipher_of(conn, keys, r.id)) for r in rows]


def change_document(
    conn: Connection,
    keys: RecordKeys,
    doc_id: str,
    expected: int | None,
    action: str,
    by: str | None,
    now: int,
    **changes: Any,
) -> Document:
    """Apply ``changes`` (metadata fields, or ``blob_id``/``media_type``/``size``, or
    ``deleted_us``/``area``) as the next version; raises :class:`Conflict` when
    ``expected`` is given and is not the current version, or the document is deleted."""
    old = get_document(conn, keys, doc_id)
    if old is None:
        raise LookupError(doc_id)
    if old.deleted_us is not None or (expected is not None and expected != old.version):
        raise Conflict(doc_id)
    new = replace(old, version=old.version + 1, updated_us=now, **changes)
    cipher = cipher_of(conn, keys, doc_id)
    c = record_documents.c
    values: dict[str, Any] = {k: v for k, v in changes.items() if k not in META_FIELDS}
    if any(k in META_FIELDS for k in changes):
        meta = {name: getattr(new, name) for name in META_FIELDS}
        values["meta"] = cipher.seal("record_documents", "meta", doc_id, meta)
    if action != "archive":  # moving to the archive is not a change of the document
        values["updated_us"] = now
    done = conn.execute(
        record_documents.update()
        .where(c.id == doc_id, c.version == old.version)
        .values(version=new.version, **values)
    )
    if done.rowcount != 1:
        raise Conflict(doc_id)
    recorded = {k: v for k, v in changes.items() if k != "blob_id"}
    _document_version(conn, cipher, new, action, by, now, recorded)
    return new


def document_versions(conn: Connection, keys: RecordKeys, doc_id: str) -> list[dict[str, Any]]:
    """Every version of a document, oldest first: who, when, action, fields, the new values."""
    cipher = cipher_of(conn, keys, doc_id)
    c = record_document_versions.c
    rows = conn.execute(
        sa.select(record_document_versions).where(c.document_id == doc_id).order_by(c.version)
    ).all()
    return [
        {
            "version": r.version,
            "action": r.action,
            "changed_by": r.changed_by,
            "changed_us": r.changed_us,
            "fields": [f for f in r.fields.split(",") if f],
            "media_type": r.media_type,
            "size": r.size,
            "snapshot": cipher.open(
                "record_document_versions", "snapshot", f"{doc_id}:{r.version}", bytes(r.snapshot)
            ),
        }
        for r in rows
    ]


def version_content(conn: Connection, doc_id: str, version: int) -> tuple[str, str, int] | None:
    """``(blob id, media type, size)`` of a document's version that has content, or None."""
    c = record_document_versions.c
    r = conn.execute(
        sa.select(c.blob_id, c.media_type, c.size).where(
            c.document_id == doc_id, c.version == version
        )
    ).first()
    if r is None or r.blob_id is None:
        return None
    return str(r.blob_id), str(r.media_type), int(r.size)


# -- blobs --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Blob:
    """A stored content's metadata."""

    id: str
    record_id: str
    state: str
    store: str
    area: str
    size: int
    chunks: int


def insert_blob(conn: Connection, blob_id: str, record_id: str, store: str, now: int) -> None:
    """A pending blob (its chunks being written)."""
    conn.execute(
        record_blobs.insert().values(
            id=blob_id,
            record_id=record_id,
            state="pending",
            store=store,
            area="hot",
            size=0,
            chunks=0,
            created_us=now,
        )
    )


def ready_blob(conn: Connection, blob_id: str, size: int, chunks: int) -> None:
    """Mark a blob complete (in the transaction that makes it a document's content)."""
    conn.execute(
        record_blobs.update()
        .where(record_blobs.c.id == blob_id)
        .values(state="ready", size=size, chunks=chunks)
    )


def get_blob(conn: Connection, blob_id: str) -> Blob | None:
    """A blob's metadata, or None."""
    r = conn.execute(sa.select(record_blobs).where(record_blobs.c.id == blob_id)).first()
    return (
        None if r is None else Blob(r.id, r.record_id, r.state, r.store, r.area, r.size, r.chunks)
    )


def blobs_of(conn: Connection, record_ids: list[str]) -> list[Blob]:
    """Every blob of the given records."""
    if not record_ids:
        return []
    rows = conn.execute(sa.select(record_blobs).where(record_blobs.c.record_id.in_(record_ids)))
    return [Blob(r.id, r.record_id, r.state, r.store, r.area, r.size, r.chunks) for r in rows]


def set_blob_area(conn: Connection, blob_id: str, area: str) -> None:
    """Record that a blob moved to ``area``."""
    conn.execute(record_blobs.update().where(record_blobs.c.id == blob_id).values(area=area))
