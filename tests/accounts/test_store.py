"""Storage on SQLite and a real PostgreSQL: single acceptance under concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from server.accounts.pii import UserCipher
from server.accounts.sessions import SessionStore
from server.accounts.store import AccountStore, DuplicateError
from server.security.at_rest import BlindIndex, at_rest_keyring
from server.store.db import Database
from server.store.migrate import upgrade_to_head_async

NOW = 1_800_000_000_000_000
KEY = "a2V5LWtleS1rZXkta2V5LWtleS1rZXkta2V5LWtleTA="  # 32 bytes, tests only
CIPHER = UserCipher(at_rest_keyring(KEY), BlindIndex(KEY))


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[AccountStore]:
    await upgrade_to_head_async(db_url)
    db = Database(db_url)
    await db.connect()
    yield AccountStore(db, CIPHER)
    await db.close()


async def _user(store: AccountStore, email: str = "x@a.example") -> str:
    org = await store.create_org("A", NOW)
    user = await store.create_user(
        org_id=org.id, role="patient", name="X", email=email, phone="", status="active", now_us=NOW
    )
    return user.id


async def test_a_totp_step_is_accepted_once_across_connections(store: AccountStore) -> None:
    uid = await _user(store)
    # two "nodes": separate Database handles on the same database
    other = Database(store.db.url)
    await other.connect()
    try:
        stores = [store, AccountStore(other, CIPHER)]
        results = await asyncio.gather(
            *(stores[i % 2].accept_totp_step(uid, 100) for i in range(8))
        )
        assert sum(results) == 1
        assert not await store.accept_totp_step(uid, 99)  # older step: refused
        assert await store.accept_totp_step(uid, 101)
    finally:
        await other.close()


async def test_recovery_code_and_invitation_spent_once(store: AccountStore) -> None:
    uid = await _user(store)
    await store.replace_recovery_codes(uid, [b"a" * 32, b"b" * 32])
    results = await asyncio.gather(
        *(store.use_recovery_code(uid, b"a" * 32, NOW) for _ in range(4))
    )
    assert sum(results) == 1
    assert await store.recovery_codes_left(uid) == 1
    await store.create_invitation(b"t" * 32, uid, NOW + 10)
    assert await store.take_invitation(b"t" * 32, NOW + 11) is None  # expired
    await store.create_invitation(b"u" * 32, uid, NOW + 10)
    taken = await asyncio.gather(*(store.take_invitation(b"u" * 32, NOW) for _ in range(4)))
    assert taken.count(uid) == 1


async def test_email_unique_case_insensitive(store: AccountStore) -> None:
    await _user(store, "dup@a.example")
    with pytest.raises(DuplicateError):
        await _user(store, "DUP@a.example")


async def test_sessions_store_hashes_and_revokes(store: AccountStore) -> None:
    uid = await _user(store)
    sessions = SessionStore(store.db, idle_us=10**9, absolute_us=10**10)
    token, row = await sessions.create(uid, NOW, source="10.0.0.1")
    assert (await sessions.by_token(token, NOW + 1)) is not None
    assert await sessions.by_token(token + "x", NOW) is None
    async with store.db.begin(readonly=True) as conn:
        from sqlalchemy import text

        raw = (await conn.execute(text("SELECT token_hash FROM sessions"))).scalar_one()
    assert token.encode() not in bytes(raw)
    assert await sessions.revoke(uid, NOW, only=row.id) == [row.id]
    assert await sessions.by_token(token, NOW + 2) is None
