"""Every row the benchmarks put in a hub's database, in one place.

The newer sections (rest, connect, chat_latency, chat, presence) run the hub
with its real authenticator, so they need real accounts: users whose identity
columns are sealed with the at-rest key, a sealed TOTP secret (an enrolled
user), and login sessions whose token only the client knows (the database
holds its SHA-256, as :mod:`server.accounts.sessions` stores it). Chat needs a
conversation, its members, and a history.

Everything is written by SQL through :class:`server.store.db.Database` on a
database migrated to head by :func:`server.store.migrate.upgrade_to_head_async`,
with the same sealing the hub uses (:class:`server.accounts.pii.UserCipher`,
the at-rest and TOTP keyrings, the chat AAD). When the hub's schema or storage
changes, this module is the one to adapt.

A big history is slow to write, so :func:`template` builds (once, then reuses
from :data:`CACHE_DIR`) a database holding :data:`TEMPLATE_USERS` users and one
group conversation with ``messages`` messages, together with the secrets that
sealed it; :func:`prepare` copies it per run and adds that run's members and
fresh sessions. The secrets go to the hub with ``--settings`` (see
:func:`hub_settings_file`): they are random keys for throw-away data.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Seeded organisation, and the conversation of the chat sections.
ORG = "o-bench"
CONV = "c-bench00000000001"
#: Users in a chat template (the biggest conversation of the fan-out section).
TEMPLATE_USERS = 1_000
#: Bump when the rows this module writes change (invalidates cached templates).
SEED_VERSION = 1
CACHE_DIR = Path(os.environ.get("MEDHUB_BENCH_CACHE", "/tmp/medhub-bench-cache"))
#: Rows per INSERT statement batch.
_BATCH = 5_000
HISTORY_TEXT = "Earlier message of the seeded history, number {n}."


def user_id(n: int) -> str:
    """The id of seeded user ``n`` (pseudonymous, like the hub's ``u-`` ids)."""
    return f"u-bench{n:07d}"


def new_secrets() -> dict[str, str]:
    """Fresh random secrets for one hub (and the data sealed for it)."""

    def key() -> str:
        return base64.b64encode(os.urandom(32)).decode()

    return {
        "secret_at_rest_key": key(),
        "secret_totp_key": key(),
        "secret_turn": key(),
        "secret_audit_key": key(),
    }


def db_url(path: Path) -> str:
    """The SQLAlchemy URL of the SQLite file ``path``."""
    return f"sqlite+aiosqlite:///{path.resolve()}"


def settings_for(secrets_: dict[str, str], db_path: Path) -> Any:
    """Settings of a hub using ``db_path`` and ``secrets_`` (for sealing and for the hub)."""
    from server.config import load_settings

    overrides = {**secrets_, "database_url": db_url(db_path), "data_dir": str(db_path.parent)}
    return load_settings(environ={}, overrides=overrides)


def known_settings(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` less the keys the hub's ``Settings`` does not have (yet, or any more)."""
    from server.config import Settings

    fields = set(Settings.__struct_fields__)
    return {k: v for k, v in values.items() if k in fields}


def hub_settings_file(path: Path, secrets_: dict[str, str], db_path: Path, **extra: Any) -> Path:
    """Write the JSON for ``bench_server --settings``: secrets, database, the hub's default
    rate limits (the bench server's generous ones are undone) and ``extra`` settings."""
    from server.config import load_settings

    defaults = load_settings(environ={}, overrides={})
    values: dict[str, Any] = {
        **secrets_,
        "database_url": db_url(db_path),
        "ws_rate_per_s": defaults.ws_rate_per_s,
        "ws_rate_burst": defaults.ws_rate_burst,
        "ws_max_connections": defaults.ws_max_connections,
        "ws_max_connections_per_user": defaults.ws_max_connections_per_user,
        **extra,
    }
    path.write_text(json.dumps(known_settings(values)))
    path.chmod(0o600)
    return path


def _chunks(rows: Sequence[Any], size: int = _BATCH) -> Iterator[Sequence[Any]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


async def migrate(db_path: Path, secrets_: dict[str, str]) -> None:
    """Create (or bring to head) the schema of the SQLite file ``db_path``."""
    from server.store.migrate import upgrade_to_head_async

    db_path.parent.mkdir(parents=True, exist_ok=True)
    await upgrade_to_head_async(db_url(db_path), at_rest_key=secrets_["secret_at_rest_key"])


async def add_users(db: Any, settings: Any, numbers: Sequence[int]) -> None:
    """Insert org :data:`ORG` (if missing) and active, enrolled practitioners ``numbers``."""
    import sqlalchemy as sa

    from server.accounts.pii import UserCipher
    from server.accounts.tables import orgs, users
    from server.security.at_rest import settings_blind_index, settings_keyring
    from server.security.crypto import aad
    from server.security.keys import aead_keyring

    cipher = UserCipher(settings_keyring(settings), settings_blind_index(settings))
    totp = aead_keyring(settings, "totp")
    now = time.time_ns() // 1000
    rows = []
    for n in numbers:
        uid = user_id(n)
        clear = {"name": f"Bench User {n}", "email": f"{uid}@bench.invalid", "phone": ""}
        rows.append(
            {**cipher.seal_columns(uid, clear), "id": uid, "org_id": ORG,
             "role": "practitioner", "status": "active", "password_hash": None,
             "password_changed_us": now,
             "totp_secret": totp.seal(base64.b32encode(os.urandom(20)),
                                      aad("users", "totp_secret", uid)),
             "totp_pending": None, "totp_last_step": -1, "expires_us": None,
             "created_us": now, "version": 1}
        )  # fmt: skip
    async with db.begin() as conn:
        found = (await conn.execute(sa.select(orgs.c.id).where(orgs.c.id == ORG))).first()
        if found is None:
            await conn.execute(
                sa.insert(orgs).values(id=ORG, name="bench", disabled=False, created_us=now)
            )
        for chunk in _chunks(rows):
            await conn.execute(sa.insert(users), list(chunk))


async def add_sessions(db: Any, numbers: Sequence[int]) -> list[str]:
    """A fresh login session for each user of ``numbers``; their bearer tokens, in order."""
    import sqlalchemy as sa

    from server.accounts.sessions import new_token, token_hash
    from server.accounts.tables import sessions

    now = time.time_ns() // 1000
    tokens, rows = [], []
    for n in numbers:
        token = new_token()
        tokens.append(token)
        rows.append(
            {"id": f"s-{secrets.token_hex(10)}", "token_hash": token_hash(token),
             "user_id": user_id(n), "created_us": now, "last_seen_us": now,
             "expires_us": now + 12 * 3600 * 10**6, "auth_us": now, "restricted": None,
             "source": "bench", "revoked_us": None}
        )  # fmt: skip
    async with db.begin() as conn:
        for chunk in _chunks(rows):
            await conn.execute(sa.insert(sessions), list(chunk))
    return tokens


async def add_conversation(db: Any, settings: Any, creator: int) -> None:
    """Insert the group conversation :data:`CONV` (no members, no messages yet)."""
    import sqlalchemy as sa

    from server.chat.tables import chat_conversation
    from server.security.at_rest import settings_keyring
    from server.security.crypto import aad

    title = settings_keyring(settings).seal(b"bench", aad("chat_conversation", "title", CONV))
    async with db.begin() as conn:
        await conn.execute(
            sa.insert(chat_conversation).values(
                id=CONV, kind="group", org=ORG, title=title, consultation_id=None,
                patient_id=None, direct_key=None, last_seq=0, created_by=user_id(creator),
                created_us=time.time_ns() // 1000,
            )
        )  # fmt: skip


async def add_members(db: Any, numbers: Sequence[int], last_seq: int) -> None:
    """Make users ``numbers`` members of :data:`CONV`, having read up to ``last_seq``."""
    import sqlalchemy as sa

    from server.chat.tables import chat_member

    now = time.time_ns() // 1000
    rows = [
        {"conv_id": CONV, "user_id": user_id(n), "role": "practitioner",
         "delivered_seq": last_seq, "read_seq": last_seq, "joined_us": now}
        for n in numbers
    ]  # fmt: skip
    async with db.begin() as conn:
        for chunk in _chunks(rows):
            await conn.execute(sa.insert(chat_member), list(chunk))


async def add_history(db: Any, settings: Any, count: int, senders: int) -> int:
    """Append ``count`` messages to :data:`CONV` (sealed as the hub seals them), sent in
    turn by users ``0..senders-1``; returns the conversation's last seq."""
    import sqlalchemy as sa

    from server.chat.tables import chat_conversation, chat_message
    from server.security.at_rest import settings_keyring
    from server.security.crypto import aad

    seal = settings_keyring(settings).seal
    c = chat_conversation.c
    # One driver-level executemany (SQLAlchemy's per-row processing would take minutes).
    sql = (
        f"INSERT INTO {chat_message.name} (conv_id, seq, kind, sender, client_msg_id,"
        " created_us, body, record_ref, target_seq, version, edited_us, deleted_us)"
        " VALUES (?, ?, 'message', ?, ?, ?, ?, NULL, NULL, 1, NULL, NULL)"
    )
    async with db.begin() as conn:
        last = int((await conn.execute(sa.select(c.last_seq).where(c.id == CONV))).scalar_one())
        start_us = time.time_ns() // 1000 - count * 1000
        for first in range(last + 1, last + count + 1, _BATCH * 4):
            rows = []
            for seq in range(first, min(first + _BATCH * 4, last + count + 1)):
                text = HISTORY_TEXT.format(n=seq).encode()
                body = seal(text, aad("chat_message", "body", f"{CONV}:{seq}"))
                rows.append(
                    (CONV, seq, user_id(seq % senders), f"h{seq}", start_us + seq * 1000, body)
                )
            await conn.exec_driver_sql(sql, rows)
        await conn.execute(
            sa.update(chat_conversation).where(c.id == CONV).values(last_seq=last + count)
        )
    return last + count


# -- templates ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Template:
    """A seeded database file and the secrets that sealed it."""

    path: Path
    secrets: dict[str, str]
    users: int
    last_seq: int


def _template_key(messages: int) -> str:
    from server.store.migrate import head_revision

    raw = f"{SEED_VERSION}:{head_revision()}:{TEMPLATE_USERS}:{messages}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


async def template(messages: int) -> tuple[Template, float]:
    """The chat template with ``messages`` messages; (template, seconds spent building it).

    Reused from :data:`CACHE_DIR` when one with the same schema head, seed
    version and size exists (0 seconds); otherwise built there first.
    """
    from server.store.db import Database

    key = _template_key(messages)
    path = CACHE_DIR / f"chat-{key}.db"
    meta = CACHE_DIR / f"chat-{key}.json"
    if path.exists() and meta.exists():
        data = json.loads(meta.read_text())
        return Template(path, data["secrets"], TEMPLATE_USERS, data["last_seq"]), 0.0
    started = time.monotonic()
    building = _fresh_file(path.with_suffix(".building"))
    secrets_ = new_secrets()
    await migrate(building, secrets_)
    settings = settings_for(secrets_, building)
    async with Database(db_url(building), pool_size=1) as db:
        await add_users(db, settings, range(TEMPLATE_USERS))
        await add_conversation(db, settings, creator=0)
        last_seq = await add_history(db, settings, messages, senders=min(TEMPLATE_USERS, 20))
    # Closed: SQLite has checkpointed its WAL into the one file that is copied per run.
    for leftover in (Path(f"{building}-wal"), Path(f"{building}-shm")):
        if leftover.exists():
            raise RuntimeError(f"{leftover} left behind: the template would be incomplete")
    meta.write_text(json.dumps({"secrets": secrets_, "last_seq": last_seq}))
    meta.chmod(0o600)
    building.rename(path)
    return Template(path, secrets_, TEMPLATE_USERS, last_seq), time.monotonic() - started


def _fresh_file(path: Path) -> Path:
    """``path`` with its directory made (private) and no file there yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return path


@dataclass(frozen=True)
class Prepared:
    """A database ready for one hub run: the file, its secrets, members' tokens."""

    db_path: Path
    secrets: dict[str, str]
    tokens: list[str]  #: tokens[n] is a live session of user n
    last_seq: int


async def prepare(
    workdir: Path,
    *,
    users: int,
    members: int = 0,
    from_template: Template | None = None,
    history: int = 0,
) -> Prepared:
    """A fresh database under ``workdir`` with ``users`` users (one session each).

    With ``from_template`` the template is copied (it must hold at least
    ``users`` users) and users ``0..members-1`` become members of :data:`CONV`;
    otherwise the schema is created, and with ``members`` a conversation of
    those members with ``history`` messages is added.
    """
    from server.store.db import Database

    db_path = _fresh_file(workdir / f"seed-{secrets.token_hex(4)}.db")
    if from_template is not None:
        if users > from_template.users:
            raise ValueError(f"the template holds {from_template.users} users, not {users}")
        shutil.copyfile(from_template.path, db_path)
        secrets_ = from_template.secrets
        last_seq = from_template.last_seq
    else:
        secrets_ = new_secrets()
        last_seq = 0
        await migrate(db_path, secrets_)
    settings = settings_for(secrets_, db_path)
    async with Database(db_url(db_path), pool_size=1) as db:
        if from_template is None:
            await add_users(db, settings, range(users))
            if members:
                await add_conversation(db, settings, creator=0)
                if history:
                    last_seq = await add_history(db, settings, history, min(members, 20))
        if members:
            await add_members(db, range(members), last_seq)
        tokens = await add_sessions(db, range(users))
    return Prepared(db_path, secrets_, tokens, last_seq)


def remove(db_path: Path) -> None:
    """Delete a prepared database file (and its WAL files)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)


def write_tokens(path: Path, tokens: Sequence[str]) -> Path:
    """Write ``tokens`` (JSON list, mode 0600) for client processes (``--tokens``)."""
    path.write_text(json.dumps(list(tokens)))
    path.chmod(0o600)
    return path


def read_tokens(path: str | Path) -> list[str]:
    """The tokens written by :func:`write_tokens`."""
    tokens: list[str] = json.loads(Path(path).read_text())
    return tokens
