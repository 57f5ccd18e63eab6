"""Audit trail: audit_log, audit_chain_head (seeded at seq 0), audit_anchor.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("seq", BigId, autoincrement=False, nullable=False),
        sa.Column("ts_us", sa.BigInteger, nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(128)),
        sa.Column("acting_for", sa.String(128)),
        sa.Column("role", sa.String(32)),
        sa.Column("org", sa.String(128)),
        sa.Column("action", sa.String(48), nullable=False),
        sa.Column("target_type", sa.String(48)),
        sa.Column("target_id", sa.String(128)),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64)),
        sa.Column("source", sa.String(64)),
        sa.Column("request_id", sa.String(128)),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("tag", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_ts_us", "audit_log", ["ts_us"])
    op.create_index("ix_audit_log_org_ts_us", "audit_log", ["org", "ts_us"])
    head = op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.SmallInteger, autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("tag", sa.LargeBinary(32), nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_chain_head"),
        sa.CheckConstraint("id = 1", name=op.f("ck_audit_chain_head_single_row")),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "tag": bytes(32), "updated_us": 0}])
    op.create_table(
        "audit_anchor",
        sa.Column("seq", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("tag", sa.LargeBinary(32), nullable=False),
        sa.Column("ts_us", sa.BigInteger, nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("mac", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_anchor"),
    )


def downgrade() -> None:
    op.drop_table("audit_anchor")
    op.drop_table("audit_chain_head")
    op.drop_index("ix_audit_log_org_ts_us", table_name="audit_log")
    op.drop_index("ix_audit_log_ts_us", table_name="audit_log")
    op.drop_table("audit_log")
