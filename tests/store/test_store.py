"""The store foundation on SQLite and PostgreSQL: migrations, pragmas, ping, transactions."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from server.store import engines
from server.store.db import Database, DatabaseNotConnectedError
from server.store.migrate import current_revision_async, head_revision, upgrade_to_head_async
from server.store.schema import import_table_modules, metadata


async def test_migrations_apply_and_are_idempotent(db_url: str) -> None:
    assert await current_revision_async(db_url) is None
    await upgrade_to_head_async(db_url)
    assert await current_revision_async(db_url) == head_revision()
    await upgrade_to_head_async(db_url)  # a second run is a no-op
    assert await current_revision_async(db_url) == head_revision()
    async with Database(db_url) as db, db.begin() as conn:
        head = (await conn.execute(sa.text("SELECT seq FROM audit_chain_head"))).all()
    assert head == [(0,)]


def _diff(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


async def test_migrations_match_schema_module(db_url: str) -> None:
    """Every table declared on the shared metadata is exactly what the migrations build."""
    import_table_modules()
    assert "audit_log" in metadata.tables
    await upgrade_to_head_async(db_url)
    async with Database(db_url) as db, db.engine.connect() as conn:
        assert await conn.run_sync(_diff) == []


async def test_ping_and_dialect(db_url: str) -> None:
    db = Database(db_url, pool_size=2)
    assert await db.ping() is False  # not connected yet
    await db.connect()
    try:
        assert await db.ping() is True
        assert db.dialect == ("sqlite" if db_url.startswith("sqlite") else "postgresql")
    finally:
        await db.close()
    assert await db.ping() is False


async def test_begin_commits_and_rolls_back(db_url: str) -> None:
    await upgrade_to_head_async(db_url)
    async with Database(db_url) as db:
        async with db.begin() as conn:
            await conn.execute(sa.text("UPDATE audit_chain_head SET updated_us = 7"))
        with pytest.raises(RuntimeError):
            async with db.begin() as conn:
                await conn.execute(sa.text("UPDATE audit_chain_head SET updated_us = 9"))
                raise RuntimeError("boom")
        async with db.begin(readonly=True) as conn:
            value = (
                await conn.execute(sa.text("SELECT updated_us FROM audit_chain_head"))
            ).scalar()
    assert value == 7


async def test_sqlite_pragmas(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'medhub.db'}"  # driver added, directory created
    async with Database(url, pool_size=1) as db:
        async with db.begin() as conn:
            journal = (await conn.execute(sa.text("PRAGMA journal_mode"))).scalar()
            fks = (await conn.execute(sa.text("PRAGMA foreign_keys"))).scalar()
            sync = (await conn.execute(sa.text("PRAGMA synchronous"))).scalar()
            busy = (await conn.execute(sa.text("PRAGMA busy_timeout"))).scalar()
        assert (journal, fks, sync, busy) == ("wal", 1, 1, 5000)  # synchronous 1 = NORMAL
        async with db.begin(durable=True) as conn:
            assert (await conn.execute(sa.text("PRAGMA synchronous"))).scalar() == 2  # FULL
        async with db.begin() as conn:  # back to NORMAL on the same pooled connection
            assert (await conn.execute(sa.text("PRAGMA synchronous"))).scalar() == 1
    assert (tmp_path / "sub" / "medhub.db").exists()


async def test_sqlite_write_transactions_serialise(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: a second writer waits for the first instead of failing."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'medhub.db'}"
    await upgrade_to_head_async(url)
    async with Database(url) as a, Database(url) as b:

        async def bump(db: Database) -> None:
            for _ in range(20):
                async with db.begin() as conn:
                    seq = (await conn.execute(sa.text("SELECT seq FROM audit_chain_head"))).scalar()
                    await conn.execute(
                        sa.text("UPDATE audit_chain_head SET seq = :s"), {"s": seq + 1}
                    )

        await asyncio.gather(bump(a), bump(b), bump(a), bump(b))
        async with a.begin(readonly=True) as conn:
            assert (await conn.execute(sa.text("SELECT seq FROM audit_chain_head"))).scalar() == 80


def test_url_normalisation() -> None:
    assert engines.normalise_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert engines.normalise_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    assert engines.normalise_url("postgres://u@h/db").drivername == "postgresql+asyncpg"
    with pytest.raises(engines.UnsupportedDatabaseError):
        engines.normalise_url("mysql+aiomysql://u@h/db")
    with pytest.raises(engines.UnsupportedDatabaseError):
        engines.normalise_url("postgresql+psycopg2://u@h/db")
    with pytest.raises(DatabaseNotConnectedError):
        _ = Database("sqlite:///x.db").engine


async def test_database_errors_never_show_bound_values(tmp_path: Path) -> None:
    """A failed statement's message (logged with tracebacks) hides its parameters."""
    import sqlalchemy as sa
    from sqlalchemy.exc import IntegrityError

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    await db.connect()
    try:
        async with db.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE t (v TEXT NOT NULL UNIQUE)"))
            await conn.execute(sa.text("INSERT INTO t VALUES (:v)"), {"v": "secret-value-1"})
        with pytest.raises(IntegrityError) as info:
            async with db.begin() as conn:
                await conn.execute(sa.text("INSERT INTO t VALUES (:v)"), {"v": "secret-value-1"})
        assert "secret-value-1" not in str(info.value)
        assert "hidden" in str(info.value)
    finally:
        await db.close()


async def test_run_commits_rolls_back_and_prepares_before_the_transaction(db_url: str) -> None:
    await upgrade_to_head_async(db_url)
    table = "audit_anchor"
    order: list[str] = []

    def insert(conn: Connection) -> int:
        order.append("transaction")
        conn.execute(
            sa.text(
                f"INSERT INTO {table} (seq, tag, ts_us, node, key_id, mac) "
                "VALUES (:s, :t, 1, 'n', 'k', :t)"
            ),
            {"s": 7, "t": b"x" * 32},
        )
        return 7

    def boom(conn: Connection) -> None:
        conn.execute(
            sa.text(
                f"INSERT INTO {table} (seq, tag, ts_us, node, key_id, mac) "
                "VALUES (8, :t, 1, 'n', 'k', :t)"
            ),
            {"t": b"y" * 32},
        )
        raise RuntimeError("abort")

    async with Database(db_url) as db:
        assert await db.run(insert, durable=True, before=lambda: order.append("before")) == 7
        assert order == ["before", "transaction"]
        with pytest.raises(RuntimeError, match="abort"):
            await db.run(boom)
        seqs = await db.run(
            lambda c: [r[0] for r in c.execute(sa.text(f"SELECT seq FROM {table}"))],
            readonly=True,
        )
        assert seqs == [7]  # the failed transaction left nothing


async def test_sqlite_transactions_run_in_database_threads_not_the_loop(tmp_path: Path) -> None:
    """One hand-off per transaction: writes in the one writer thread, reads in the readers."""
    import threading

    url = f"sqlite+aiosqlite:///{tmp_path / 'threads.db'}"
    await upgrade_to_head_async(url)
    async with Database(url, pool_size=3) as db:
        loop_thread = threading.current_thread().name

        def where(conn: Connection) -> str:
            for _ in range(20):  # many statements, still one hand-off
                conn.execute(sa.text("SELECT 1"))
            return threading.current_thread().name

        writers = await asyncio.gather(*(db.run(where) for _ in range(10)))
        readers = await asyncio.gather(*(db.run(where, readonly=True) for _ in range(10)))
    assert len(set(writers)) == 1  # in-process writers queue on one thread, in order
    assert writers[0].startswith("db-writer")
    assert writers[0] != loop_thread
    assert all(name.startswith("db-reader") for name in readers)
    assert len(set(readers)) <= 2  # pool_size - 1 reader threads


async def test_prepared_statements_and_multi_row_inserts_on_both_backends(db_url: str) -> None:
    from server.store.fastsql import MultiInsert, Prepared
    from server.store.schema import audit_anchor

    await upgrade_to_head_async(db_url)
    insert = MultiInsert(audit_anchor, ("seq", "tag", "ts_us", "node", "key_id", "mac"), max_rows=7)
    count = Prepared(
        sa.select(sa.func.count())
        .select_from(audit_anchor)
        .where(audit_anchor.c.seq > sa.bindparam("after"))
    )
    rows = [(i, bytes([i]) * 32, i, "n", "k", b"m" * 32) for i in range(1, 21)]  # 3 statements
    async with Database(db_url) as db:
        await db.run(lambda c: insert.execute(c, rows))
        assert await db.run(lambda c: count.execute(c, {"after": 5}).scalar(), readonly=True) == 15
        tags = await db.run(
            lambda c: [
                bytes(r[0]) for r in c.execute(sa.text("SELECT tag FROM audit_anchor ORDER BY seq"))
            ],
            readonly=True,
        )
    assert tags == [r[1] for r in rows]  # every value in its column, in order


async def test_sqlite_wal_stays_bounded_under_writes_that_never_pause(tmp_path: Path) -> None:
    """Commits every few milliseconds for seconds (about 10 MB/s): the write-ahead log is
    restarted near its bound instead of growing with everything written (a PASSIVE
    checkpoint alone never lets it start over while writes go on)."""
    path = tmp_path / "medhub.db"
    bound = 1024 * 1024
    async with Database(f"sqlite:///{path}", sqlite_wal_max_bytes=bound) as db:
        await db.run(
            lambda c: c.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)"))
        )
        rows = [{"b": bytes(16384)}] * 4
        written, largest = 0, 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 4.0
        while loop.time() < deadline:
            await db.run(lambda c: c.execute(sa.text("INSERT INTO t (b) VALUES (:b)"), rows))
            written += 4 * 16384
            largest = max(largest, (tmp_path / "medhub.db-wal").stat().st_size)
            await asyncio.sleep(0.005)
        async with db.begin(readonly=True) as conn:
            count = (await conn.execute(sa.text("SELECT count(*) FROM t"))).scalar()
    assert count * 16384 == written  # every commit kept
    assert written > 16 * bound
    # the bound plus what one checkpoint interval (0.5 s) adds: far below all that was written
    assert largest < written / 3, (largest, written)


def test_sqlite_wal_bound_is_a_setting_with_a_floor() -> None:
    from server.config import ConfigError, load_settings

    assert load_settings(environ={}).sqlite_wal_max_bytes == 32 * 1024 * 1024
    env = {"MEDHUB_SQLITE_WAL_MAX_BYTES": str(8 * 1024 * 1024)}
    assert load_settings(environ=env).sqlite_wal_max_bytes == 8 * 1024 * 1024
    with pytest.raises(ConfigError, match="sqlite_wal_max_bytes"):
        load_settings(environ={"MEDHUB_SQLITE_WAL_MAX_BYTES": "4096"})


async def test_a_long_reader_does_not_stall_writers_behind_the_wal_restart(
    tmp_path: Path,
) -> None:
    """A RESTART checkpoint blocks new writers while it waits for readers: with a reader
    holding an old snapshot (an export, a backup), commits must not wait out the database's
    busy timeout (5 s) behind it, only the checkpoint's own short wait."""
    path = tmp_path / "medhub.db"
    bound = 1024 * 1024
    async with Database(f"sqlite:///{path}", sqlite_wal_max_bytes=bound) as db:
        await db.run(
            lambda c: c.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)"))
        )
        rows = [{"b": bytes(16384)}] * 4
        reader = sqlite3.connect(path, isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM t").fetchall()  # holds its snapshot
            loop = asyncio.get_running_loop()
            slowest, deadline = 0.0, loop.time() + 3.0
            while loop.time() < deadline:
                t0 = loop.time()
                await db.run(lambda c: c.execute(sa.text("INSERT INTO t (b) VALUES (:b)"), rows))
                slowest = max(slowest, loop.time() - t0)
                await asyncio.sleep(0.005)
            assert (path.parent / "medhub.db-wal").stat().st_size > bound  # restarts were due
        finally:
            reader.execute("COMMIT")
            reader.close()
    assert slowest < 1.0, slowest
