"""The relational schema: one ``MetaData`` (with a naming convention), Core tables.

A capability declares its tables on :data:`metadata`, either here or in its
own ``server/<capability>/tables.py`` (found by :func:`import_table_modules`),
and adds a migration under ``server/store/migrations/versions/`` for each
change (migrations never import table modules: they freeze the schema as it was).
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil

import sqlalchemy as sa

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# A 64-bit integer key that is SQLite's rowid alias (INTEGER PRIMARY KEY) there.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# -- audit trail (server/audit) ---------------------------------------------------
# Columns are named like the fields of server.audit.chain.Entry; every column
# but ``tag`` is covered by the HMAC chain. Only pseudonymous ids, never names.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", BigId, primary_key=True, autoincrement=False),
    sa.Column("ts_us", sa.BigInteger, nullable=False),  # UTC, microseconds since epoch
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
    sa.Index(None, "ts_us"),
    sa.Index(None, "org", "ts_us"),
)

# One row (id = 1): the chain's last seq and tag. Writers lock it (FOR UPDATE on
# PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers).
audit_chain_head = sa.Table(
    "audit_chain_head",
    metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("tag", sa.LargeBinary(32), nullable=False),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
    sa.CheckConstraint("id = 1", name="single_row"),
)

# Purge anchors: the seq and tag of the last purged entry, MAC'd with the audit
# key; the remaining chain verifies from the newest anchor.
audit_anchor = sa.Table(
    "audit_anchor",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("tag", sa.LargeBinary(32), nullable=False),
    sa.Column("ts_us", sa.BigInteger, nullable=False),
    sa.Column("node", sa.String(64), nullable=False),
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("mac", sa.LargeBinary(32), nullable=False),
)


def import_table_modules() -> list[str]:
    """Import every ``server.<package>.tables`` module so that ``metadata`` is complete.

    Returns the module names imported (for autogenerate and the schema test).
    """
    import server

    found: list[str] = []
    for info in pkgutil.iter_modules(server.__path__, "server."):
        if not info.ispkg:
            continue
        name = f"{info.name}.tables"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
            found.append(name)
    return found
