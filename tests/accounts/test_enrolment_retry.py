"""Enrolment survives a mistyped first code, a closed page and an expired invitation.

Before issue 11, accepting an invitation spent it: one wrong first code (or
a challenge that expired meanwhile) left the account ``invited`` for ever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from server.accounts import totp
from tests.accounts.live import accept, bearer, code_now, error_code, wrong_code
from tests.accountstest import (
    PASSWORD,
    Env,
    LiveHub,
    accounts_settings,
    run_accounts_hub,
    secret_of,
)


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[LiveHub]:
    async with run_accounts_hub(accounts_settings(tmp_path)) as h:
        yield h


async def test_wrong_first_code_and_a_closed_page_leave_the_invitation_usable(
    hub: LiveHub,
) -> None:
    admin = hub.components.accounts.admin
    org = await admin.create_org(None, "Clinique des Lilas")
    inv = await admin.invite(
        None, org.id, role="patient", name="Ada Lovelace", email="ada@l.example"
    )
    async with httpx.AsyncClient(base_url=hub.api) as http:
        first = await accept(http, inv.token)
        uri = unquote(first["otpauth_uri"])
        # the authenticator app shows the organisation and the person, not an id
        assert uri.startswith("otpauth://totp/medhub (Clinique des Lilas):ada@l.example?")
        assert "issuer=medhub (Clinique des Lilas)" in uri
        assert inv.user.id not in uri
        secret = secret_of(first["otpauth_uri"])
        r = await http.post(
            "/mfa/enrol",
            json={"challenge": first["challenge"], "code": wrong_code(secret, time.time())},
        )
        assert (r.status_code, error_code(r)) == (401, "mfa_failed")
        # the person closed the page: the same invitation is accepted again, same secret
        again = await accept(http, inv.token)
        assert secret_of(again["otpauth_uri"]) == secret
        assert again["challenge"] != first["challenge"]
        r = await http.post(
            "/mfa/enrol",
            json={"challenge": again["challenge"], "code": wrong_code(secret, time.time())},
        )
        assert error_code(r) == "mfa_failed"
        r = await http.post(
            "/mfa/enrol", json={"challenge": again["challenge"], "code": code_now(secret)}
        )
        assert r.status_code == 200, r.text
        session = r.json()
        assert len(session["recovery_codes"]) == 10
        r = await http.get(f"/users/{inv.user.id}", headers=bearer(session["token"]))
        assert r.json()["status"] == "active"
        # confirmed: the invitation is spent, the older challenge useless
        r = await http.post("/invitations/accept", json={"token": inv.token, "password": PASSWORD})
        assert (r.status_code, error_code(r)) == (400, "invitation_invalid")
        r = await http.post(
            "/mfa/enrol", json={"challenge": first["challenge"], "code": code_now(secret, 1)}
        )
        assert r.status_code == 401


async def test_two_confirmations_of_one_invitation_one_wins(hub: LiveHub) -> None:
    admin = hub.components.accounts.admin
    org = await admin.create_org(None, "Clinique A")
    inv = await admin.invite(None, org.id, role="practitioner", name="Bo Ek", email="bo@a.example")
    async with httpx.AsyncClient(base_url=hub.api) as http:
        one, two = await accept(http, inv.token), await accept(http, inv.token)
        code = code_now(secret_of(one["otpauth_uri"]))
        answers = await asyncio.gather(
            *(
                http.post("/mfa/enrol", json={"challenge": b["challenge"], "code": code})
                for b in (one, two)
            )
        )
    assert sorted(r.status_code for r in answers)[0] == 200
    assert [r.status_code for r in answers].count(200) == 1


async def test_wrong_codes_are_bounded_by_the_lockout(env: Env, org_id: str) -> None:
    admin = env.accounts.admin
    inv = await admin.invite(None, org_id, role="patient", name="Cy Ode", email="cy@a.example")
    async with env.client() as http:
        body = await accept(http, inv.token)
        secret = secret_of(body["otpauth_uri"])
        wrong = wrong_code(secret, env.clock())
        for _ in range(env.settings.lockout_threshold):
            r = await http.post("/mfa/enrol", json={"challenge": body["challenge"], "code": wrong})
            assert error_code(r) == "mfa_failed"
        # locked now: even the right code is refused, the same way
        right = totp.code_at(secret, totp.step_at(env.clock()))
        r = await http.post("/mfa/enrol", json={"challenge": body["challenge"], "code": right})
        assert (r.status_code, error_code(r)) == (401, "mfa_failed")
        env.clock.advance(61)  # the first lock lasts 60 s
        again = await accept(http, inv.token)
        right = totp.code_at(secret, totp.step_at(env.clock()))
        r = await http.post("/mfa/enrol", json={"challenge": again["challenge"], "code": right})
        assert r.status_code == 200, r.text
    events = env.audit.events
    assert [e.reason for e in events if e.action.value == "mfa_failed"].count("bad_enrol_code") == 5
    assert any(e.action.value == "lockout" for e in events)
    assert not any(e.action.value == "mfa_failed" and e.actor is None for e in events)


async def test_an_expired_invitation_is_replaced_by_a_reinvitation(env: Env, org_id: str) -> None:
    admin = env.accounts.admin
    inv = await admin.invite(None, org_id, role="patient", name="Di Eg", email="di@a.example")
    async with env.client() as http:
        body = await accept(http, inv.token)
        secret = secret_of(body["otpauth_uri"])
        env.clock.advance(env.settings.invitation_ttl_s + 1)
        code = totp.code_at(secret, totp.step_at(env.clock()))
        r = await http.post("/mfa/enrol", json={"challenge": body["challenge"], "code": code})
        assert (r.status_code, error_code(r)) == (400, "invitation_invalid")
        r = await http.post("/invitations/accept", json={"token": inv.token, "password": PASSWORD})
        assert error_code(r) == "invitation_invalid"
        fresh = await env.accounts.recovery.reinvite(None, inv.user.id)
        again = await accept(http, fresh.token)
        new_secret = secret_of(again["otpauth_uri"])
        assert new_secret != secret  # the onboarding restarted
        code = totp.code_at(new_secret, totp.step_at(env.clock()))
        r = await http.post("/mfa/enrol", json={"challenge": again["challenge"], "code": code})
        assert r.status_code == 200, r.text
    user = await env.accounts.service.store.get_user(inv.user.id)
    assert user is not None
    assert user.status == "active"
