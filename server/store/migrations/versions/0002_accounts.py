"""Accounts: orgs, users, invitations, recovery_codes, sessions, delegations, care.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def _fk(table: str, column: str, ref: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{ref}.id"], name=f"fk_{table}_{column}_{ref}")


def upgrade() -> None:
    op.create_table(
        "orgs",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_orgs"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("phone", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(256)),
        sa.Column("password_changed_us", sa.BigInteger),
        sa.Column("totp_secret", sa.LargeBinary(256)),
        sa.Column("totp_pending", sa.LargeBinary(256)),
        sa.Column("totp_last_step", sa.BigInteger, nullable=False),
        sa.Column("expires_us", sa.BigInteger),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("email", name="uq_users_email"),
        _fk("users", "org_id", "orgs"),
    )
    op.create_index("ix_users_org_id", "users", ["org_id"])
    op.create_table(
        "invitations",
        sa.Column("token_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("expires_us", sa.BigInteger, nullable=False),
        sa.Column("used_us", sa.BigInteger),
        sa.PrimaryKeyConstraint("token_hash", name="pk_invitations"),
        _fk("invitations", "user_id", "users"),
    )
    op.create_table(
        "recovery_codes",
        sa.Column("code_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("used_us", sa.BigInteger),
        sa.PrimaryKeyConstraint("code_hash", name="pk_recovery_codes"),
        _fk("recovery_codes", "user_id", "users"),
    )
    op.create_index("ix_recovery_codes_user_id", "recovery_codes", ["user_id"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("last_seen_us", sa.BigInteger, nullable=False),
        sa.Column("expires_us", sa.BigInteger, nullable=False),
        sa.Column("auth_us", sa.BigInteger, nullable=False),
        sa.Column("restricted", sa.String(32)),
        sa.Column("source", sa.String(64)),
        sa.Column("revoked_us", sa.BigInteger),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
        sa.UniqueConstraint("token_hash", name="uq_sessions_token_hash"),
        _fk("sessions", "user_id", "users"),
    )
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])
    op.create_table(
        "delegations",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("practitioner_id", sa.String(40), nullable=False),
        sa.Column("delegate_id", sa.String(40), nullable=False),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("revoked_us", sa.BigInteger),
        sa.PrimaryKeyConstraint("id", name="pk_delegations"),
        _fk("delegations", "org_id", "orgs"),
        _fk("delegations", "practitioner_id", "users"),
        _fk("delegations", "delegate_id", "users"),
    )
    op.create_index("ix_delegations_delegate_id", "delegations", ["delegate_id"])
    op.create_table(
        "care_relationships",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("actor_id", sa.String(40), nullable=False),
        sa.Column("patient_id", sa.String(40), nullable=False),
        sa.Column("ref_id", sa.String(64)),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("ended_us", sa.BigInteger),
        sa.PrimaryKeyConstraint("id", name="pk_care_relationships"),
        _fk("care_relationships", "org_id", "orgs"),
        _fk("care_relationships", "actor_id", "users"),
        _fk("care_relationships", "patient_id", "users"),
    )
    op.create_index("ix_care_relationships_actor_id", "care_relationships", ["actor_id"])
    op.create_index("ix_care_relationships_patient_id", "care_relationships", ["patient_id"])


def downgrade() -> None:
    for table in ("care_relationships", "delegations", "sessions", "recovery_codes"):
        op.drop_table(table)
    op.drop_table("invitations")
    op.drop_table("users")
    op.drop_table("orgs")
