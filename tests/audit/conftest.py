"""Audit fixtures: a migrated database on SQLite and PostgreSQL, an injected clock, trails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from server.audit.checkpoints import FileCheckpointSink
from server.audit.trail import AuditTrail
from server.store.db import Database
from server.store.migrate import upgrade_to_head_async
from tests.pg import db_url, start_postgres

__all__ = ["db_url", "start_postgres"]

KEY = bytes(range(32))
KEY_ID = "k1"
KEYRING = {KEY_ID: KEY}


class FakeClock:
    """A settable UTC clock: ``clock()`` returns ``clock.now``; ``advance(days=...)``."""

    def __init__(self, start: datetime = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def migrated_url(db_url: str) -> str:
    await upgrade_to_head_async(db_url)
    return db_url


@pytest.fixture
async def db(migrated_url: str) -> AsyncIterator[Database]:
    async with Database(migrated_url) as database:
        yield database


@pytest.fixture
def sink(tmp_path: Path) -> FileCheckpointSink:
    return FileCheckpointSink(tmp_path / "audit.checkpoints")


MakeTrail = Callable[..., AuditTrail]


@pytest.fixture
async def make_trail(
    db: Database, sink: FileCheckpointSink, clock: FakeClock
) -> AsyncIterator[MakeTrail]:
    """Build started-later trails on ``db`` (closed at teardown if still open)."""
    made: list[AuditTrail] = []

    def make(**kwargs: Any) -> AuditTrail:
        kwargs.setdefault("key_id", KEY_ID)
        kwargs.setdefault("key", KEY)
        kwargs.setdefault("node_id", "node-a")
        kwargs.setdefault("sink", sink)
        kwargs.setdefault("clock", clock)
        trail = AuditTrail(kwargs.pop("database", db), **kwargs)
        made.append(trail)
        return trail

    yield make
    for trail in made:
        if trail._task is not None and not trail._task.done():
            await trail.close()
