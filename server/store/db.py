"""The database handle: one SQLAlchemy ``AsyncEngine`` per process.

Build it from config (``Database(settings.effective_database_url,
pool_size=settings.db_pool_size)``), ``await connect()`` in the lifespan,
``await close()`` on shutdown. Stores run SQLAlchemy Core statements inside
``async with db.begin() as conn:``; the same statements run on SQLite and
PostgreSQL (backend differences are in :mod:`server.store.engines`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.store import engines

log = logging.getLogger(__name__)


class DatabaseNotConnectedError(RuntimeError):
    """A method needing the engine was called before :meth:`Database.connect`."""


class Database:
    """An asyncio database: SQLite (WAL, one file) or PostgreSQL (asyncpg pool).

    ``url`` is a SQLAlchemy URL; ``sqlite://`` and ``postgresql://`` are given
    their asyncio drivers. ``pool_size`` is the number of pooled connections
    (ignored for an in-memory SQLite database). ``sqlite_busy_timeout_ms`` is
    how long a SQLite writer waits for the lock held by another writer
    (milliseconds) before failing with ``database is locked``.

    Raises :class:`server.store.engines.UnsupportedDatabaseError` for another
    backend.
    """

    def __init__(self, url: str, *, pool_size: int = 5, sqlite_busy_timeout_ms: int = 5000):
        self._url = engines.normalise_url(url)
        self._dialect = engines.dialect_of(self._url)
        self._pool_size = pool_size
        self._busy_timeout_ms = sqlite_busy_timeout_ms
        self._engine: AsyncEngine | None = None

    @property
    def dialect(self) -> engines.Dialect:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._dialect

    @property
    def url(self) -> str:
        """The normalised URL, password hidden (safe to log)."""
        return self._url.render_as_string(hide_password=True)

    @property
    def engine(self) -> AsyncEngine:
        """The engine; raises :class:`DatabaseNotConnectedError` before ``connect()``."""
        if self._engine is None:
            raise DatabaseNotConnectedError("call await Database.connect() first")
        return self._engine

    async def connect(self) -> None:
        """Create the engine (idempotent); a SQLite file's directory is created.

        No connection is opened yet: call :meth:`ping` to check reachability.
        """
        if self._engine is not None:
            return
        if self._dialect == "sqlite" and not engines.is_sqlite_memory(self._url):
            Path(self._url.database or "").parent.mkdir(parents=True, exist_ok=True)
        self._engine = engines.create_engine(
            self._url, pool_size=self._pool_size, sqlite_busy_timeout_ms=self._busy_timeout_ms
        )

    async def close(self) -> None:
        """Dispose of the pool (idempotent). Open transactions must be finished first."""
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()

    async def ping(self) -> bool:
        """True when a ``SELECT 1`` round trip succeeds (for ``/readyz``); never raises."""
        if self._engine is None:
            return False
        try:
            async with self.begin(readonly=True) as conn:
                await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as exc:
            log.warning("database ping failed", extra={"error": type(exc).__name__})
            return False
        return True

    @asynccontextmanager
    async def begin(
        self, *, readonly: bool = False, durable: bool = False
    ) -> AsyncIterator[AsyncConnection]:
        """A connection inside a transaction, committed on normal exit, rolled back on error.

        On SQLite a write transaction starts with ``BEGIN IMMEDIATE`` (it holds
        the write lock from the first statement; other writers wait up to the
        busy timeout); ``readonly=True`` uses a deferred ``BEGIN`` and must not
        write. ``durable=True`` makes the SQLite commit survive a power loss
        (``synchronous=FULL``); PostgreSQL commits are always durable.

        Raises SQLAlchemy errors from the driver (e.g. ``OperationalError``).
        """
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(
                **{engines.READONLY_OPTION: readonly, engines.DURABLE_OPTION: durable}
            )
            async with conn.begin():
                yield conn

    async def __aenter__(self) -> Database:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
