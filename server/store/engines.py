"""Every difference between SQLite and PostgreSQL lives here, and only here.

* SQLite (``sqlite+aiosqlite``): each new DBAPI connection gets
  ``journal_mode=WAL``, ``synchronous=NORMAL``, ``foreign_keys=ON`` and a
  ``busy_timeout``; SQLAlchemy (not the ``sqlite3`` driver) emits ``BEGIN``, so
  that a write transaction can take the database lock up front with
  ``BEGIN IMMEDIATE`` (no read-to-write upgrade deadlock, writers queue on the
  busy timeout instead of failing) and a *durable* transaction runs with
  ``synchronous=FULL`` (its commit survives a power loss, not only a crash).
* PostgreSQL (``postgresql+asyncpg``): a pool of ``pool_size`` connections,
  ``pool_pre_ping``; commits are durable by default (``synchronous_commit=on``).

A SQLite database also gets a *synchronous* engine (``pysqlite``, the same
hooks) for :meth:`server.store.db.Database.run`: a whole transaction runs in
one database thread, one hand-off from the event loop instead of one per
statement (aiosqlite's way).

Execution options understood by the SQLite ``begin`` hook (set by
:meth:`server.store.db.Database.begin`): ``medhub_readonly`` (plain deferred
``BEGIN``) and ``medhub_durable`` (``synchronous=FULL`` for that transaction).
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

Dialect = Literal["sqlite", "postgresql"]

#: SQLite page cache per connection (KiB) and memory-mapped I/O window (bytes, shared
#: with the OS page cache).
SQLITE_CACHE_KIB = 16384
SQLITE_MMAP_BYTES = 256 * 1024 * 1024

READONLY_OPTION = "medhub_readonly"
DURABLE_OPTION = "medhub_durable"


class UnsupportedDatabaseError(ValueError):
    """The URL names a database other than SQLite or PostgreSQL."""


def normalise_url(url: str) -> URL:
    """Parse ``url`` and pick the asyncio driver: ``sqlite`` -> ``sqlite+aiosqlite``,
    ``postgresql``/``postgres`` -> ``postgresql+asyncpg``.

    Raises :class:`UnsupportedDatabaseError` for any other backend or driver.
    """
    parsed = make_url(url)
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite":
        if driver not in ("", "aiosqlite", "pysqlite"):
            raise UnsupportedDatabaseError(f"SQLite driver {driver!r} is not asyncio")
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "asyncpg"):
            raise UnsupportedDatabaseError(f"PostgreSQL driver {driver!r}: use asyncpg")
        return parsed.set(drivername="postgresql+asyncpg")
    raise UnsupportedDatabaseError(f"unsupported database {backend!r}: use sqlite or postgresql")


def dialect_of(url: URL) -> Dialect:
    """``"sqlite"`` or ``"postgresql"`` for a URL accepted by :func:`normalise_url`."""
    return "sqlite" if url.get_backend_name() == "sqlite" else "postgresql"


def is_sqlite_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:")


def create_engine(url: URL, *, pool_size: int, sqlite_busy_timeout_ms: int) -> AsyncEngine:
    """Build the engine for ``url`` (already normalised) with this backend's settings.

    The caller owns the engine and must ``await engine.dispose()`` it.
    """
    if dialect_of(url) == "postgresql":
        return create_async_engine(
            url, pool_size=pool_size, pool_pre_ping=True, hide_parameters=True
        )
    # hide_parameters: a database error's text never carries the bound values
    # (password hashes, envelopes, ids) into a log line or a traceback.
    kwargs: dict[str, Any] = {"hide_parameters": True}
    if not is_sqlite_memory(url):
        kwargs["pool_size"] = pool_size
    engine = create_async_engine(url, **kwargs)
    _install_sqlite_hooks(engine.sync_engine, busy_timeout_ms=sqlite_busy_timeout_ms)
    return engine


def create_thread_engine(url: URL, *, pool_size: int, sqlite_busy_timeout_ms: int) -> Engine:
    """The synchronous SQLite engine whose transactions run in the database threads.

    ``url`` is a normalised SQLite URL of a file; ``pool_size`` connections
    are kept (one per database thread). The caller must ``dispose()`` it.
    """
    engine = create_sync_engine(
        url.set(drivername="sqlite+pysqlite"),
        pool_size=pool_size,
        max_overflow=0,
        hide_parameters=True,
        connect_args={"check_same_thread": False},
    )
    # One multi-row INSERT per executemany instead of one step per row: each step
    # releases and re-takes the interpreter lock, and a busy event loop makes the
    # database thread wait for it every time.
    engine.dialect.use_insertmanyvalues_wo_returning = True
    # The writer never checkpoints the WAL itself (a commit that does would stall
    # for the copy and its fsync): Database's checkpoint thread does, in the background.
    _install_sqlite_hooks(engine, busy_timeout_ms=sqlite_busy_timeout_ms, autocheckpoint=False)
    return engine


def _install_sqlite_hooks(
    engine: Engine, *, busy_timeout_ms: int, autocheckpoint: bool = True
) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy emits BEGIN itself (see _on_begin); the driver must not.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            # a larger page cache and memory-mapped reads: fewer page reads and
            # decodes when inserting into large indexes (the chat history)
            cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
            if not autocheckpoint:
                cursor.execute("PRAGMA wal_autocheckpoint=0")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        wanted = "FULL" if options.get(DURABLE_OPTION) else "NORMAL"
        info = conn.connection.info
        if info.get("synchronous", "NORMAL") != wanted:
            conn.exec_driver_sql(f"PRAGMA synchronous={wanted}")
            info["synchronous"] = wanted
        conn.exec_driver_sql("BEGIN" if options.get(READONLY_OPTION) else "BEGIN IMMEDIATE")
