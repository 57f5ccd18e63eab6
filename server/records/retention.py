"""``medhub retention run``: the retention rules, applied once, with a report of what was done.

Rules (settings in ``server/config.py``, defaults in brackets):

* medical documents whose last change is older than ``records_archive_after_days``
  [730, 24 months] move, every version's content, to the cold area (the
  database's ``record_blob_chunks_cold`` table, or the S3 cold prefix with its
  storage class), still sealed; a version row ``archive`` records it;
  downloads keep working;
* the records of an account erased more than ``records_erasure_keep_days``
  [3650, 10 years] ago are deleted (documents, reports, their versions,
  contents and data keys); the pseudonymised account row stays (it holds no
  personal data) so the audit trail's ids still name something;
* uploads left unfinished for ``records_pending_upload_ttl_s`` [1 day] are deleted;
* audit entries older than ``audit_retention_days`` [400, never below 366]
  are purged behind a signed anchor (:func:`server.audit.ops.purge`: the rest
  still verifies).

Each step is audited (``role`` ``system``). Running it twice does nothing the
second time. Raises SQLAlchemy and blob-store errors (what was done before
the error stays done); :class:`server.audit.ops.PurgeRefusedError` when the
audit chain is broken (nothing of the audit trail is deleted then).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.audit import ops
from server.audit.checkpoints import FileCheckpointSink
from server.audit.events import Action as AuditAction
from server.audit.events import AuditEvent
from server.audit.keys import current_key, keyring
from server.config import Settings
from server.records import store
from server.records.blobs import Area
from server.records.service import Records
from server.records.tables import (
    record_blob_chunks,
    record_blob_chunks_cold,
    record_blobs,
    record_document_versions,
    record_documents,
    record_erasures,
    record_keys,
    record_report_versions,
    record_reports,
)
from server.store.db import Database
from server.store.jobs import write

#: Documents archived per run at most (the next run takes the rest).
ARCHIVE_BATCH = 10000


@dataclass
class RetentionReport:
    """What one run did (printed as JSON by the command)."""

    archived_documents: int = 0
    archived_bytes: int = 0
    purged_accounts: int = 0
    purged_documents: int = 0
    purged_reports: int = 0
    abandoned_uploads: int = 0
    audit_purged: int = 0
    audit_cutoff: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return asdict(self)


def _event(action: AuditAction, target_type: str, target_id: str, reason: str) -> AuditEvent:
    return AuditEvent(
        action=action, role="system", target_type=target_type, target_id=target_id, reason=reason
    )


def _blobs_of(doc_id: str, conn: Connection) -> list[store.Blob]:
    return store.blobs_of(conn, [doc_id])


def _cold(blob_id: str, conn: Connection) -> None:
    store.set_blob_area(conn, blob_id, "cold")


def _ids(query: sa.Select[Any], conn: Connection) -> list[str]:
    return [str(x) for x in conn.execute(query).scalars()]


async def archive(records: Records, now_us: int) -> tuple[int, int]:
    """Move the contents of documents unchanged since the cutoff to the cold area;
    ``(documents, bytes)`` moved."""
    days = records.settings.records_archive_after_days
    cutoff = now_us - int(days * 86400 * 1e6)
    d = record_documents.c
    query = (
        sa.select(d.id)
        .where(d.area == "hot", d.updated_us < cutoff)
        .order_by(d.updated_us)
        .limit(ARCHIVE_BATCH)
    )
    db, blobs = records.db, records.contents.blobs
    ids = await db.run(functools.partial(_ids, query), readonly=True)
    moved = size = 0
    keys = records.keys
    for doc_id in ids:
        found = await db.run(functools.partial(_blobs_of, doc_id), readonly=True)
        for blob in found:
            if blob.state != "ready" or blob.area == "cold":
                continue
            src: Area = "hot"
            await blobs.move(blob.id, src, "cold", blob.chunks, functools.partial(_cold, blob.id))
            size += blob.size
        event = _event(AuditAction.UPDATE, "record_document", doc_id, "archive")

        def mark(
            c: Connection, i: str = doc_id, ev: AuditEvent = event
        ) -> tuple[None, list[AuditEvent]]:
            store.change_document(c, keys, i, None, "archive", None, now_us, area="cold")
            return None, [ev]

        await write(records.jobs, mark)
        moved += 1
    return moved, size


def _purge_records(conn: Connection, patient_id: str) -> tuple[list[str], int, int]:
    """Delete a patient's records' rows; the blob ids to delete from the store."""
    d, r, b = record_documents.c, record_reports.c, record_blobs.c
    docs = [
        str(x) for x in conn.execute(sa.select(d.id).where(d.patient_id == patient_id)).scalars()
    ]
    reports = [
        str(x) for x in conn.execute(sa.select(r.id).where(r.patient_id == patient_id)).scalars()
    ]
    ids = docs + reports
    if not ids:
        return [], 0, 0
    blob_rows = conn.execute(sa.select(b.id, b.area).where(b.record_id.in_(ids))).all()
    for table in (record_blob_chunks, record_blob_chunks_cold):
        conn.execute(table.delete().where(table.c.blob_id.in_([x.id for x in blob_rows])))
    conn.execute(record_blobs.delete().where(b.record_id.in_(ids)))
    conn.execute(
        record_document_versions.delete().where(record_document_versions.c.document_id.in_(docs))
    )
    conn.execute(record_documents.delete().where(d.id.in_(docs)))
    conn.execute(
        record_report_versions.delete().where(record_report_versions.c.report_id.in_(reports))
    )
    conn.execute(record_reports.delete().where(r.id.in_(reports)))
    conn.execute(record_keys.delete().where(record_keys.c.record_id.in_(ids)))
    return [f"{x.area}:{x.id}" for x in blob_rows], len(docs), len(reports)


async def purge_erased(records: Records, now_us: int) -> tuple[int, int, int]:
    """Delete the records of accounts erased longer ago than the keep period."""
    e = record_erasures.c
    query = sa.select(e.user_id).where(e.purge_after_us < now_us, e.purged_us.is_(None))
    db = records.db
    users = await db.run(functools.partial(_ids, query), readonly=True)
    accounts = docs = reports = 0
    for user_id in users:
        event = _event(AuditAction.DELETE, "record_patient", user_id, "retention")

        def purge(
            c: Connection, u: str = user_id, ev: AuditEvent = event
        ) -> tuple[tuple[list[str], int, int], list[AuditEvent]]:
            found = _purge_records(c, u)
            c.execute(record_erasures.update().where(e.user_id == u).values(purged_us=now_us))
            return found, [ev]

        blobs, n_docs, n_reports = await write(records.jobs, purge)
        for ref in blobs:  # the S3 store's objects (the database's went with the rows)
            area, _, blob_id = ref.partition(":")
            if records.contents.blobs.kind != "db":
                await records.contents.blobs.delete(blob_id, "cold" if area == "cold" else "hot")
        accounts, docs, reports = accounts + 1, docs + n_docs, reports + n_reports
    return accounts, docs, reports


async def abandoned(records: Records, now_us: int) -> int:
    """Delete uploads that never finished."""
    ttl_us = int(records.settings.records_pending_upload_ttl_s * 1e6)
    b = record_blobs.c
    query = sa.select(b.id).where(b.state == "pending", b.created_us < now_us - ttl_us)
    ids = await records.db.run(functools.partial(_ids, query), readonly=True)
    for blob_id in ids:
        await records.contents.discard(blob_id)
    return len(ids)


async def purge_audit(settings: Settings, db: Database, now: datetime) -> ops.PurgeResult:
    """The audit trail's own retention (never below 366 days)."""
    key_id, _ = current_key(settings)
    return await ops.purge(
        db,
        key_id=key_id,
        keyring=keyring(settings),
        node=settings.effective_node_id,
        sink=FileCheckpointSink(settings.effective_checkpoint_path),
        now=now,
        retention_days=settings.audit_retention_days,
    )


async def run(records: Records, now: datetime | None = None) -> RetentionReport:
    """Apply every rule once at ``now`` (default: the current UTC time); what was done."""
    now = now or datetime.now(UTC)
    now_us = int(now.timestamp() * 1e6)
    report = RetentionReport()
    report.archived_documents, report.archived_bytes = await archive(records, now_us)
    found = await purge_erased(records, now_us)
    report.purged_accounts, report.purged_documents, report.purged_reports = found
    report.abandoned_uploads = await abandoned(records, now_us)
    result = await purge_audit(records.settings, records.db, now)
    report.audit_purged, report.audit_cutoff = result.purged, result.cutoff.isoformat()
    anchor = "none" if result.anchor is None else f"seq-{result.anchor.seq}"
    records.access.recorder.record(
        _event(AuditAction.AUDIT_PURGE, "audit_anchor", anchor, "retention")
    )
    return report
