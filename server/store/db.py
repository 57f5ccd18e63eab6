"""The database handle: one SQLAlchemy ``AsyncEngine`` per process.

Build it from config (``Database(settings.effective_database_url,
pool_size=settings.db_pool_size)``), ``await connect()`` in the lifespan,
``await close()`` on shutdown. The same SQLAlchemy Core statements run on
SQLite and PostgreSQL (backend differences are in :mod:`server.store.engines`).

Two ways to run a transaction:

* :meth:`Database.run` (the hot paths: chat, the audit writer, sessions,
  facts): a *synchronous* function of a ``sqlalchemy.Connection`` runs the
  whole transaction. On SQLite it runs in a database thread, so the event
  loop hands off once per transaction (not once per statement): write
  transactions go to ONE writer thread (in-process writers queue in order
  instead of sleeping in SQLite's busy handler), read-only ones to
  ``pool_size - 1`` reader threads (WAL readers never block the writer). On
  PostgreSQL it runs with asyncpg through SQLAlchemy's ``run_sync`` (no
  thread: asyncpg needs none).
* :meth:`Database.begin` (the cold paths: administration, CLI tools): an
  ``AsyncConnection`` in a transaction (aiosqlite on SQLite: one thread
  hand-off per statement).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.store import engines

log = logging.getLogger(__name__)

T = TypeVar("T")


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
        # SQLite files only: the synchronous engine and its threads (Database.run)
        self._thread_engine: Engine | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None

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
        threaded = self._dialect == "sqlite" and not engines.is_sqlite_memory(self._url)
        if threaded:
            Path(self._url.database or "").parent.mkdir(parents=True, exist_ok=True)
        self._engine = engines.create_engine(
            self._url, pool_size=self._pool_size, sqlite_busy_timeout_ms=self._busy_timeout_ms
        )
        if threaded:
            readers = max(1, self._pool_size - 1)
            self._thread_engine = engines.create_thread_engine(
                self._url, pool_size=readers + 1, sqlite_busy_timeout_ms=self._busy_timeout_ms
            )
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="db-writer")
            self._readers = ThreadPoolExecutor(readers, thread_name_prefix="db-reader")

    async def close(self) -> None:
        """Dispose of the pools and threads (idempotent). Transactions must be finished first."""
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()
        thread_engine, self._thread_engine = self._thread_engine, None
        for pool in (self._writer, self._readers):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._writer = self._readers = None
        if thread_engine is not None:
            thread_engine.dispose()

    async def run(
        self,
        fn: Callable[[Connection], T],
        *,
        readonly: bool = False,
        durable: bool = False,
        before: Callable[[], object] | None = None,
    ) -> T:
        """Run ``fn(conn)`` in one transaction (committed if it returns, rolled back if it raises).

        ``fn`` is synchronous and must read what it needs before returning
        (results do not outlive the transaction). ``before`` runs first, off
        the event loop, before the transaction takes any lock (preparation
        such as encoding). ``readonly`` and ``durable`` as for :meth:`begin`.
        Raises what ``fn`` raises, SQLAlchemy errors, and
        :class:`DatabaseNotConnectedError` before :meth:`connect`.
        """
        engine = self.engine  # raises before connect()
        thread_engine = self._thread_engine
        if thread_engine is not None:
            pool = self._readers if readonly else self._writer
            assert pool is not None
            return await asyncio.get_running_loop().run_in_executor(
                pool, _in_thread, thread_engine, fn, readonly, durable, before
            )
        if before is not None:
            await asyncio.to_thread(before)
        async with engine.connect() as conn:
            conn = await conn.execution_options(
                **{engines.READONLY_OPTION: readonly, engines.DURABLE_OPTION: durable}
            )
            async with conn.begin():
                return await conn.run_sync(fn)

    async def ping(self) -> bool:
        """True when a ``SELECT 1`` round trip succeeds (for ``/readyz``); never raises."""
        if self._engine is None:
            return False
        try:
            await self.run(lambda conn: conn.execute(text("SELECT 1")).scalar(), readonly=True)
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


def _in_thread(
    engine: Engine,
    fn: Callable[[Connection], T],
    readonly: bool,
    durable: bool,
    before: Callable[[], object] | None,
) -> T:
    """One transaction in a database thread (see :meth:`Database.run`)."""
    if before is not None:
        before()
    with engine.connect() as conn:
        conn = conn.execution_options(
            **{engines.READONLY_OPTION: readonly, engines.DURABLE_OPTION: durable}
        )
        with conn.begin():
            return fn(conn)
