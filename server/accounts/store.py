"""SQL for organisations, users, invitations, recovery codes, TOTP steps.

Only SQLAlchemy Core statements that run unchanged on SQLite and PostgreSQL.
Every method opens its own transaction (``Database.begin``) unless given a
connection. Raises :class:`DuplicateError` for a unique-key clash (an email
already used); other driver errors propagate as SQLAlchemy exceptions.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from server.accounts.tables import invitations, orgs, recovery_codes, users
from server.store.db import Database


class DuplicateError(Exception):
    """A unique value (an email) is already taken."""


def new_id(prefix: str) -> str:
    """A pseudonymous random id: ``prefix-`` + 20 hex digits (80 bits)."""
    return f"{prefix}-{secrets.token_hex(10)}"


@dataclass(frozen=True, slots=True)
class Org:
    """An organisation (partner clinic or hospital)."""

    id: str
    name: str
    disabled: bool
    created_us: int


@dataclass(frozen=True, slots=True)
class User:
    """A user row (secrets stay as stored: hash and envelopes)."""

    id: str
    org_id: str
    role: str
    name: str
    email: str
    phone: str
    status: str
    password_hash: str | None
    password_changed_us: int | None
    totp_secret: bytes | None
    totp_pending: bytes | None
    totp_last_step: int
    expires_us: int | None
    created_us: int
    version: int


def _user(row: Any) -> User:
    return User(**{name: row._mapping[name] for name in User.__slots__})


class AccountStore:
    """Organisations, users and their credentials in the database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- organisations -----------------------------------------------------------
    async def create_org(self, name: str, now_us: int) -> Org:
        """Insert an organisation and return it."""
        org = Org(new_id("o"), name, False, now_us)
        async with self.db.begin() as conn:
            await conn.execute(sa.insert(orgs).values(**_asdict(org)))
        return org

    async def get_org(self, org_id: str) -> Org | None:
        """The organisation, or None."""
        async with self.db.begin(readonly=True) as conn:
            row = (await conn.execute(sa.select(orgs).where(orgs.c.id == org_id))).first()
        return None if row is None else Org(**row._mapping)

    async def list_orgs(self) -> list[Org]:
        """Every organisation, by name."""
        async with self.db.begin(readonly=True) as conn:
            rows = await conn.execute(sa.select(orgs).order_by(orgs.c.name, orgs.c.id))
            return [Org(**row._mapping) for row in rows]

    # -- users ---------------------------------------------------------------------
    async def create_user(
        self,
        *,
        org_id: str,
        role: str,
        name: str,
        email: str,
        phone: str,
        status: str,
        now_us: int,
        expires_us: int | None = None,
    ) -> User:
        """Insert a user; raises :class:`DuplicateError` if the email is taken."""
        user = User(
            id=new_id("u"),
            org_id=org_id,
            role=role,
            name=name,
            email=email.strip().lower(),
            phone=phone,
            status=status,
            password_hash=None,
            password_changed_us=None,
            totp_secret=None,
            totp_pending=None,
            totp_last_step=-1,
            expires_us=expires_us,
            created_us=now_us,
            version=1,
        )
        try:
            async with self.db.begin() as conn:
                await conn.execute(sa.insert(users).values(**_asdict(user)))
        except IntegrityError as exc:
            raise DuplicateError("email already used") from exc
        return user

    async def get_user(self, user_id: str) -> User | None:
        """The user, or None."""
        async with self.db.begin(readonly=True) as conn:
            row = (await conn.execute(sa.select(users).where(users.c.id == user_id))).first()
        return None if row is None else _user(row)

    async def user_by_email(self, email: str) -> User | None:
        """The user with this (case-insensitive) email, or None."""
        wanted = email.strip().lower()
        async with self.db.begin(readonly=True) as conn:
            row = (await conn.execute(sa.select(users).where(users.c.email == wanted))).first()
        return None if row is None else _user(row)

    async def list_users(self, org_id: str | None) -> list[User]:
        """Users of ``org_id`` (every organisation when None), by id."""
        query = sa.select(users).order_by(users.c.id)
        if org_id is not None:
            query = query.where(users.c.org_id == org_id)
        async with self.db.begin(readonly=True) as conn:
            return [_user(row) for row in await conn.execute(query)]

    async def update_user(self, user_id: str, **values: Any) -> bool:
        """Set columns of a user and bump its version; False if no such user."""
        stmt = (
            sa.update(users)
            .where(users.c.id == user_id)
            .values(version=users.c.version + 1, **values)
        )
        async with self.db.begin() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    async def accept_totp_step(self, user_id: str, step: int) -> bool:
        """Record ``step`` as the last accepted TOTP step, only if it is newer.

        One conditional UPDATE: of two concurrent callers with the same step
        (on any nodes sharing the database) exactly one gets True.
        """
        stmt = (
            sa.update(users)
            .where(users.c.id == user_id, users.c.totp_last_step < step)
            .values(totp_last_step=step)
        )
        async with self.db.begin() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    # -- recovery codes -----------------------------------------------------------
    async def replace_recovery_codes(self, user_id: str, hashes: Iterable[bytes]) -> None:
        """Drop the user's recovery codes and store these (hashed) ones."""
        rows = [{"code_hash": h, "user_id": user_id, "used_us": None} for h in hashes]
        async with self.db.begin() as conn:
            await conn.execute(sa.delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
            await conn.execute(sa.insert(recovery_codes), rows)

    async def use_recovery_code(self, user_id: str, code_hash: bytes, now_us: int) -> bool:
        """Spend one unused recovery code atomically; False if unknown or used."""
        stmt = (
            sa.update(recovery_codes)
            .where(
                recovery_codes.c.user_id == user_id,
                recovery_codes.c.code_hash == code_hash,
                recovery_codes.c.used_us.is_(None),
            )
            .values(used_us=now_us)
        )
        async with self.db.begin() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    async def recovery_codes_left(self, user_id: str) -> int:
        """How many unused recovery codes the user has."""
        query = sa.select(sa.func.count()).where(
            recovery_codes.c.user_id == user_id, recovery_codes.c.used_us.is_(None)
        )
        async with self.db.begin(readonly=True) as conn:
            return int((await conn.execute(query)).scalar_one())

    # -- invitations --------------------------------------------------------------
    async def create_invitation(self, token_hash: bytes, user_id: str, expires_us: int) -> None:
        """Store an invitation (its token hashed)."""
        async with self.db.begin() as conn:
            await conn.execute(
                sa.insert(invitations).values(
                    token_hash=token_hash, user_id=user_id, expires_us=expires_us, used_us=None
                )
            )

    async def peek_invitation(self, token_hash: bytes, now_us: int) -> str | None:
        """The user id of an unexpired, unused invitation (not spent), or None."""
        query = sa.select(invitations.c.user_id).where(
            invitations.c.token_hash == token_hash,
            invitations.c.used_us.is_(None),
            invitations.c.expires_us > now_us,
        )
        async with self.db.begin(readonly=True) as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else str(row.user_id)

    async def take_invitation(self, token_hash: bytes, now_us: int) -> str | None:
        """Spend an unexpired, unused invitation atomically; its user id, or None."""
        cond = (
            invitations.c.token_hash == token_hash,
            invitations.c.used_us.is_(None),
            invitations.c.expires_us > now_us,
        )
        async with self.db.begin() as conn:
            row = (await conn.execute(sa.select(invitations.c.user_id).where(*cond))).first()
            if row is None:
                return None
            done = await conn.execute(sa.update(invitations).where(*cond).values(used_us=now_us))
            return str(row.user_id) if done.rowcount == 1 else None


def _asdict(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}
