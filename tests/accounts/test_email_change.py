"""Changing one's email: re-authentication first, duplicates refused, old email dead."""

from __future__ import annotations

from server.accounts import totp
from server.audit.events import Action
from tests.accountstest import PASSWORD, Env, enrol, login

NEW_EMAIL = "Ada.New@Example.org"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_email_change_needs_reauth_and_moves_the_login(env: Env, org_id: str) -> None:
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "practitioner", "ada@a.example", env.clock())
        await enrol(http, env.accounts, org_id, "patient", "taken@a.example", env.clock())
        env.clock.advance(30)
        other = (await login(http, u.email, u.secret, env.clock())).json()["token"]
        env.clock.advance(301)
        h = bearer(u.token)
        r = await http.post("/me/email", json={"email": NEW_EMAIL}, headers=h)
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "reauth_required"
        code = totp.code_at(u.secret, totp.step_at(env.clock()))
        r = await http.post("/reauth", json={"password": PASSWORD, "code": code}, headers=h)
        assert r.status_code == 200, r.text
        r = await http.post("/me/email", json={"email": "TAKEN@a.example"}, headers=h)
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "conflict"
        r = await http.post("/me/email", json={"email": NEW_EMAIL}, headers=h)
        assert r.status_code == 200, r.text
        # other sessions end, this one stays
        assert (await http.get("/session", headers=bearer(other))).status_code == 401
        assert (await http.get("/session", headers=h)).status_code == 200
        env.clock.advance(30)
        r = await http.post("/login", json={"email": u.email, "password": PASSWORD})
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "auth_failed"
        r = await login(http, NEW_EMAIL.upper(), u.secret, env.clock())
        assert r.status_code == 200, r.text
    user = await env.accounts.service.store.get_user(u.user_id)
    assert user is not None
    assert user.email == NEW_EMAIL.lower()
    last = (await env.accounts.service.store.versions(u.user_id))[-1]
    assert (last.action, last.changed_by, last.fields) == (
        "update",
        u.user_id,
        {"email": NEW_EMAIL.lower()},
    )
    changes = [e for e in env.audit.events if e.reason == "email_change"]
    assert next((e.action, e.actor, e.target_id) for e in changes) == (
        Action.UPDATE,
        u.user_id,
        u.user_id,
    )
    assert any(e.action is Action.SESSION_REVOKE for e in changes)


async def test_new_email_becomes_a_password_context_word(env: Env, org_id: str) -> None:
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "practitioner", "ada@a.example", env.clock())
        h = bearer(u.token)  # the enrolment session is freshly authenticated
        r = await http.post("/me/email", json={"email": "zanzibar@a.example"}, headers=h)
        assert r.status_code == 200, r.text
        r = await http.post("/me/password", json={"new_password": "Zanzibar-Quartz-77!"}, headers=h)
        assert r.json()["error"]["code"] == "password_contains_context"
