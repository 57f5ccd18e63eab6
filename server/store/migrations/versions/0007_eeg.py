"""EEG: exams (assignments, versions), streams (metadata versions), chunks, annotations.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "eeg_exam",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("patient_id", sa.String(40), nullable=False),
        sa.Column("ordering_id", sa.String(40), nullable=False),
        sa.Column("technician_id", sa.String(40), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("indication", sa.LargeBinary),
        sa.Column("created_by", sa.String(40)),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_eeg_exam"),
    )
    op.create_index("ix_eeg_exam_org_id", "eeg_exam", ["org_id"])
    op.create_index("ix_eeg_exam_technician_id", "eeg_exam", ["technician_id"])
    op.create_index("ix_eeg_exam_ordering_id", "eeg_exam", ["ordering_id"])
    op.create_table(
        "eeg_exam_interpreter",
        sa.Column("exam_id", sa.String(40), nullable=False),
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.PrimaryKeyConstraint("exam_id", "user_id", name="pk_eeg_exam_interpreter"),
        sa.ForeignKeyConstraint(
            ["exam_id"], ["eeg_exam.id"], name="fk_eeg_exam_interpreter_exam_id_eeg_exam"
        ),
    )
    op.create_index("ix_eeg_exam_interpreter_user_id", "eeg_exam_interpreter", ["user_id"])
    op.create_table(
        "eeg_exam_version",
        sa.Column("exam_id", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("changed_by", sa.String(40)),
        sa.Column("changed_us", sa.BigInteger, nullable=False),
        sa.Column("fields", sa.String(200), nullable=False),
        sa.Column("snapshot", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("exam_id", "version", name="pk_eeg_exam_version"),
    )
    op.create_table(
        "eeg_stream",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("number", sa.BigInteger, nullable=False),
        sa.Column("exam_id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("created_by", sa.String(40), nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("rate", sa.Integer, nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("channels", sa.Integer, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("durable_end", sa.BigInteger, nullable=False),
        sa.Column("writer_epoch", sa.Integer, nullable=False),
        sa.Column("owner_node", sa.String(64)),
        sa.Column("meta_version", sa.Integer, nullable=False),
        sa.Column("ann_seq", sa.BigInteger, nullable=False),
        sa.Column("clock_offset_us", sa.BigInteger),
        sa.Column("clock_rtt_us", sa.BigInteger),
        sa.Column("closed_us", sa.BigInteger),
        sa.PrimaryKeyConstraint("id", name="pk_eeg_stream"),
        sa.UniqueConstraint("number", name="uq_eeg_stream_number"),
        sa.ForeignKeyConstraint(
            ["exam_id"], ["eeg_exam.id"], name="fk_eeg_stream_exam_id_eeg_exam"
        ),
    )
    op.create_index("ix_eeg_stream_exam_id", "eeg_stream", ["exam_id"])
    op.create_table(
        "eeg_stream_version",
        sa.Column("stream_id", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("changed_by", sa.String(40), nullable=False),
        sa.Column("changed_us", sa.BigInteger, nullable=False),
        sa.Column("meta", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("stream_id", "version", name="pk_eeg_stream_version"),
    )
    op.create_table(
        "eeg_chunk",
        sa.Column("stream_id", sa.String(16), nullable=False),
        sa.Column("first", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("device_us", sa.BigInteger),
        sa.Column("data", sa.LargeBinary),
        sa.PrimaryKeyConstraint("stream_id", "first", name="pk_eeg_chunk"),
    )
    op.create_table(
        "eeg_annotation",
        sa.Column("stream_id", sa.String(16), nullable=False),
        sa.Column("id", sa.String(24), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("author", sa.String(40), nullable=False),
        sa.Column("onset", sa.BigInteger, nullable=False),
        sa.Column("duration", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.Column("deleted_us", sa.BigInteger),
        sa.PrimaryKeyConstraint("stream_id", "id", name="pk_eeg_annotation"),
        sa.UniqueConstraint(
            "stream_id", "author", "client_id", name="uq_eeg_annotation_stream_id_author_client_id"
        ),
    )
    op.create_table(
        "eeg_annotation_log",
        sa.Column("stream_id", sa.String(16), nullable=False),
        sa.Column("seq", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("annotation_id", sa.String(24), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("actor", sa.String(40), nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("snapshot", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("stream_id", "seq", name="pk_eeg_annotation_log"),
    )


def downgrade() -> None:
    op.drop_table("eeg_annotation_log")
    op.drop_table("eeg_annotation")
    op.drop_table("eeg_chunk")
    op.drop_table("eeg_stream_version")
    op.drop_index("ix_eeg_stream_exam_id", table_name="eeg_stream")
    op.drop_table("eeg_stream")
    op.drop_table("eeg_exam_version")
    op.drop_index("ix_eeg_exam_interpreter_user_id", table_name="eeg_exam_interpreter")
    op.drop_table("eeg_exam_interpreter")
    op.drop_index("ix_eeg_exam_ordering_id", table_name="eeg_exam")
    op.drop_index("ix_eeg_exam_technician_id", table_name="eeg_exam")
    op.drop_index("ix_eeg_exam_org_id", table_name="eeg_exam")
    op.drop_table("eeg_exam")
