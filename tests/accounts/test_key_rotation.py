"""TOTP and at-rest key rotation: a user enrolled under the old keys still logs in."""

from __future__ import annotations

import base64
from pathlib import Path

from server.security.crypto import Keyring
from tests.accountstest import accounts_env, enrol, login

NEW_TOTP = base64.b64encode(bytes(range(150, 182))).decode()
NEW_AT_REST = base64.b64encode(bytes(range(200, 232))).decode()
ENVELOPES = Keyring({"any": bytes(32)}, "any")  # reads the key id an envelope names


async def test_user_enrolled_under_old_keys_logs_in_after_rotation(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'acc.db'}"
    async with accounts_env(tmp_path, url) as env, env.client() as http:
        org_id = (await env.accounts.admin.create_org(None, "Clinique A")).id
        user = await enrol(http, env.accounts, org_id, "practitioner", "ada@a.example", env.clock())
        old_totp, old_at_rest = env.settings.secret_totp_key, env.settings.secret_at_rest_key
        now = env.clock() + 60
    rotated = {
        "totp_key_id": "t2",
        "secret_totp_key": NEW_TOTP,
        "secret_totp_retired_keys": [f"t1:{old_totp}"],
        "at_rest_key_id": "r2",
        "secret_at_rest_key": NEW_AT_REST,
        "secret_at_rest_retired_keys": [f"r1:{old_at_rest}"],
    }
    async with accounts_env(tmp_path, url, **rotated) as env, env.client() as http:
        env.clock.now = now
        r = await login(http, "ada@a.example", user.secret, now)  # email index still from r1
        assert r.status_code == 200, r.text
        assert r.json()["user_id"] == user.user_id
        stored = await env.accounts.service.store.get_user(user.user_id)
        assert stored is not None
        assert stored.totp_secret is not None
        assert (stored.name, stored.email) == ("Ada Lovelace", "ada@a.example")
        assert ENVELOPES.key_id_of(stored.totp_secret) == "t1"  # nothing re-encrypted
        # a new user is sealed under the current keys, and found by the same index
        other = await enrol(http, env.accounts, org_id, "patient", "bo@a.example", now)
        fresh = await env.accounts.service.store.get_user(other.user_id)
        assert fresh is not None
        assert fresh.totp_secret is not None
        assert ENVELOPES.key_id_of(fresh.totp_secret) == "t2"
        assert await env.accounts.service.store.user_by_email("BO@a.example") is not None

    # Without the retired TOTP key the old secret does not open: no login.
    no_totp = {**rotated, "secret_totp_retired_keys": []}
    async with accounts_env(tmp_path, url, **no_totp) as env, env.client() as http:
        env.clock.now = now + 60
        r = await login(http, "ada@a.example", user.secret, env.clock())
        assert r.status_code != 200
