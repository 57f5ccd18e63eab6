"""The access change log: every change of someone's access, polled by every node.

A change is written (:func:`record`) in the transaction that makes it:

- ``session``: a session was revoked (logout, "sign out other devices", admin
  disable): its cached credentials are dropped and its sockets close (4010);
- ``rights``: a user's rights changed (role, status, delegation, end of a
  care relationship): the user's cached credentials are dropped, capabilities
  forget cached decisions about them, and their sockets close with 4011 so
  they reconnect with their current rights;
- ``profile``: other account fields changed: cached credentials are dropped.

:class:`AccessWatch` (one supervised loop per node) reads new rows every
``access_poll_interval_s`` (and at once when a pub/sub notice says so), in
``seq`` order, and hands them to the node. Rights therefore never outlive a
change by more than about that interval plus one query, on every node, even
when the change was made by another process (the ``medhub`` CLI) or a
pub/sub notice was lost. PostgreSQL may commit a lower ``seq`` after a
higher one: the watch remembers the gaps it saw and reads them again for
:data:`HOLE_WAIT_S` seconds. Rows older than :data:`RETENTION_S` are pruned.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from server.accounts.tables import access_changes
from server.store.db import Database

log = logging.getLogger(__name__)

#: Seconds a gap in the seqs is read again (a transaction committing late).
HOLE_WAIT_S = 10.0
#: Seconds rows are kept (every node has long read them).
RETENTION_S = 86400.0
#: Rows read per poll, at most (more are read at the next poll, at once).
BATCH = 1000


class ChangeKind(enum.StrEnum):
    """What changed (see the module docstring)."""

    SESSION = "session"
    RIGHTS = "rights"
    PROFILE = "profile"


@dataclass(frozen=True, slots=True)
class Change:
    """One row of the log."""

    seq: int
    user_id: str
    kind: ChangeKind
    session_id: str | None


async def record(
    conn: AsyncConnection,
    kind: ChangeKind,
    user_ids: Sequence[str],
    now_us: int,
    session_ids: Sequence[str | None] | None = None,
) -> None:
    """Log changes inside the caller's transaction (one row per user, or per session)."""
    sessions = session_ids if session_ids is not None else [None] * len(user_ids)
    rows = [
        {"at_us": now_us, "user_id": u, "session_id": s, "kind": kind.value}
        for u, s in zip(user_ids, sessions, strict=True)
    ]
    if rows:
        await conn.execute(sa.insert(access_changes), rows)


def _read(conn: Connection, after: int) -> list[Change]:
    c = access_changes.c
    rows = conn.execute(
        sa.select(c.seq, c.user_id, c.kind, c.session_id)
        .where(c.seq > after)
        .order_by(c.seq)
        .limit(BATCH)
    )
    return [Change(int(r.seq), r.user_id, ChangeKind(r.kind), r.session_id) for r in rows]


def _last(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.max(access_changes.c.seq))).scalar() or 0)


def _prune(conn: Connection, before_us: int) -> int:
    return int(conn.execute(sa.delete(access_changes).where(access_changes.c.at_us < before_us))
               .rowcount)  # fmt: skip


class AccessWatch:
    """Reads the log and applies each change once on this node (see the module doc)."""

    def __init__(
        self, db: Database, apply: Callable[[list[Change]], None], interval_s: float
    ) -> None:
        self._db = db
        self._apply = apply
        self.interval_s = interval_s
        self._last: int | None = None
        self._holes: dict[int, float] = {}  # missing seq -> when first missed
        self._wake = asyncio.Event()
        self._polls = 0

    def poke(self) -> None:
        """Poll now (a pub/sub notice of a change arrived)."""
        self._wake.set()

    async def run(self) -> None:
        """The poll loop (supervised: a database failure raises; it is restarted)."""
        if self._last is None:
            self._last = await self._db.run(_last, readonly=True)
        while True:
            self._wake.clear()
            try:
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            await self.poll()

    async def poll(self) -> int:
        """Read and apply what is new; the number of changes applied."""
        if self._last is None:
            self._last = await self._db.run(_last, readonly=True)
        now = time.monotonic()
        self._holes = {s: t for s, t in self._holes.items() if now - t < HOLE_WAIT_S}
        after = min(self._holes, default=self._last + 1) - 1
        rows = await self._db.run(lambda c: _read(c, after), readonly=True)
        fresh = [r for r in rows if r.seq > self._last or r.seq in self._holes]
        for r in rows:
            self._holes.pop(r.seq, None)
        if rows:
            top = rows[-1].seq
            seen = {r.seq for r in rows}
            for seq in range(self._last + 1, top):
                if seq not in seen:
                    self._holes.setdefault(seq, now)
            self._last = max(self._last, top)
        if fresh:
            self._apply(fresh)
        if len(rows) == BATCH:
            self._wake.set()  # more are waiting: read them at once
        self._polls += 1
        if self._polls % 7200 == 1:  # about hourly at the default interval
            cutoff = int((time.time() - RETENTION_S) * 1e6)
            await self._db.run(lambda c: _prune(c, cutoff))
        return len(fresh)
