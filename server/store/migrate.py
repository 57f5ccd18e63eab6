"""Alembic, configured in code (no ini file): ``medhub migrate`` and app start-up.

* :func:`upgrade_to_head` - synchronous, for the CLI (runs its own event loop).
* :func:`upgrade_to_head_async` - for code already inside an event loop (tests,
  the application lifespan).

Both are idempotent: a database already at head is left untouched. Several
processes migrating the same PostgreSQL database at once is not supported
(run ``medhub migrate`` once before starting the nodes).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from server.store.db import Database

if TYPE_CHECKING:
    from server.config import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    """An Alembic ``Config`` pointing at ``server/store/migrations`` (no ini file)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str | None:
    """The newest revision id shipped with this code."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _upgrade(connection: Connection, cfg: Config) -> None:
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade_to_head_async(url: str, *, at_rest_key: str | None = None) -> None:
    """Apply every pending migration to the database at ``url``.

    ``at_rest_key`` (``secret_at_rest_key``) is needed by data migrations that
    encrypt existing rows (0004: users' identity data); without it they stop
    when there are rows to encrypt.

    The SQLite file's directory is created if needed. Raises SQLAlchemy errors
    when the database is unreachable, and Alembic errors on a broken history.
    """
    cfg = alembic_config()
    cfg.attributes["at_rest_key"] = at_rest_key
    async with Database(url, pool_size=1) as db, db.engine.connect() as conn:
        await conn.run_sync(_upgrade, cfg)
        await conn.commit()


async def current_revision_async(url: str) -> str | None:
    """The revision the database at ``url`` is at (``None`` when never migrated)."""
    async with Database(url, pool_size=1) as db, db.engine.connect() as conn:
        return await conn.run_sync(_current)


def upgrade_to_head(settings: Settings) -> None:
    """Migrate ``settings.effective_database_url`` to head; creates ``data_dir`` first.

    Must not be called from inside a running event loop (use
    :func:`upgrade_to_head_async` there): raises ``RuntimeError`` if it is.
    """
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    if not settings.secret_at_rest_key and (Path(settings.data_dir) / "secrets").exists():
        from server.config import ensure_secrets  # the embedded default's key file

        settings = ensure_secrets(settings)
    key = settings.secret_at_rest_key or None
    asyncio.run(upgrade_to_head_async(settings.effective_database_url, at_rest_key=key))
