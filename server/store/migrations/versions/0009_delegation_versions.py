"""Accounts: ``delegation_versions``, one immutable row per grant or revocation.

Each delegation that exists already gets a ``baseline`` row (version 1, by
nobody known, at its revocation or else its creation), so every delegation has
a history; later changes add rows in their own transaction
(``server/accounts/relations.py``).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "delegation_versions",
        sa.Column("delegation_id", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("changed_by", sa.String(40)),
        sa.Column("changed_us", sa.BigInteger, nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("practitioner_id", sa.String(40), nullable=False),
        sa.Column("delegate_id", sa.String(40), nullable=False),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("revoked_us", sa.BigInteger),
        sa.PrimaryKeyConstraint("delegation_id", "version", name="pk_delegation_versions"),
    )
    op.execute(
        "INSERT INTO delegation_versions (delegation_id, version, action, changed_by,"
        " changed_us, org_id, practitioner_id, delegate_id, scopes, revoked_us)"
        " SELECT id, 1, 'baseline', NULL, COALESCE(revoked_us, created_us), org_id,"
        " practitioner_id, delegate_id, scopes, revoked_us FROM delegations"
    )


def downgrade() -> None:
    op.drop_table("delegation_versions")
