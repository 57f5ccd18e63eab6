"""Administrators' recovery actions over real HTTP: re-invite, reset MFA, enable,
force a password change, and the user list with names and states."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.accounts.live import (
    accept,
    bearer,
    code_now,
    enrol_with,
    error_code,
    password_step,
    person,
    wrong_code,
)
from tests.accountstest import (
    PASSWORD,
    Env,
    LiveHub,
    accounts_settings,
    enrol,
    login,
    run_accounts_hub,
    secret_of,
)

UNKNOWN = "u-00000000000000000000"


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[LiveHub]:
    # two failures lock the pair and the account: the user list shows it
    settings = accounts_settings(tmp_path, lockout_threshold=2, lockout_account_threshold=2)
    async with run_accounts_hub(settings) as h:
        yield h


async def test_reinvite_restarts_an_unfinished_or_disabled_account(hub: LiveHub) -> None:
    accounts = hub.components.accounts
    a = await accounts.admin.create_org(None, "Clinique A")
    b = await accounts.admin.create_org(None, "Clinique B")
    async with httpx.AsyncClient(base_url=hub.api) as http:
        admin = await person(http, accounts, a.id, "admin", "adm@a.example", "Ann Admin")
        admin_b = await person(http, accounts, b.id, "admin", "adm@b.example", "Bea Admin")
        doc = await person(http, accounts, a.id, "practitioner", "doc@a.example", "Dan Doc")
        h = bearer(admin.token)
        r = await http.post(
            f"/orgs/{a.id}/users",
            headers=h,
            json={"role": "patient", "name": "Pia Patient", "email": "pia@a.example"},
        )
        first = r.json()["invitation_token"]
        pia = r.json()["user_id"]
        # never accepted, or lost: a fresh invitation; the old one stops working
        r = await http.post(f"/users/{pia}/reinvite", headers=h)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"invitation", "expires_at"}
        assert abs(body["expires_at"] - (time.time() + 7 * 86400)) < 60
        r = await http.post("/invitations/accept", json={"token": first, "password": PASSWORD})
        assert error_code(r) == "invitation_invalid"
        _, session = await enrol_with(http, body["invitation"])
        # an enrolled, active account: reset its MFA instead
        r = await http.post(f"/users/{pia}/reinvite", headers=h)
        assert (r.status_code, error_code(r)) == (409, "conflict")
        # disabled, then re-invited: the onboarding starts again
        r = await http.post(f"/users/{pia}/disable", headers=h)
        assert r.status_code == 200
        token = await _reinvite(http, h, pia)
        r = await http.post("/login", json={"email": "pia@a.example", "password": PASSWORD})
        assert error_code(r) == "auth_failed"  # the old password is gone
        r = await http.get(f"/users/{pia}", headers=h)
        assert r.json()["status"] == "invited"
        assert (await http.get("/session", headers=bearer(session["token"]))).status_code == 401
        secret, _ = await enrol_with(http, token)
        r = await login(http, "pia@a.example", secret, time.time(), step_offset=1)
        assert r.status_code == 200, r.text
        # who may: not a practitioner (403); another organisation's admin: as unknown (404)
        r = await http.post(f"/users/{pia}/reinvite", headers=bearer(doc.token))
        assert (r.status_code, error_code(r)) == (403, "forbidden")
        other = await http.post(f"/users/{pia}/reinvite", headers=bearer(admin_b.token))
        unknown = await http.post(f"/users/{UNKNOWN}/reinvite", headers=bearer(admin_b.token))
        assert other.status_code == unknown.status_code == 404
        assert other.json() == unknown.json()


async def _reinvite(http: httpx.AsyncClient, headers: dict[str, str], user_id: str) -> str:
    r = await http.post(f"/users/{user_id}/reinvite", headers=headers)
    assert r.status_code == 200, r.text
    return str(r.json()["invitation"])


async def test_reset_mfa_makes_the_next_login_enrol(hub: LiveHub) -> None:
    accounts = hub.components.accounts
    org = await accounts.admin.create_org(None, "Clinique A")
    async with httpx.AsyncClient(base_url=hub.api) as http:
        admin = await person(http, accounts, org.id, "admin", "adm@a.example", "Ann Admin")
        doc = await person(http, accounts, org.id, "practitioner", "doc@a.example", "Dan Doc")
        r = await http.post(f"/users/{doc.user_id}/reset-mfa", headers=bearer(admin.token))
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "active"
        r = await http.get("/session", headers=bearer(doc.token))
        assert r.status_code == 401  # sessions revoked
        # the next password login answers enrolment, with a new secret and QR code
        step = await password_step(http, doc.email)
        assert step["next"] == "enrol"
        assert step["qr_svg"].startswith("<svg")
        secret = secret_of(step["otpauth_uri"])
        assert secret != doc.secret
        r = await http.post("/login/mfa", json={"challenge": step["challenge"], "code": "123456"})
        assert error_code(r) == "challenge_invalid"  # an enrolment challenge, not a login one
        bad = wrong_code(secret, time.time())
        r = await http.post("/mfa/enrol", json={"challenge": step["challenge"], "code": bad})
        assert error_code(r) == "mfa_failed"
        r = await http.post(
            "/mfa/enrol", json={"challenge": step["challenge"], "code": code_now(secret)}
        )
        assert r.status_code == 200, r.text
        assert len(r.json()["recovery_codes"]) == 10
        # the old recovery codes died with the old secret
        step = await password_step(http, doc.email)
        assert step["next"] == "mfa"
        r = await http.post(
            "/login/mfa",
            json={"challenge": step["challenge"], "recovery_code": doc.recovery_codes[0]},
        )
        assert error_code(r) == "mfa_failed"
        # an account that never enrolled: re-invite it instead
        inv = await accounts.admin.invite(
            None, org.id, role="patient", name="Pia Patient", email="pia@a.example"
        )
        r = await http.post(f"/users/{inv.user.id}/reset-mfa", headers=bearer(admin.token))
        assert (r.status_code, error_code(r)) == (409, "conflict")


async def test_enable_and_force_password_reset(hub: LiveHub) -> None:
    accounts = hub.components.accounts
    org = await accounts.admin.create_org(None, "Clinique A")
    async with httpx.AsyncClient(base_url=hub.api) as http:
        admin = await person(http, accounts, org.id, "admin", "adm@a.example", "Ann Admin")
        pat = await person(http, accounts, org.id, "patient", "pat@a.example", "Pat Ient")
        h = bearer(admin.token)
        r = await http.post(f"/users/{pat.user_id}/enable", headers=h)
        assert (r.status_code, error_code(r)) == (409, "conflict")  # not disabled
        await http.post(f"/users/{pat.user_id}/disable", headers=h)
        r = await http.post("/login", json={"email": pat.email, "password": PASSWORD})
        assert error_code(r) == "auth_failed"
        r = await http.post(f"/users/{pat.user_id}/enable", headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "active"
        r = await login(http, pat.email, pat.secret, time.time(), step_offset=1)
        assert r.status_code == 200, r.text
        live = r.json()["token"]
        # forced password change, even for a patient (whose password never expires)
        r = await http.post(f"/users/{pat.user_id}/force-password-reset", headers=h)
        assert r.status_code == 200, r.text
        assert (await http.get("/session", headers=bearer(live))).status_code == 401
        step = await password_step(http, pat.email)
        r = await http.post(
            "/login/mfa",
            json={"challenge": step["challenge"], "recovery_code": pat.recovery_codes[0]},
        )
        assert r.status_code == 200, r.text
        assert r.json()["restricted"] == "password_expired"
        token = r.json()["token"]
        r = await http.get("/orgs", headers=bearer(token))
        assert error_code(r) == "password_expired"
        new = "Another-Horse-Battery-42"
        r = await http.post("/me/password", headers=bearer(token), json={"new_password": new})
        assert r.status_code == 200, r.text
        step = await password_step(http, pat.email, new)
        r = await http.post(
            "/login/mfa",
            json={"challenge": step["challenge"], "recovery_code": pat.recovery_codes[1]},
        )
        assert r.json()["restricted"] is None


async def test_user_list_shows_names_states_and_locks(hub: LiveHub) -> None:
    accounts = hub.components.accounts
    a = await accounts.admin.create_org(None, "Clinique A")
    b = await accounts.admin.create_org(None, "Clinique B")
    async with httpx.AsyncClient(base_url=hub.api) as http:
        admin = await person(http, accounts, a.id, "admin", "adm@a.example", "Ann Admin")
        pat = await person(http, accounts, a.id, "patient", "pat@a.example", "Pat Ient")
        admin_b = await person(http, accounts, b.id, "admin", "adm@b.example", "Bea Admin")
        await accounts.admin.invite(
            None, a.id, role="secretary", name="Sam Sec", email="sam@a.example"
        )
        gone = await person(http, accounts, a.id, "technician", "tec@a.example", "Tom Tech")
        await http.post(f"/users/{gone.user_id}/disable", headers=bearer(admin.token))
        for _ in range(2):  # the account locks (lockout_account_threshold=2)
            await http.post("/login", json={"email": pat.email, "password": "Wrong-pass-123"})
        r = await http.get("/users", params={"org": a.id}, headers=bearer(admin.token))
        assert r.status_code == 200, r.text
        users = {u["name"]: u for u in r.json()["users"]}
        assert {n: (u["role"], u["status"], u["locked"]) for n, u in users.items()} == {
            "Ann Admin": ("admin", "active", False),
            "Pat Ient": ("patient", "active", True),
            "Sam Sec": ("secretary", "invited", False),
            "Tom Tech": ("technician", "disabled", False),
        }
        assert all(abs(u["created_at"] - time.time()) < 120 for u in users.values())
        assert set(users["Pat Ient"]) >= {"id", "name", "role", "status", "locked", "created_at"}
        # without ?org: the caller's organisation
        r = await http.get("/users", headers=bearer(admin.token))
        assert {u["name"] for u in r.json()["users"]} == set(users)
        # an unlock shows at once
        await http.post(f"/users/{pat.user_id}/unlock", headers=bearer(admin.token))
        r = await http.get(f"/orgs/{a.id}/users", headers=bearer(admin.token))
        assert not any(u["locked"] for u in r.json()["users"])
        # who may list: the organisation's admins only; another organisation: as unknown
        r = await http.get("/users", headers=bearer(pat.token))
        assert (r.status_code, error_code(r)) == (403, "forbidden")
        other = await http.get("/users", params={"org": a.id}, headers=bearer(admin_b.token))
        unknown = await http.get("/users", params={"org": "o-0000"}, headers=bearer(admin_b.token))
        assert other.status_code == unknown.status_code == 404
        assert other.json() == unknown.json()


async def test_reinvite_and_reset_mfa_need_a_recent_reauthentication(env: Env, org_id: str) -> None:
    async with env.client() as http:
        admin = await enrol(http, env.accounts, org_id, "admin", "adm@a.example", env.clock())
        doc = await enrol(http, env.accounts, org_id, "practitioner", "doc@a.example", env.clock())
        env.clock.advance(env.settings.reauth_window_s + 1)
        h = bearer(admin.token)
        for action in ("reinvite", "reset-mfa"):
            r = await http.post(f"/users/{doc.user_id}/{action}", headers=h)
            assert (r.status_code, error_code(r)) == (403, "reauth_required"), action
        r = await http.post(f"/users/{doc.user_id}/force-password-reset", headers=h)
        assert r.status_code == 200
    reasons = [e.reason for e in env.audit.events if e.action.value == "admin"]
    assert "password_reset_forced" in reasons
    assert "mfa_reset" not in reasons


async def test_each_recovery_action_is_audited(env: Env, org_id: str) -> None:
    async with env.client() as http:
        admin = await enrol(http, env.accounts, org_id, "admin", "adm@a.example", env.clock())
        pat = await enrol(http, env.accounts, org_id, "patient", "pat@a.example", env.clock())
        h = bearer(admin.token)
        for action in ("reset-mfa", "force-password-reset", "disable", "enable", "unlock"):
            r = await http.post(f"/users/{pat.user_id}/{action}", headers=h)
            assert r.status_code == 200, (action, r.text)
        r = await http.post(f"/users/{pat.user_id}/disable", headers=h)
        r = await http.post(f"/users/{pat.user_id}/reinvite", headers=h)
        assert r.status_code == 200
        await accept(http, r.json()["invitation"])
    mine = [e for e in env.audit.events if e.target_id == pat.user_id and e.actor == admin.user_id]
    assert [(e.action.value, e.reason) for e in mine] == [
        ("admin", "mfa_reset"),
        ("admin", "password_reset_forced"),
        ("account_disable", None),
        ("admin", "account_enable"),
        ("unlock", "admin_unlock"),
        ("account_disable", None),
        ("admin", "reinvite"),
    ]
    revoked = [e.reason for e in env.audit.events if e.action.value == "session_revoke"]
    assert revoked[:1] == ["mfa_reset"]
