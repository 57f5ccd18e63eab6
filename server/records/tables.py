"""Records tables (SQLAlchemy Core on the shared metadata); migration 0008.

Times are UTC microseconds since the epoch (``*_us``); ids are pseudonymous
(``d-`` documents, ``n-`` reports, ``b-`` blobs + hex). No health data is
stored in clear: every record has its own AES-256 data key (``record_keys``),
wrapped by the at-rest master key named by ``key_id``; a document's metadata
(title, file name, description), a report's title and text, every version
snapshot and every content chunk are sealed with that data key
(:mod:`server.records.sealing`). What stays in clear is what the policy and
retention need: ids, organisation, patient id, kind, status, sizes, times.

Every change writes a version row (who, when, what changed): documents in
``record_document_versions``, reports in ``record_report_versions``. Version
rows are never updated, except by an account's pseudonymisation (its free
text replaced) and a key rotation (nothing: data keys are re-wrapped, the
sealed values stay).
"""

from __future__ import annotations

import sqlalchemy as sa

from server.store.schema import metadata

#: One data key per record (document or report), wrapped by the at-rest master key.
record_keys = sa.Table(
    "record_keys",
    metadata,
    sa.Column("record_id", sa.String(40), primary_key=True),
    sa.Column("key_id", sa.String(32), nullable=False),  # the master key that wrapped it
    sa.Column("wrapped", sa.LargeBinary, nullable=False),  # envelope, AAD record_keys.wrapped.<id>
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Index(None, "key_id"),
)

record_documents = sa.Table(
    "record_documents",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), nullable=False),
    sa.Column("patient_id", sa.String(40), nullable=False),
    sa.Column("consultation_id", sa.String(64)),
    sa.Column("exam_id", sa.String(40)),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("blob_id", sa.String(40)),  # the current content (None: none uploaded yet)
    sa.Column("media_type", sa.String(64)),  # found from the content's magic bytes
    sa.Column("size", sa.BigInteger),  # bytes of the current content
    sa.Column("meta", sa.LargeBinary, nullable=False),  # sealed {title, filename, description}
    sa.Column("created_by", sa.String(40)),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
    sa.Column("deleted_us", sa.BigInteger),  # the tombstone
    sa.Column("area", sa.String(8), nullable=False),  # hot | cold (archived)
    sa.Index(None, "org_id", "patient_id"),
    sa.Index(None, "exam_id"),
    sa.Index(None, "area", "updated_us"),
)

record_document_versions = sa.Table(
    "record_document_versions",
    metadata,
    sa.Column("document_id", sa.String(40), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("action", sa.String(16), nullable=False),  # create|update|content|delete|archive
    sa.Column("changed_by", sa.String(40)),  # user id; None: the system or the CLI
    sa.Column("changed_us", sa.BigInteger, nullable=False),
    sa.Column("fields", sa.String(200), nullable=False),  # comma-separated changed fields
    sa.Column("blob_id", sa.String(40)),  # the content of this version
    sa.Column("media_type", sa.String(64)),
    sa.Column("size", sa.BigInteger),
    sa.Column("snapshot", sa.LargeBinary, nullable=False),  # sealed {field: new value}
)

record_reports = sa.Table(
    "record_reports",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), nullable=False),
    sa.Column("patient_id", sa.String(40), nullable=False),
    sa.Column("kind", sa.String(24), nullable=False),  # consultation_note | eeg_report
    sa.Column("consultation_id", sa.String(64)),
    sa.Column("exam_id", sa.String(40)),
    sa.Column("status", sa.String(8), nullable=False),  # draft | final (of the current version)
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("final_version", sa.Integer),  # the newest signed version
    sa.Column("author_id", sa.String(40), nullable=False),  # of the current version
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
    sa.Column("deleted_us", sa.BigInteger),
    sa.Index(None, "org_id", "patient_id"),
    sa.Index(None, "exam_id"),
)

record_report_versions = sa.Table(
    "record_report_versions",
    metadata,
    sa.Column("report_id", sa.String(40), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("action", sa.String(16), nullable=False),  # create|update|sign|amend|delete
    sa.Column("status", sa.String(8), nullable=False),
    sa.Column("changed_by", sa.String(40)),
    sa.Column("changed_us", sa.BigInteger, nullable=False),
    sa.Column("fields", sa.String(200), nullable=False),
    sa.Column("cites", sa.Integer),  # amend: the signed version this one replaces
    sa.Column("signed_by", sa.String(40)),
    sa.Column("signed_us", sa.BigInteger),
    sa.Column("body", sa.LargeBinary, nullable=False),  # sealed {title, text} at this version
)

#: Stored contents. ``state`` is ``pending`` while an upload runs (its chunks are
#: deleted by the retention run when it never finishes), then ``ready``.
record_blobs = sa.Table(
    "record_blobs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("record_id", sa.String(40), nullable=False),
    sa.Column("state", sa.String(8), nullable=False),  # pending | ready
    sa.Column("store", sa.String(8), nullable=False),  # db | s3
    sa.Column("area", sa.String(8), nullable=False),  # hot | cold
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("chunks", sa.Integer, nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Index(None, "record_id"),
    sa.Index(None, "state", "created_us"),
)

#: The database blob store: sealed chunks, in the hot and the cold (archive) area.
record_blob_chunks = sa.Table(
    "record_blob_chunks",
    metadata,
    sa.Column("blob_id", sa.String(40), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

record_blob_chunks_cold = sa.Table(
    "record_blob_chunks_cold",
    metadata,
    sa.Column("blob_id", sa.String(40), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

#: Accounts erased at their request: pseudonymised at ``done_us``; their records
#: are kept until ``purge_after_us`` (records_erasure_keep_days), then deleted.
record_erasures = sa.Table(
    "record_erasures",
    metadata,
    sa.Column("user_id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), nullable=False),
    sa.Column("requested_by", sa.String(40)),
    sa.Column("done_us", sa.BigInteger, nullable=False),
    sa.Column("purge_after_us", sa.BigInteger, nullable=False),
    sa.Column("purged_us", sa.BigInteger),
)

TABLES = (
    record_keys,
    record_documents,
    record_document_versions,
    record_reports,
    record_report_versions,
    record_blobs,
    record_blob_chunks,
    record_blob_chunks_cold,
    record_erasures,
)
