"""Calls: the record of each call (``call_record``).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "call_record",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("org", sa.String(128), nullable=False),
        sa.Column("conv_id", sa.String(64)),
        sa.Column("consultation_id", sa.String(64)),
        sa.Column("caller", sa.String(128), nullable=False),
        sa.Column("callee", sa.String(128), nullable=False),
        sa.Column("media", sa.String(8), nullable=False),
        sa.Column("invited_us", sa.BigInteger, nullable=False),
        sa.Column("answered_us", sa.BigInteger),
        sa.Column("ended_us", sa.BigInteger),
        sa.Column("duration_ms", sa.BigInteger),
        sa.Column("end_reason", sa.String(16)),
        sa.Column("ended_by", sa.String(128)),
        sa.Column("quality", sa.LargeBinary),
        sa.PrimaryKeyConstraint("id", name="pk_call_record"),
    )
    op.create_index("ix_call_record_conv_id_invited_us", "call_record", ["conv_id", "invited_us"])
    op.create_index("ix_call_record_consultation_id", "call_record", ["consultation_id"])


def downgrade() -> None:
    op.drop_index("ix_call_record_consultation_id", table_name="call_record")
    op.drop_index("ix_call_record_conv_id_invited_us", table_name="call_record")
    op.drop_table("call_record")
