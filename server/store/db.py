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
import contextlib
import logging
import os
import sqlite3
import threading
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

from server.config import SQLITE_WAL_MAX_BYTES
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
    (milliseconds) before failing with ``database is locked``;
    ``sqlite_wal_max_bytes`` the size past which the write-ahead log is
    restarted (see :class:`_Checkpointer`).

    Raises :class:`server.store.engines.UnsupportedDatabaseError` for another
    backend.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 5,
        sqlite_busy_timeout_ms: int = 5000,
        sqlite_wal_max_bytes: int = SQLITE_WAL_MAX_BYTES,
    ):
        self._url = engines.normalise_url(url)
        self._wal_max_bytes = sqlite_wal_max_bytes
        self._dialect = engines.dialect_of(self._url)
        self._pool_size = pool_size
        self._busy_timeout_ms = sqlite_busy_timeout_ms
        self._engine: AsyncEngine | None = None
        # SQLite files only: the synchronous engine and its threads (Database.run)
        self._thread_engine: Engine | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._checkpointer: _Checkpointer | None = None

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
                # one kept connection per thread, and one spare
                self._url,
                pool_size=readers + 2,
                sqlite_busy_timeout_ms=self._busy_timeout_ms,
            )
            self._writer = ThreadPoolExecutor(
                1,
                thread_name_prefix="db-writer",
                initializer=_os_thread_name,
                initargs=("db-writer",),
            )
            self._readers = ThreadPoolExecutor(
                readers, thread_name_prefix="db-reader", initializer=_os_thread_name,
                initargs=("db-reader",),
            )  # fmt: skip
            self._checkpointer = _Checkpointer(str(self._url.database), self._wal_max_bytes)

    async def close(self) -> None:
        """Dispose of the pools and threads (idempotent). Transactions must be finished first."""
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()
        thread_engine, self._thread_engine = self._thread_engine, None
        pools = [p for p in (self._writer, self._readers) if p is not None]
        self._writer = self._readers = None
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        for pool in pools:  # a transaction still running ends first (bounded wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.to_thread(pool.shutdown, wait=True), 10.0)
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()
        if thread_engine is not None:
            _close_connections(thread_engine)
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
            result = await asyncio.get_running_loop().run_in_executor(
                pool, _in_thread, thread_engine, fn, readonly, durable, before
            )
            if not readonly and self._checkpointer is not None:
                self._checkpointer.written.set()
            return result
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


def _os_thread_name(name: str) -> None:
    """Name the current thread for the OS too (``top -H``, ``/proc/*/task/*/comm``)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


_local = threading.local()
#: Connections the database threads keep, by engine: closed by Database.close.
_kept: dict[int, list[Connection]] = {}
_kept_lock = threading.Lock()


def _in_thread(
    engine: Engine,
    fn: Callable[[Connection], T],
    readonly: bool,
    durable: bool,
    before: Callable[[], object] | None,
) -> T:
    """One transaction in a database thread (see :meth:`Database.run`).

    Each database thread keeps its own connection (no pool checkout and no
    reset per transaction); one left unusable by a failure is dropped and a
    new one is made next time.
    """
    if before is not None:
        before()
    conns: dict[int, Connection] = _local.__dict__.setdefault("conns", {})
    key = id(engine)
    conn = conns.get(key)
    if conn is None or conn.closed:
        conn = conns[key] = engine.connect()
        with _kept_lock:
            _kept.setdefault(id(engine), []).append(conn)
    conn.execution_options(**{engines.READONLY_OPTION: readonly, engines.DURABLE_OPTION: durable})
    try:
        with conn.begin():
            return fn(conn)
    except BaseException:
        if conn.invalidated or conn.closed or conn.in_transaction():
            conns.pop(key, None)
            with contextlib.suppress(Exception):
                conn.close()
        raise


def _close_connections(engine: Engine) -> None:
    """Close the connections the threads kept for ``engine`` (they have stopped)."""
    with _kept_lock:
        kept = _kept.pop(id(engine), [])
    for conn in kept:
        with contextlib.suppress(Exception):
            conn.close()


class _Checkpointer:
    """Copies the SQLite WAL into the database file in a thread of its own.

    The writer's connections never checkpoint (``wal_autocheckpoint=0``), so no
    commit waits for the copy and its fsync. This thread runs a PASSIVE
    checkpoint (it never blocks readers or the writer) at most every
    :data:`CHECKPOINT_EVERY_S` seconds after a write.

    A PASSIVE checkpoint never lets the log start over while writes go on
    (new frames always follow the ones it copied), so under writes that never
    pause the log grows without end, and every read slows with it (SQLite looks
    a page up in the log's index, segment after segment). When the log passes
    ``wal_max_bytes``, the thread runs a RESTART checkpoint: writers wait while
    it copies the few frames the PASSIVE one left and the readers move to the
    database file; the next commit then writes from the log's start. A RESTART
    blocks new writers while it waits for readers, so it waits at most
    :data:`RESTART_WAIT_MS` (its connection's busy timeout; a PASSIVE checkpoint
    never waits): behind a reader holding an old snapshot (an export, a backup)
    it gives up and tries again after the next write, instead of holding every
    commit for the database's busy timeout and failing it.
    """

    def __init__(self, path: str, wal_max_bytes: int) -> None:
        self.written = threading.Event()
        self._stop = threading.Event()
        self._path = path
        self._wal_max_bytes = wal_max_bytes
        self._thread = threading.Thread(target=self._run, name="db-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stop.is_set():
                if not self.written.wait(1.0):
                    continue
                self.written.clear()
                if conn is None:
                    conn = sqlite3.connect(self._path, check_same_thread=False)
                    conn.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    if _size(self._path + "-wal") > self._wal_max_bytes:
                        conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                except sqlite3.Error as exc:
                    log.warning("wal checkpoint failed", extra={"error": type(exc).__name__})
                self._stop.wait(CHECKPOINT_EVERY_S)
        finally:
            if conn is not None:
                conn.close()

    def stop(self) -> None:
        """Checkpoint once more and end the thread (waits for it, briefly)."""
        self._stop.set()
        self.written.set()
        self._thread.join(5.0)


#: Seconds between two background WAL checkpoints while writes go on.
CHECKPOINT_EVERY_S = 0.5
#: Milliseconds a RESTART checkpoint waits for the writer and readers, new writers
#: held meanwhile (see :class:`_Checkpointer`); then it gives up until the next round.
RESTART_WAIT_MS = 100


def _size(path: str) -> int:
    """The size of a file in bytes; 0 when it does not exist."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
