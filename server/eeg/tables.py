"""EEG tables (SQLAlchemy Core, on the shared :data:`server.store.schema.metadata`).

Frozen by migration ``0007_eeg``. Only pseudonymous ids are in clear; free
text (an exam's indication, annotation texts, stream metadata, every version
snapshot) and the samples are AES-GCM envelopes (:mod:`server.security.crypto`)
bound by their AAD to the row.

- ``eeg_exam``: one row per exam (patient, organisation, ordering practitioner,
  technician, state); ``version`` counts its changes.
- ``eeg_exam_interpreter``: the exam's assigned interpreters.
- ``eeg_exam_version``: every version of an exam (who, when, what changed, an
  encrypted snapshot), written in the change's transaction.
- ``eeg_stream``: one row per recording: its number (the u32 of the binary
  frames), exam, shape (rate, format, channels), state (``live`` / ``closed``),
  ``durable_end`` (samples stored contiguously, gaps included: what the hub
  acknowledges), the node owning it now and its ``writer_epoch`` (a node whose
  epoch is stale may not write: fencing), the best clock mapping, and the
  positions of the metadata versions and of the annotation log.
- ``eeg_stream_version``: the stream's metadata, one row per version.
- ``eeg_chunk``: the samples, ``[first, first + count)`` per row (a gap row has
  no data), written as they arrive, about every ``eeg_persist_interval_s``.
- ``eeg_annotation``: the current annotations of a stream.
- ``eeg_annotation_log``: every create, edit and delete, numbered per stream
  (``seq``, from 1): the versions of each annotation and the event log the
  annotation channel is recovered from.
"""

from __future__ import annotations

import sqlalchemy as sa

from server.store.schema import metadata

eeg_exam = sa.Table(
    "eeg_exam",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), nullable=False),
    sa.Column("patient_id", sa.String(40), nullable=False),
    sa.Column("ordering_id", sa.String(40), nullable=False),
    sa.Column("technician_id", sa.String(40), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # planned | done | cancelled
    sa.Column("indication", sa.LargeBinary),  # envelope
    sa.Column("created_by", sa.String(40)),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Index(None, "org_id"),
    sa.Index(None, "technician_id"),
    sa.Index(None, "ordering_id"),
)

eeg_exam_interpreter = sa.Table(
    "eeg_exam_interpreter",
    metadata,
    sa.Column("exam_id", sa.String(40), primary_key=True),
    sa.Column("user_id", sa.String(40), primary_key=True),
    sa.ForeignKeyConstraint(["exam_id"], ["eeg_exam.id"]),
    sa.Index(None, "user_id"),
)

eeg_exam_version = sa.Table(
    "eeg_exam_version",
    metadata,
    sa.Column("exam_id", sa.String(40), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("action", sa.String(16), nullable=False),  # create | update
    sa.Column("changed_by", sa.String(40)),
    sa.Column("changed_us", sa.BigInteger, nullable=False),
    sa.Column("fields", sa.String(200), nullable=False),
    sa.Column("snapshot", sa.LargeBinary, nullable=False),  # envelope of msgpack
)

eeg_stream = sa.Table(
    "eeg_stream",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("number", sa.BigInteger, nullable=False, unique=True),
    sa.Column("exam_id", sa.String(40), nullable=False),
    sa.Column("org_id", sa.String(40), nullable=False),
    sa.Column("created_by", sa.String(40), nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("rate", sa.Integer, nullable=False),
    sa.Column("format", sa.String(8), nullable=False),
    sa.Column("channels", sa.Integer, nullable=False),
    sa.Column("state", sa.String(8), nullable=False),  # live | closed
    sa.Column("durable_end", sa.BigInteger, nullable=False),
    sa.Column("writer_epoch", sa.Integer, nullable=False),
    sa.Column("owner_node", sa.String(64)),
    sa.Column("meta_version", sa.Integer, nullable=False),
    sa.Column("ann_seq", sa.BigInteger, nullable=False),
    sa.Column("clock_offset_us", sa.BigInteger),
    sa.Column("clock_rtt_us", sa.BigInteger),
    sa.Column("closed_us", sa.BigInteger),
    sa.ForeignKeyConstraint(["exam_id"], ["eeg_exam.id"]),
    sa.Index(None, "exam_id"),
)

eeg_stream_version = sa.Table(
    "eeg_stream_version",
    metadata,
    sa.Column("stream_id", sa.String(16), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("changed_by", sa.String(40), nullable=False),
    sa.Column("changed_us", sa.BigInteger, nullable=False),
    sa.Column("meta", sa.LargeBinary, nullable=False),  # envelope of the StreamMeta (msgpack)
)

eeg_chunk = sa.Table(
    "eeg_chunk",
    metadata,
    sa.Column("stream_id", sa.String(16), primary_key=True),
    sa.Column("first", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("device_us", sa.BigInteger),  # the 32-bit device time of its first frame
    sa.Column("data", sa.LargeBinary),  # envelope of the samples; NULL: a gap
)

eeg_annotation = sa.Table(
    "eeg_annotation",
    metadata,
    sa.Column("stream_id", sa.String(16), primary_key=True),
    sa.Column("id", sa.String(24), primary_key=True),
    sa.Column("client_id", sa.String(64), nullable=False),
    sa.Column("author", sa.String(40), nullable=False),
    sa.Column("onset", sa.BigInteger, nullable=False),
    sa.Column("duration", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),  # envelope of {text, frequency_hz}
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
    sa.Column("deleted_us", sa.BigInteger),
    sa.UniqueConstraint("stream_id", "author", "client_id"),
)

eeg_annotation_log = sa.Table(
    "eeg_annotation_log",
    metadata,
    sa.Column("stream_id", sa.String(16), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("annotation_id", sa.String(24), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("action", sa.String(8), nullable=False),  # create | update | delete
    sa.Column("actor", sa.String(40), nullable=False),
    sa.Column("at_us", sa.BigInteger, nullable=False),
    sa.Column("snapshot", sa.LargeBinary, nullable=False),  # envelope of the annotation
)

TABLES = (
    eeg_exam,
    eeg_exam_interpreter,
    eeg_exam_version,
    eeg_stream,
    eeg_stream_version,
    eeg_chunk,
    eeg_annotation,
    eeg_annotation_log,
)
