"""``medhub keys rotate``: bring what the at-rest master key protects under its current key.

After an operator rotates the at-rest key (a new ``secret_at_rest_key`` and
``at_rest_key_id``, the old key listed in ``secret_at_rest_retired_keys``, the
nodes restarted one by one: every node opens both), this job:

* re-wraps every record's data key (``record_keys``) under the current key:
  one small envelope per record, the contents and sealed values untouched;
* re-seals users' identity columns (name, email, phone) and their version
  snapshots (``user_versions``), which are sealed by the master key directly.

It works in batches of :data:`BATCH` rows, one short transaction each, with
conditional updates (a row changed meanwhile is left for the next run), so
the hub keeps serving during it: readers open a value under either key.
When it reports nothing left, the retired key can be dropped from the
settings as far as these tables go (chat texts, TOTP secrets and EEG values
are not re-sealed by it yet: docs/records.md). Raises
:class:`~server.security.crypto.CryptoError` for a value that opens under
no configured key, SQLAlchemy errors otherwise.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.accounts.pii import ENCRYPTED
from server.accounts.tables import user_versions, users
from server.records.sealing import RecordKeys
from server.records.tables import record_keys
from server.security.crypto import Keyring, aad
from server.store.db import Database

#: Rows per transaction.
BATCH = 500


@dataclass
class RotationReport:
    """What a run re-wrapped or re-sealed, and under which key."""

    key_id: str
    data_keys: int = 0
    user_columns: int = 0
    user_snapshots: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return asdict(self)


def _data_keys(conn: Connection, keys: RecordKeys) -> int:
    c = record_keys.c
    rows = conn.execute(
        sa.select(c.record_id, c.key_id, c.wrapped).where(c.key_id != keys.current_id).limit(BATCH)
    ).all()
    for r in rows:
        new = keys.rewrap(r.record_id, bytes(r.wrapped))
        values = {"key_id": keys.current_id, **({"wrapped": new} if new is not None else {})}
        conn.execute(
            record_keys.update()
            .where(c.record_id == r.record_id, c.key_id == r.key_id)
            .values(**values)
        )
    return len(rows)


def _users(conn: Connection, ring: Keyring, after: str) -> tuple[int, str | None]:
    """Re-seal the identity columns of a batch of users after id ``after``; (count, last id)."""
    u = users.c
    columns = [getattr(u, col) for col in ENCRYPTED.values()]
    rows = conn.execute(
        sa.select(u.id, *columns).where(u.id > after).order_by(u.id).limit(BATCH)
    ).all()
    done = 0
    for r in rows:
        values = {}
        for col in ENCRYPTED.values():
            env = bytes(getattr(r, col))
            if ring.needs_rotation(env):
                values[col] = ring.reseal(env, aad("users", col, r.id))
        if values:
            old = {getattr(u, col): bytes(getattr(r, col)) for col in values}
            conn.execute(
                users.update()
                .where(u.id == r.id, *[k == v for k, v in old.items()])
                .values(**values)
            )
            done += len(values)
    return done, (str(rows[-1].id) if rows else None)


def _snapshots(conn: Connection, ring: Keyring, after: tuple[str, int]) -> tuple[int, Any]:
    v = user_versions.c
    rows = conn.execute(
        sa.select(v.user_id, v.version, v.snapshot)
        .where(sa.tuple_(v.user_id, v.version) > sa.tuple_(*after))
        .order_by(v.user_id, v.version)
        .limit(BATCH)
    ).all()
    done = 0
    for r in rows:
        env = bytes(r.snapshot)
        if ring.needs_rotation(env):
            new = ring.reseal(env, aad("user_versions", "snapshot", f"{r.user_id}:{r.version}"))
            conn.execute(
                user_versions.update()
                .where(v.user_id == r.user_id, v.version == r.version, v.snapshot == env)
                .values(snapshot=new)
            )
            done += 1
    return done, ((str(rows[-1].user_id), int(rows[-1].version)) if rows else None)


async def rotate(db: Database, keys: RecordKeys) -> RotationReport:
    """Re-wrap and re-seal everything listed in the module docstring; what was done."""
    report = RotationReport(keys.current_id)
    while n := await db.run(lambda c: _data_keys(c, keys)):
        report.data_keys += n
    ring = keys.keyring
    after: str | None = ""
    while after is not None:
        n, after = await db.run(functools.partial(_users, ring=ring, after=after))
        report.user_columns += n
    snap: Any = ("", 0)
    while snap is not None:
        n, snap = await db.run(functools.partial(_snapshots, ring=ring, after=snap))
        report.user_snapshots += n
    return report
