"""Accounts: the access change log (``access_changes``) every node polls.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "access_changes",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("session_id", sa.String(40)),
        sa.Column("kind", sa.String(16), nullable=False),
    )
    op.create_index("ix_access_changes_at_us", "access_changes", ["at_us"])


def downgrade() -> None:
    op.drop_index("ix_access_changes_at_us", table_name="access_changes")
    op.drop_table("access_changes")
