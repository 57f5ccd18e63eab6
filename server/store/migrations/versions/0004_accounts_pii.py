"""Accounts: users' name, email and phone encrypted at rest, email blind index, versions.

Adds ``users.name_enc``, ``email_enc``, ``phone_enc`` (AES-GCM envelopes) and
``email_index`` (HMAC blind index, unique), encrypts the existing clear rows,
drops the clear ``name``, ``email`` and ``phone`` columns, and creates
``user_versions``. Each existing user gets a ``baseline`` version row (its
current version, identity fields and role/status as a sealed snapshot).

Encrypting existing rows needs ``secret_at_rest_key``: :mod:`server.store.migrate`
hands it over in ``config.attributes["at_rest_key"]``; with users to encrypt and
no key the migration stops (nothing changed) rather than guess. The envelope
and index formats come from :mod:`server.accounts.pii` and
:mod:`server.security.at_rest` (the same code that reads them).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from alembic import context, op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_users = sa.table(
    "users",
    sa.column("id", sa.String),
    sa.column("name", sa.String),
    sa.column("email", sa.String),
    sa.column("phone", sa.String),
    sa.column("role", sa.String),
    sa.column("status", sa.String),
    sa.column("version", sa.Integer),
    sa.column("name_enc", sa.LargeBinary),
    sa.column("email_enc", sa.LargeBinary),
    sa.column("phone_enc", sa.LargeBinary),
    sa.column("email_index", sa.LargeBinary),
)
_versions = sa.table(
    "user_versions",
    sa.column("user_id", sa.String),
    sa.column("version", sa.Integer),
    sa.column("action", sa.String),
    sa.column("changed_by", sa.String),
    sa.column("changed_us", sa.BigInteger),
    sa.column("fields", sa.String),
    sa.column("snapshot", sa.LargeBinary),
)


def _cipher(needed: bool) -> Any:
    from server.accounts.pii import UserCipher
    from server.security.at_rest import BlindIndex, at_rest_keyring

    key = context.config.attributes.get("at_rest_key")
    if not key:
        if needed:
            raise RuntimeError(
                "migration 0004 encrypts users' identity data: run it with "
                "secret_at_rest_key set (medhub migrate with MEDHUB_SECRET_AT_REST_KEY)"
            )
        return None
    return UserCipher(at_rest_keyring(key), BlindIndex(key))


def upgrade() -> None:
    bind = op.get_bind()
    u = _users.c
    rows = bind.execute(
        sa.select(u.id, u.name, u.email, u.phone, u.role, u.status, u.version)
    ).all()
    cipher = _cipher(needed=bool(rows))
    op.create_table(
        "user_versions",
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("changed_by", sa.String(40)),
        sa.Column("changed_us", sa.BigInteger, nullable=False),
        sa.Column("fields", sa.String(400), nullable=False),
        sa.Column("snapshot", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "version", name="pk_user_versions"),
    )
    with op.batch_alter_table("users") as b:
        b.add_column(sa.Column("name_enc", sa.LargeBinary))
        b.add_column(sa.Column("email_enc", sa.LargeBinary))
        b.add_column(sa.Column("phone_enc", sa.LargeBinary))
        b.add_column(sa.Column("email_index", sa.LargeBinary(32)))
    now_us = int(time.time() * 1_000_000)
    for r in rows:
        clear = {"name": r.name, "email": r.email, "phone": r.phone}
        bind.execute(
            sa.update(_users).where(u.id == r.id).values(**cipher.seal_columns(r.id, clear))
        )
        snap = {**clear, "role": r.role, "status": r.status}
        bind.execute(
            sa.insert(_versions).values(
                user_id=r.id,
                version=r.version,
                action="baseline",
                changed_by=None,
                changed_us=now_us,
                fields=",".join(sorted(snap)),
                snapshot=cipher.seal_snapshot(r.id, r.version, snap),
            )
        )
    with op.batch_alter_table("users") as b:
        b.drop_constraint("uq_users_email", type_="unique")
        b.drop_column("name")
        b.drop_column("email")
        b.drop_column("phone")
        for name in ("name_enc", "email_enc", "phone_enc"):
            b.alter_column(name, existing_type=sa.LargeBinary, nullable=False)
        b.alter_column("email_index", existing_type=sa.LargeBinary(32), nullable=False)
        b.create_unique_constraint("uq_users_email_index", ["email_index"])


def downgrade() -> None:
    bind = op.get_bind()
    u = _users.c
    rows = bind.execute(sa.select(u.id, u.name_enc, u.email_enc, u.phone_enc)).all()
    cipher = _cipher(needed=bool(rows))
    with op.batch_alter_table("users") as b:
        b.add_column(sa.Column("name", sa.String(200)))
        b.add_column(sa.Column("email", sa.String(320)))
        b.add_column(sa.Column("phone", sa.String(40)))
    for r in rows:
        clear = {
            k: cipher.open_column(r.id, k, getattr(r, f"{k}_enc"))
            for k in ("name", "email", "phone")
        }
        bind.execute(sa.update(_users).where(u.id == r.id).values(**clear))
    with op.batch_alter_table("users") as b:
        b.drop_constraint("uq_users_email_index", type_="unique")
        for name in ("name_enc", "email_enc", "phone_enc", "email_index"):
            b.drop_column(name)
        b.alter_column("name", existing_type=sa.String(200), nullable=False)
        b.alter_column("email", existing_type=sa.String(320), nullable=False)
        b.alter_column("phone", existing_type=sa.String(40), nullable=False)
        b.create_unique_constraint("uq_users_email", ["email"])
    op.drop_table("user_versions")
