"""Login sessions: opaque random tokens, stored as SHA-256, with idle and absolute ends.

A token is ``secrets.token_urlsafe(32)`` (256 bits); only its SHA-256 is stored,
so a database leak gives no usable token. Each session also has a public,
pseudonymous id (``s-...``) used to list and revoke it and to close its
sockets. A new token is made at every login (no fixation).

Validity: not revoked, ``now < expires_us`` (absolute timeout from login) and
``now - last_seen_us < idle_timeout``. ``last_seen_us`` is refreshed at most
once a minute, to keep reads from turning into writes.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.accounts import access_log
from server.accounts.tables import sessions, users
from server.store.db import Database
from server.store.ids import new_id

#: Microseconds between two writes of a session's last-seen time (idle timeout).
TOUCH_EVERY_US = 60_000_000
#: Ids per ``IN (...)`` list (SQLite's bound-parameter limit is far above).
_CHUNK = 500


def new_token() -> str:
    """A fresh session, ticket or one-time code: 256 random bits, URL-safe base64.

    Never starts with ``-``: invitation and recovery codes are typed on command
    lines (``medhub-chat enrol CODE``), where one starting with ``-`` reads as an
    option (1 code in 64 did).
    """
    while (token := secrets.token_urlsafe(32)).startswith("-"):
        pass
    return token


def token_hash(token: str) -> bytes:
    """SHA-256 of a token (tokens are random: no stretching needed)."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A stored session (never the token)."""

    id: str
    user_id: str
    created_us: int
    last_seen_us: int
    expires_us: int
    auth_us: int
    restricted: str | None
    source: str | None
    revoked_us: int | None


def _row(row: Any) -> SessionRow:
    return SessionRow(**{name: row._mapping[name] for name in SessionRow.__slots__})


class SessionStore:
    """Sessions in the database; ``idle_us`` and ``absolute_us`` are the timeouts."""

    def __init__(self, db: Database, *, idle_us: int, absolute_us: int) -> None:
        self.db = db
        self.idle_us = idle_us
        self.absolute_us = absolute_us

    async def create(
        self, user_id: str, now_us: int, *, source: str | None, restricted: str | None = None
    ) -> tuple[str, SessionRow]:
        """A new session for ``user_id``; returns (token, row). The token is shown once."""
        token = new_token()
        row = SessionRow(
            new_id("s"),
            user_id,
            now_us,
            now_us,
            now_us + self.absolute_us,
            now_us,
            restricted,
            source,
            None,
        )
        values = {name: getattr(row, name) for name in SessionRow.__slots__}
        async with self.db.begin() as conn:
            await conn.execute(sa.insert(sessions).values(token_hash=token_hash(token), **values))
        return token, row

    def valid(self, row: SessionRow, now_us: int) -> bool:
        """True when ``row`` is neither revoked, nor past its absolute or idle end."""
        return (
            row.revoked_us is None
            and now_us < row.expires_us
            and now_us - row.last_seen_us < self.idle_us
        )

    async def by_token(self, token: str, now_us: int) -> SessionRow | None:
        """The valid session of ``token`` (touching ``last_seen``), or None."""
        async with self.db.begin(readonly=True) as conn:
            query = sa.select(sessions).where(sessions.c.token_hash == token_hash(token))
            found = (await conn.execute(query)).first()
        return await self._checked(None if found is None else _row(found), now_us)

    async def by_id(self, session_id: str, now_us: int) -> SessionRow | None:
        """The valid session with this id (touching ``last_seen``), or None."""
        return await self._checked(await self.get(session_id), now_us)

    async def get(self, session_id: str) -> SessionRow | None:
        """The session with this id, valid or not."""
        async with self.db.begin(readonly=True) as conn:
            query = sa.select(sessions).where(sessions.c.id == session_id)
            found = (await conn.execute(query)).first()
        return None if found is None else _row(found)

    async def _checked(self, row: SessionRow | None, now_us: int) -> SessionRow | None:
        if row is None or not self.valid(row, now_us):
            return None
        if now_us - row.last_seen_us >= TOUCH_EVERY_US:
            await self.update(row.id, last_seen_us=now_us)
        return row

    async def keep_alive(
        self, active: Collection[str], watched: Collection[str], now_us: int
    ) -> set[str]:
        """Mark the valid ``active`` sessions used at ``now_us``; the ended ids of ``watched``.

        Ended: unknown, revoked, past their absolute end or idle (as :meth:`valid`).
        One transaction; ids go in chunks so thousands of sockets stay one round.
        """
        c = sessions.c
        alive = (
            c.revoked_us.is_(None),
            c.expires_us > now_us,
            c.last_seen_us > now_us - self.idle_us,
        )
        valid: set[str] = set()
        async with self.db.begin() as conn:
            for ids in _chunks(active):
                await conn.execute(
                    sa.update(sessions).where(c.id.in_(ids), *alive).values(last_seen_us=now_us)
                )
            for ids in _chunks(watched):
                found = await conn.execute(sa.select(c.id).where(c.id.in_(ids), *alive))
                valid.update(str(r.id) for r in found)
        return set(watched) - valid

    async def update(self, session_id: str, **values: Any) -> None:
        """Set columns of a session (``auth_us`` after re-authentication, ...)."""
        async with self.db.begin() as conn:
            await conn.execute(
                sa.update(sessions).where(sessions.c.id == session_id).values(values)
            )

    async def list_for(self, user_id: str, now_us: int) -> list[SessionRow]:
        """The user's valid sessions, newest first."""
        query = (
            sa.select(sessions)
            .where(sessions.c.user_id == user_id, sessions.c.revoked_us.is_(None))
            .order_by(sessions.c.created_us.desc())
        )
        async with self.db.begin(readonly=True) as conn:
            rows = [_row(r) for r in await conn.execute(query)]
        return [r for r in rows if self.valid(r, now_us)]

    async def revoke(
        self, user_id: str, now_us: int, *, only: str | None = None, keep: str | None = None
    ) -> list[str]:
        """Revoke the user's live sessions (``only`` one, or all but ``keep``); their ids."""
        cond = [sessions.c.user_id == user_id, sessions.c.revoked_us.is_(None)]
        if only is not None:
            cond.append(sessions.c.id == only)
        if keep is not None:
            cond.append(sessions.c.id != keep)
        async with self.db.begin() as conn:
            ids = [str(r.id) for r in await conn.execute(sa.select(sessions.c.id).where(*cond))]
            if ids:
                await conn.execute(
                    sa.update(sessions).where(sessions.c.id.in_(ids)).values(revoked_us=now_us)
                )
                await access_log.record(
                    conn, access_log.ChangeKind.SESSION, [user_id] * len(ids), now_us, ids
                )
        return ids

    async def with_user(
        self, *, token: str | None = None, session_id: str | None = None
    ) -> tuple[SessionRow, Any] | None:
        """The session of ``token`` (or with id ``session_id``) and its user's row: ONE query.

        Valid or not (the caller checks :meth:`valid` at use time); None if unknown.
        """
        s = sessions.c
        where = s.token_hash == token_hash(token) if token is not None else s.id == session_id
        query = (
            sa.select(*[s[n].label(f"s_{n}") for n in SessionRow.__slots__], users)
            .join(users, users.c.id == s.user_id)
            .where(where)
        )

        def read(conn: Connection) -> tuple[SessionRow, Any] | None:
            row = conn.execute(query).first()
            if row is None:
                return None
            m = row._mapping
            return SessionRow(**{n: m[f"s_{n}"] for n in SessionRow.__slots__}), row

        return await self.db.run(read, readonly=True)

    async def touch(self, session_id: str, now_us: int) -> None:
        """Record a use of the session (its idle end moves), at most every TOUCH_EVERY_US."""
        stmt = sa.update(sessions).where(sessions.c.id == session_id).values(last_seen_us=now_us)
        await self.db.run(lambda c: c.execute(stmt))


def _chunks(ids: Collection[str]) -> list[list[str]]:
    items = list(ids)
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
