"""The owner of a locked account is told at their next successful login; nobody else is."""

from __future__ import annotations

import httpx

from server.accounts import totp
from tests.accountstest import PASSWORD, Env, enrol, login


async def _fail(http: httpx.AsyncClient, email: str, n: int) -> list[httpx.Response]:
    return [
        await http.post("/login", json={"email": email, "password": f"Wrong-{i}-password"})
        for i in range(n)
    ]


async def test_a_lock_is_noticed_at_the_next_login_and_audited(env: Env, org_id: str) -> None:
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "patient", "pat@a.example", env.clock())
        locked_at = env.clock()
        answers = await _fail(http, u.email, env.settings.lockout_threshold + 1)
        # to whoever tries, the lock looks like a wrong password
        assert len({(r.status_code, r.text) for r in answers}) == 1
        env.clock.advance(61)
        r = await login(http, u.email, u.secret, env.clock())
        assert r.status_code == 200, r.text
        assert r.json()["notices"] == [
            {"code": "account_locked_recently", "at": int(locked_at), "failures": 5}
        ]
        env.clock.advance(30)
        r = await login(http, u.email, u.secret, env.clock())
        assert r.json()["notices"] == []  # told once
    logins = [e for e in env.audit.events if e.action.value == "login" and e.actor == u.user_id]
    assert [e.reason for e in logins] == [None, "lockout_notice", None]


async def test_a_typo_or_two_is_not_worth_a_notice(env: Env, org_id: str) -> None:
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "patient", "pat@a.example", env.clock())
        await _fail(http, u.email, 2)
        env.clock.advance(30)
        r = await login(http, u.email, u.secret, env.clock())
        assert r.json()["notices"] == []


async def test_failures_spread_over_addresses_are_noticed_too(env: Env, org_id: str) -> None:
    """Many failures (a lock of one address each time) from elsewhere, then the owner."""
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "practitioner", "doc@a.example", env.clock())
    transport = httpx.ASGITransport(app=env.accounts.app(), client=("192.0.2.9", 4444))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
        await _fail(other, u.email, 3)
        last = env.clock()
        await _fail(other, u.email, 2)  # the fifth failure locks that address's pair
    env.clock.advance(30)
    async with env.client() as http:
        r = await http.post("/login", json={"email": u.email, "password": PASSWORD})
        code = totp.code_at(u.secret, totp.step_at(env.clock()))
        r = await http.post("/login/mfa", json={"challenge": r.json()["challenge"], "code": code})
    assert r.status_code == 200, r.text
    assert r.json()["notices"] == [
        {"code": "account_locked_recently", "at": int(last), "failures": 5}
    ]
