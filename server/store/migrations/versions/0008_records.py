"""Records: documents, reports, their versions, data keys, blobs and chunks, erasures.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def _chunks(name: str) -> None:
    op.create_table(
        name,
        sa.Column("blob_id", sa.String(40), nullable=False),
        sa.Column("seq", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("blob_id", "seq", name=f"pk_{name}"),
    )


def upgrade() -> None:
    op.create_table(
        "record_keys",
        sa.Column("record_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("wrapped", sa.LargeBinary, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("record_id", name="pk_record_keys"),
    )
    op.create_index("ix_record_keys_key_id", "record_keys", ["key_id"])
    op.create_table(
        "record_documents",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("patient_id", sa.String(40), nullable=False),
        sa.Column("consultation_id", sa.String(64)),
        sa.Column("exam_id", sa.String(40)),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("blob_id", sa.String(40)),
        sa.Column("media_type", sa.String(64)),
        sa.Column("size", sa.BigInteger),
        sa.Column("meta", sa.LargeBinary, nullable=False),
        sa.Column("created_by", sa.String(40)),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.Column("deleted_us", sa.BigInteger),
        sa.Column("area", sa.String(8), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_record_documents"),
    )
    op.create_index(
        "ix_record_documents_org_id_patient_id", "record_documents", ["org_id", "patient_id"]
    )
    op.create_index("ix_record_documents_exam_id", "record_documents", ["exam_id"])
    op.create_index(
        "ix_record_documents_area_updated_us", "record_documents", ["area", "updated_us"]
    )
    op.create_table(
        "record_document_versions",
        sa.Column("document_id", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("changed_by", sa.String(40)),
        sa.Column("changed_us", sa.BigInteger, nullable=False),
        sa.Column("fields", sa.String(200), nullable=False),
        sa.Column("blob_id", sa.String(40)),
        sa.Column("media_type", sa.String(64)),
        sa.Column("size", sa.BigInteger),
        sa.Column("snapshot", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("document_id", "version", name="pk_record_document_versions"),
    )
    op.create_table(
        "record_reports",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("patient_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("consultation_id", sa.String(64)),
        sa.Column("exam_id", sa.String(40)),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("final_version", sa.Integer),
        sa.Column("author_id", sa.String(40), nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.Column("deleted_us", sa.BigInteger),
        sa.PrimaryKeyConstraint("id", name="pk_record_reports"),
    )
    op.create_index(
        "ix_record_reports_org_id_patient_id", "record_reports", ["org_id", "patient_id"]
    )
    op.create_index("ix_record_reports_exam_id", "record_reports", ["exam_id"])
    op.create_table(
        "record_report_versions",
        sa.Column("report_id", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("changed_by", sa.String(40)),
        sa.Column("changed_us", sa.BigInteger, nullable=False),
        sa.Column("fields", sa.String(200), nullable=False),
        sa.Column("cites", sa.Integer),
        sa.Column("signed_by", sa.String(40)),
        sa.Column("signed_us", sa.BigInteger),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("report_id", "version", name="pk_record_report_versions"),
    )
    op.create_table(
        "record_blobs",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("record_id", sa.String(40), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("store", sa.String(8), nullable=False),
        sa.Column("area", sa.String(8), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("chunks", sa.Integer, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_record_blobs"),
    )
    op.create_index("ix_record_blobs_record_id", "record_blobs", ["record_id"])
    op.create_index("ix_record_blobs_state_created_us", "record_blobs", ["state", "created_us"])
    _chunks("record_blob_chunks")
    _chunks("record_blob_chunks_cold")
    op.create_table(
        "record_erasures",
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("requested_by", sa.String(40)),
        sa.Column("done_us", sa.BigInteger, nullable=False),
        sa.Column("purge_after_us", sa.BigInteger, nullable=False),
        sa.Column("purged_us", sa.BigInteger),
        sa.PrimaryKeyConstraint("user_id", name="pk_record_erasures"),
    )


def downgrade() -> None:
    for name in (
        "record_erasures", "record_blob_chunks_cold", "record_blob_chunks", "record_blobs",
        "record_report_versions", "record_reports", "record_document_versions",
        "record_documents", "record_keys",
    ):  # fmt: skip
        op.drop_table(name)
