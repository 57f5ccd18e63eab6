"""Users' identity data at rest: encrypted columns, blind index, version rows, migration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from server.accounts.tables import users
from server.security.crypto import CryptoError
from server.store.db import Database
from server.store.migrate import alembic_config, upgrade_to_head_async
from tests.accountstest import PASSWORD, Env, enrol, login

NAME, EMAIL, PHONE = "Ada Lovelace", "Ada.Lovelace@Example.org", "+33 6 12 34 56 78"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def _raw(db: Database, table: str) -> bytes:
    """Every value of every row of ``table``, as bytes (what a stolen file shows)."""
    async with db.begin(readonly=True) as conn:
        rows = (await conn.execute(sa.text(f"SELECT * FROM {table}"))).all()
    return b"|".join(v if isinstance(v, bytes) else str(v).encode() for row in rows for v in row)


async def test_raw_rows_hold_no_clear_identity(env: Env, org_id: str) -> None:
    admin = env.accounts.admin
    inv = await admin.invite(None, org_id, role="patient", name=NAME, email=EMAIL, phone=PHONE)
    for table in ("users", "user_versions"):
        raw = await _raw(env.db, table)
        assert inv.user.id.encode() in raw  # the rows are there
        for clear in (NAME, "Lovelace", EMAIL, EMAIL.lower(), "example.org", PHONE, "12 34"):
            assert clear.encode() not in raw, (table, clear)
            assert clear.lower().encode() not in raw.lower(), (table, clear)
    user = await env.accounts.service.store.get_user(inv.user.id)
    assert user is not None
    assert (user.name, user.email, user.phone) == (NAME, EMAIL.lower(), PHONE)


async def test_login_by_email_is_case_insensitive_and_emails_unique(env: Env, org_id: str) -> None:
    async with env.client() as http:
        now = env.clock()
        u = await enrol(http, env.accounts, org_id, "practitioner", EMAIL, now, name=NAME)
        env.clock.advance(30)
        r = await login(http, "ADA.LOVELACE@example.ORG", u.secret, env.clock())
        assert r.status_code == 200, r.text
        admin = await enrol(http, env.accounts, org_id, "admin", "adm@a.example", now)
        fullwidth = "\uff41\uff44\uff41.lovelace@example.org"  # NFKC: ada.lovelace@...
        for taken in ("ada.lovelace@EXAMPLE.org", fullwidth):
            body = {"role": "patient", "name": "Other", "email": taken}
            r = await http.post(f"/orgs/{org_id}/users", json=body, headers=bearer(admin.token))
            assert r.status_code == 409, taken
            assert r.json()["error"]["code"] == "conflict"


async def test_every_change_writes_a_version_row(env: Env, org_id: str) -> None:
    store = env.accounts.service.store
    async with env.client() as http:
        now = env.clock()
        admin = await enrol(http, env.accounts, org_id, "admin", "adm@a.example", now)
        body = {"role": "patient", "name": NAME, "email": EMAIL, "phone": PHONE}
        r = await http.post(f"/orgs/{org_id}/users", json=body, headers=bearer(admin.token))
        uid = r.json()["user_id"]
        env.clock.advance(5)
        r = await http.post(f"/users/{uid}/disable", headers=bearer(admin.token))
        assert r.status_code == 200
    versions = await store.versions(uid)
    assert [(v.version, v.action, v.changed_by) for v in versions] == [
        (1, "create", admin.user_id),
        (2, "update", admin.user_id),
    ]
    first, second = versions
    assert first.fields["email"] == EMAIL.lower()
    assert (first.fields["name"], first.fields["phone"], first.fields["status"]) == (
        NAME,
        PHONE,
        "invited",
    )
    assert second.fields == {"status": "disabled"}
    assert second.changed_us == int(env.clock() * 1_000_000)
    assert first.changed_us == second.changed_us - 5_000_000
    # the user's own changes name the user; secrets are marked, never copied
    mine = await store.versions(admin.user_id)
    # create (the CLI), accept (password, pending secret), confirm (secret, active)
    assert [v.changed_by for v in mine] == [None, admin.user_id, admin.user_id]
    enrolled = mine[1].fields
    assert enrolled["password_hash"] is True
    assert enrolled["totp_pending"] is True
    user = await store.get_user(uid)
    assert user is not None
    assert user.version == 2


async def test_tampered_or_moved_ciphertext_is_detected(env: Env, org_id: str) -> None:
    admin, store = env.accounts.admin, env.accounts.service.store
    a = await admin.invite(None, org_id, role="patient", name="A", email="a@a.example")
    b = await admin.invite(None, org_id, role="patient", name="B", email="b@a.example")

    async def set_col(uid: str, **values: Any) -> None:
        async with env.db.begin() as conn:
            await conn.execute(sa.update(users).where(users.c.id == uid).values(**values))

    async with env.db.begin(readonly=True) as conn:
        query = sa.select(users.c.id, users.c.email_enc, users.c.name_enc)
        enc = {r.id: r for r in await conn.execute(query)}
    flipped = bytearray(enc[a.user.id].email_enc)
    flipped[-1] ^= 1
    await set_col(a.user.id, email_enc=bytes(flipped))
    with pytest.raises(CryptoError):
        await store.get_user(a.user.id)
    await set_col(b.user.id, name_enc=enc[a.user.id].name_enc)  # copied from another row
    with pytest.raises(CryptoError):
        await store.get_user(b.user.id)


async def _clear_user_at_0003(url: str) -> None:
    cfg = alembic_config()
    async with Database(url, pool_size=1) as db, db.engine.connect() as conn:

        def to_0003(sync: Any) -> None:
            cfg.attributes["connection"] = sync
            command.upgrade(cfg, "0003")

        await conn.run_sync(to_0003)
        for sql in (
            "INSERT INTO orgs VALUES ('o-1', 'Clinique', false, 1)",
            "INSERT INTO users (id, org_id, role, name, email, phone, status, totp_last_step,"
            f" created_us, version) VALUES ('u-1', 'o-1', 'patient', '{NAME}',"
            f" '{EMAIL.lower()}', '{PHONE}', 'active', -1, 1, 3)",
        ):
            await conn.execute(sa.text(sql))
        await conn.commit()


async def test_migration_encrypts_existing_rows(tmp_path: Path, env: Env) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    await _clear_user_at_0003(url)
    with pytest.raises(RuntimeError, match="secret_at_rest_key"):
        await upgrade_to_head_async(url)  # rows to encrypt and no key: nothing done
    await upgrade_to_head_async(url, at_rest_key=env.settings.secret_at_rest_key)
    async with Database(url) as db:
        raw = await _raw(db, "users")
        assert NAME.encode() not in raw
        assert b"example.org" not in raw
        store = type(env.accounts.service.store)(db, env.accounts.service.store.cipher)
        user = await store.user_by_email(EMAIL.upper())
        assert user is not None
        assert (user.name, user.phone) == (NAME, PHONE)
        [baseline] = await store.versions("u-1")
        assert (baseline.version, baseline.action, baseline.changed_by) == (3, "baseline", None)
        assert baseline.fields["email"] == EMAIL.lower()


async def test_password_policy_still_knows_the_name_and_email(env: Env, org_id: str) -> None:
    async with env.client() as http:
        inv = await env.accounts.admin.invite(None, org_id, role="patient", name=NAME, email=EMAIL)
        weak = "Lovelace-2024-Xy!"
        r = await http.post("/invitations/accept", json={"token": inv.token, "password": weak})
        assert r.json()["error"]["code"] == "password_contains_context"
        r = await http.post("/invitations/accept", json={"token": inv.token, "password": PASSWORD})
        assert r.status_code == 200
