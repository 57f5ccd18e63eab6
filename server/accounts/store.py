"""SQL for organisations, users, invitations, recovery codes, TOTP steps.

Only SQLAlchemy Core statements that run unchanged on SQLite and PostgreSQL.
Every method opens its own transaction (``Database.begin``) unless given a
connection. Raises :class:`DuplicateError` for a unique-key clash (an email
already used); other driver errors propagate as SQLAlchemy exceptions.

Users' name, email and phone are encrypted on write and decrypted on read
(:class:`server.accounts.pii.UserCipher`); a value that does not open raises
:class:`server.security.crypto.CryptoError`. Every create and change of a
user writes a ``user_versions`` row in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from server.accounts import access_log
from server.accounts.pii import UserCipher
from server.accounts.tables import invitations, orgs, recovery_codes, user_versions, users
from server.security.at_rest import normalise_email
from server.store.db import Database
from server.store.ids import new_id


class DuplicateError(Exception):
    """A unique value (an email) is already taken."""


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


@dataclass(frozen=True, slots=True)
class UserRef:
    """Who a user is without their identity data: the name stays sealed until opened.

    :meth:`AccountStore.open_name` decrypts it, for the viewers the policy allows.
    """

    id: str
    org_id: str
    role: str
    status: str
    name_enc: bytes


@dataclass(frozen=True, slots=True)
class UserVersion:
    """One version row of a user, its snapshot decrypted."""

    user_id: str
    version: int
    action: str
    changed_by: str | None
    changed_us: int
    fields: dict[str, Any]


#: Columns of ``users`` stored as they are (the rest are encrypted).
_PLAIN = tuple(n for n in User.__slots__ if n not in ("name", "email", "phone"))


class AccountStore:
    """Organisations, users and their credentials in the database."""

    def __init__(self, db: Database, cipher: UserCipher) -> None:
        self.db = db
        self.cipher = cipher

    def user_from_row(self, row: Any) -> User:
        """A user from a row holding the ``users`` columns (identity fields decrypted)."""
        return self._user(row)

    def _user(self, row: Any) -> User:
        m = row._mapping
        uid, opened = m["id"], self.cipher.open_column
        clear: dict[str, Any] = {
            k: opened(uid, k, m[f"{k}_enc"]) for k in ("name", "email", "phone")
        }
        return User(**clear, **{name: m[name] for name in _PLAIN})

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
        by: str | None = None,
    ) -> User:
        """Insert a user (version 1, made ``by`` a user id or None: the system).

        Raises :class:`DuplicateError` if the email is taken (case-insensitive).
        """
        user = User(
            id=new_id("u"),
            org_id=org_id,
            role=role,
            name=name,
            email=normalise_email(email),
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
        values = _asdict(user)
        try:
            async with self.db.begin() as conn:
                await conn.execute(
                    sa.insert(users).values(**self.cipher.seal_columns(user.id, values))
                )
                changed = {k: v for k, v in values.items() if k not in ("id", "version")}
                await self._version(conn, user.id, 1, "create", by, now_us, changed)
        except IntegrityError as exc:
            raise DuplicateError("email already used") from exc
        return user

    async def _version(
        self,
        conn: Any,
        user_id: str,
        version: int,
        action: str,
        by: str | None,
        now_us: int,
        changed: dict[str, Any],
    ) -> None:
        await conn.execute(
            sa.insert(user_versions).values(
                user_id=user_id,
                version=version,
                action=action,
                changed_by=by,
                changed_us=now_us,
                fields=",".join(sorted(changed)),
                snapshot=self.cipher.seal_snapshot(user_id, version, changed),
            )
        )

    async def versions(self, user_id: str) -> list[UserVersion]:
        """The user's version rows, oldest first, snapshots decrypted."""
        v = user_versions.c
        query = sa.select(user_versions).where(v.user_id == user_id).order_by(v.version)
        async with self.db.begin(readonly=True) as conn:
            rows = list(await conn.execute(query))
        return [
            UserVersion(
                r.user_id,
                r.version,
                r.action,
                r.changed_by,
                r.changed_us,
                self.cipher.open_snapshot(r.user_id, r.version, r.snapshot),
            )
            for r in rows
        ]

    async def get_user(self, user_id: str) -> User | None:
        """The user, or None."""
        async with self.db.begin(readonly=True) as conn:
            row = (await conn.execute(sa.select(users).where(users.c.id == user_id))).first()
        return None if row is None else self._user(row)

    async def user_by_email(self, email: str) -> User | None:
        """The user with this (case-insensitive) email, or None."""
        wanted = self.cipher.email_index(email)
        query = sa.select(users).where(users.c.email_index == wanted)
        async with self.db.begin(readonly=True) as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else self._user(row)

    async def list_users(self, org_id: str | None) -> list[User]:
        """Users of ``org_id`` (every organisation when None), by id."""
        query = sa.select(users).order_by(users.c.id)
        if org_id is not None:
            query = query.where(users.c.org_id == org_id)
        async with self.db.begin(readonly=True) as conn:
            rows = list(await conn.execute(query))
        return [self._user(row) for row in rows]

    async def user_ids(self) -> list[str]:
        """Every user's id (no identity data read)."""
        async with self.db.begin(readonly=True) as conn:
            return [str(r.id) for r in await conn.execute(sa.select(users.c.id))]

    async def user_refs(self, ids: Iterable[str]) -> dict[str, UserRef]:
        """The users among ``ids`` (any status), their names still sealed; one query."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        c = users.c
        query = sa.select(c.id, c.org_id, c.role, c.status, c.name_enc).where(c.id.in_(wanted))
        async with self.db.begin(readonly=True) as conn:
            rows = list(await conn.execute(query))
        return {r.id: UserRef(r.id, r.org_id, r.role, r.status, r.name_enc) for r in rows}

    def open_name(self, ref: UserRef) -> str:
        """The clear name of ``ref``; raises :class:`~server.security.crypto.CryptoError`."""
        return self.cipher.open_column(ref.id, "name", ref.name_enc)

    async def update_user(
        self, user_id: str, *, by: str | None, now_us: int, **values: Any
    ) -> bool:
        """Set fields of a user, bump its version and write the version row.

        ``by`` is the user id who made the change (None: the system or the
        CLI). ``name``, ``email`` and ``phone`` are given in clear and stored
        encrypted. False if no such user; :class:`DuplicateError` if a new
        email is taken.
        """
        if "email" in values:
            values["email"] = normalise_email(values["email"])
        stmt = (
            sa.update(users)
            .where(users.c.id == user_id)
            .values(version=users.c.version + 1, **self.cipher.seal_columns(user_id, values))
        )
        kind = (
            access_log.ChangeKind.RIGHTS
            if {"role", "status", "expires_us"} & set(values)
            else access_log.ChangeKind.PROFILE
        )
        try:
            async with self.db.begin() as conn:
                if (await conn.execute(stmt)).rowcount != 1:
                    return False
                query = sa.select(users.c.version).where(users.c.id == user_id)
                version = int((await conn.execute(query)).scalar_one())
                await self._version(conn, user_id, version, "update", by, now_us, values)
                await access_log.record(conn, kind, [user_id], now_us)
        except IntegrityError as exc:
            raise DuplicateError("email already used") from exc
        return True

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
            if rows:  # none: the codes are only dropped (an MFA reset)
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
        """The user id of an unexpired, unused invitation (not spent), or None.

        An invitation can be accepted any number of times until its enrolment
        is confirmed (:meth:`take_invitation`), it expires or it is replaced.
        """
        query = sa.select(invitations.c.user_id).where(
            invitations.c.token_hash == token_hash,
            invitations.c.used_us.is_(None),
            invitations.c.expires_us > now_us,
        )
        async with self.db.begin(readonly=True) as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else str(row.user_id)

    async def revoke_invitations(self, user_id: str, now_us: int) -> int:
        """Mark every unused invitation of ``user_id`` used (a new one replaces them)."""
        stmt = (
            sa.update(invitations)
            .where(invitations.c.user_id == user_id, invitations.c.used_us.is_(None))
            .values(used_us=now_us)
        )
        async with self.db.begin() as conn:
            return int((await conn.execute(stmt)).rowcount)

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
