"""Administration over HTTP: organisation isolation, roles, delegation, care, disable."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.accountstest import Enrolled, Env, accounts_settings, enrol, run_accounts_hub


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def _two_orgs(env: Env, http: httpx.AsyncClient) -> tuple[Enrolled, Enrolled, Enrolled]:
    a = await env.accounts.admin.create_org(None, "Clinique A")
    b = await env.accounts.admin.create_org(None, "Hopital B")
    now = env.clock()
    admin_a = await enrol(http, env.accounts, a.id, "admin", "admin@a.example", now)
    admin_b = await enrol(http, env.accounts, b.id, "admin", "admin@b.example", now)
    pract_b = await enrol(http, env.accounts, b.id, "practitioner", "doc@b.example", now)
    return admin_a, admin_b, pract_b


async def test_admin_of_a_cannot_see_or_touch_b(env: Env) -> None:
    async with env.client() as http:
        admin_a, admin_b, pract_b = await _two_orgs(env, http)
        h = bearer(admin_a.token)
        r = await http.get("/orgs", headers=h)
        assert [o["id"] for o in r.json()["orgs"]] == [admin_a.org_id]
        r = await http.get(f"/orgs/{admin_b.org_id}/users", headers=h)
        assert r.status_code == 404
        r = await http.get(f"/users/{pract_b.user_id}", headers=h)
        assert r.status_code == 404
        for path in ("disable", "unlock"):
            r = await http.post(f"/users/{pract_b.user_id}/{path}", headers=h)
            assert r.status_code == 404, path
        r = await http.post(f"/users/{pract_b.user_id}/role", json={"role": "admin"}, headers=h)
        assert r.status_code == 404
        r = await http.post(
            f"/orgs/{admin_b.org_id}/users",
            headers=h,
            json={"role": "admin", "name": "Eve", "email": "eve@x.example"},
        )
        assert r.status_code == 404
        # B's admin still sees its practitioner, active
        r = await http.get(f"/users/{pract_b.user_id}", headers=bearer(admin_b.token))
        assert r.status_code == 200
        assert r.json()["status"] == "active"
        # own organisation works
        r = await http.get(f"/orgs/{admin_a.org_id}/users", headers=h)
        assert [u["id"] for u in r.json()["users"]] == [admin_a.user_id]
    denied = [e for e in env.audit.events if e.action.value == "denied"]
    assert denied
    assert all(e.reason == "other_org" for e in denied)


async def test_admin_invites_but_not_superadmins(env: Env, org_id: str) -> None:
    async with env.client() as http:
        admin = await enrol(http, env.accounts, org_id, "admin", "adm@a.example", env.clock())
        h = bearer(admin.token)
        r = await http.post(
            f"/orgs/{org_id}/users",
            headers=h,
            json={"role": "superadmin", "name": "Mallory", "email": "m@a.example"},
        )
        assert r.status_code == 403
        r = await http.post(
            f"/orgs/{org_id}/users",
            headers=h,
            json={"role": "secretary", "name": "Sam", "email": "sam@a.example", "guest_days": 7},
        )
        assert r.status_code == 201
        assert len(r.json()["invitation_token"]) >= 43
        r = await http.post(
            f"/orgs/{org_id}/users",
            headers=h,
            json={"role": "secretary", "name": "Sam", "email": "SAM@a.example"},
        )
        assert r.status_code == 409
        r = await http.post("/orgs", headers=h, json={"name": "Rogue"})
        assert r.status_code in (403, 404)


async def test_superadmin_crosses_orgs_audited(env: Env, org_id: str) -> None:
    async with env.client() as http:
        inv = await env.accounts.admin.create_superadmin("Root", "root@platform.example")
        from server.accounts import totp
        from tests.accountstest import PASSWORD, secret_of

        r = await http.post("/invitations/accept", json={"token": inv.token, "password": PASSWORD})
        secret = secret_of(r.json()["otpauth_uri"])
        code = totp.code_at(secret, totp.step_at(env.clock()))
        r = await http.post("/mfa/enrol", json={"challenge": r.json()["challenge"], "code": code})
        root = r.json()["token"]
        r = await http.get(f"/orgs/{org_id}/users", headers=bearer(root))
        assert r.status_code == 200
        r = await http.post("/orgs", headers=bearer(root), json={"name": "Clinique C"})
        assert r.status_code == 201
    assert any(e.action.value == "admin" and e.reason == "cross_org" for e in env.audit.events)


async def test_role_change_needs_reauth(env: Env, org_id: str) -> None:
    async with env.client() as http:
        admin = await enrol(http, env.accounts, org_id, "admin", "ad2@a.example", env.clock())
        sec = await enrol(http, env.accounts, org_id, "secretary", "se2@a.example", env.clock())
        r = await http.post(
            f"/users/{sec.user_id}/role", json={"role": "practitioner"}, headers=bearer(admin.token)
        )
        assert r.status_code == 200
        assert r.json()["role"] == "practitioner"
        env.clock.advance(600)
        r = await http.post(
            f"/users/{sec.user_id}/role", json={"role": "admin"}, headers=bearer(admin.token)
        )
        assert r.json()["error"]["code"] == "reauth_required"
    assert "role_grant" in env.audit.actions()


async def test_delegation_grant_and_revoke(env: Env, org_id: str) -> None:
    async with env.client() as http:
        doc = await enrol(http, env.accounts, org_id, "practitioner", "d@a.example", env.clock())
        sec = await enrol(http, env.accounts, org_id, "secretary", "s@a.example", env.clock())
        pat = await enrol(http, env.accounts, org_id, "patient", "p@a.example", env.clock())
        body = {"practitioner_id": doc.user_id, "delegate_id": sec.user_id, "scopes": ["contact"]}
        r = await http.post("/delegations", json=body, headers=bearer(sec.token))
        assert r.status_code == 403  # a secretary cannot delegate to themself
        bad = {**body, "delegate_id": pat.user_id}
        r = await http.post("/delegations", json=bad, headers=bearer(doc.token))
        assert r.status_code == 403  # only to a secretary
        r = await http.post("/delegations", json=body, headers=bearer(doc.token))
        assert r.status_code == 201
        did = r.json()["id"]
        r = await http.get("/me/delegations", headers=bearer(sec.token))
        assert r.json()["delegations"][0]["scopes"] == ["contact"]
        r = await http.delete(f"/delegations/{did}", headers=bearer(doc.token))
        assert r.status_code == 200
        r = await http.get("/me/delegations", headers=bearer(sec.token))
        assert r.json()["delegations"] == []
    actions = env.audit.actions()
    assert "delegation_grant" in actions
    assert "delegation_revoke" in actions


async def test_disable_revokes_all_sessions(env: Env, org_id: str) -> None:
    async with env.client() as http:
        admin = await enrol(http, env.accounts, org_id, "admin", "ad3@a.example", env.clock())
        pat = await enrol(http, env.accounts, org_id, "patient", "p3@a.example", env.clock())
        r = await http.post(f"/users/{pat.user_id}/disable", headers=bearer(admin.token))
        assert r.status_code == 200
        assert r.json()["status"] == "disabled"
        assert (await http.get("/session", headers=bearer(pat.token))).status_code == 401
    assert "account_disable" in env.audit.actions()


async def test_care_relationships(env: Env, org_id: str) -> None:
    async with env.client() as http:
        admin = await enrol(http, env.accounts, org_id, "admin", "ad4@a.example", env.clock())
        doc = await enrol(http, env.accounts, org_id, "practitioner", "d4@a.example", env.clock())
        pat = await enrol(http, env.accounts, org_id, "patient", "p4@a.example", env.clock())
        body = {"kind": "follows", "actor_id": doc.user_id, "patient_id": pat.user_id}
        r = await http.post("/care-relationships", json=body, headers=bearer(doc.token))
        assert r.status_code == 403
        wrong = {**body, "kind": "eeg_technician"}
        r = await http.post("/care-relationships", json=wrong, headers=bearer(admin.token))
        assert r.status_code == 403
        r = await http.post("/care-relationships", json=body, headers=bearer(admin.token))
        assert r.status_code == 201
        rels = await env.accounts.admin.relations.relationships_of([pat.user_id])
        assert [(rel.kind, rel.actor_id) for _, rel in rels] == [("follows", doc.user_id)]
        r = await http.delete(f"/care-relationships/{r.json()['id']}", headers=bearer(admin.token))
        assert r.status_code == 200
        assert await env.accounts.admin.relations.relationships_of([pat.user_id]) == []


async def test_another_orgs_ids_answer_exactly_as_unknown_ids(tmp_path: Path) -> None:
    """Every endpoint naming a target id (path or body) answers the same 404 for a real id
    of another organisation as for an id that does not exist (docs/accounts.md)."""
    async with run_accounts_hub(accounts_settings(tmp_path)) as hub:
        accounts = hub.components.accounts
        a = await accounts.admin.create_org(None, "Clinique A")
        b = await accounts.admin.create_org(None, "Hopital B")
        async with httpx.AsyncClient(base_url=hub.api) as http:
            now = time.time()
            admin_a = await enrol(http, accounts, a.id, "admin", "admin@a.example", now)
            doc_a = await enrol(http, accounts, a.id, "practitioner", "doc@a.example", now)
            sec_a = await enrol(http, accounts, a.id, "secretary", "sec@a.example", now)
            pat_a = await enrol(http, accounts, a.id, "patient", "pat@a.example", now)
            admin_b = await enrol(http, accounts, b.id, "admin", "admin@b.example", now)
            doc_b = await enrol(http, accounts, b.id, "practitioner", "doc@b.example", now)
            sec_b = await enrol(http, accounts, b.id, "secretary", "sec@b.example", now)
            pat_b = await enrol(http, accounts, b.id, "patient", "pat@b.example", now)
            hb = bearer(admin_b.token)
            grant = {"practitioner_id": doc_b.user_id, "delegate_id": sec_b.user_id}
            r = await http.post("/delegations", json={**grant, "scopes": ["contact"]}, headers=hb)
            assert r.status_code == 201, r.text
            delegation_b = r.json()["id"]
            care = {"kind": "follows", "actor_id": doc_b.user_id, "patient_id": pat_b.user_id}
            r = await http.post("/care-relationships", json=care, headers=hb)
            assert r.status_code == 201, r.text
            care_b = r.json()["id"]

            def unknown(real: str) -> str:
                return real[:2] + "0" * (len(real) - 2)

            def follows(actor: str, patient: str) -> dict[str, str]:
                return {"kind": "follows", "actor_id": actor, "patient_id": patient}

            def delegate(pract: str, to: str) -> dict[str, object]:
                return {"practitioner_id": pract, "delegate_id": to, "scopes": ["contact"]}

            invite = {"role": "patient", "name": "Eve Doe", "email": "eve@x.example"}
            doc, sec, pat = doc_a.user_id, sec_a.user_id, pat_a.user_id
            # (caller, method, path template, body or body maker, the other org's id)
            cases: list[tuple[Enrolled, str, str, Any, str]] = [
                (admin_a, "GET", "/orgs/{}/users", None, b.id),
                (admin_a, "POST", "/orgs/{}/users", invite, b.id),
                (admin_a, "GET", "/users/{}", None, doc_b.user_id),
                (admin_a, "POST", "/users/{}/disable", None, doc_b.user_id),
                (admin_a, "POST", "/users/{}/role", {"role": "practitioner"}, doc_b.user_id),
                (admin_a, "POST", "/users/{}/unlock", None, doc_b.user_id),
                (admin_a, "POST", "/users/{}/reinvite", None, doc_b.user_id),
                (admin_a, "POST", "/users/{}/reset-mfa", None, doc_b.user_id),
                (admin_a, "POST", "/users/{}/enable", None, doc_b.user_id),
                (admin_a, "POST", "/users/{}/force-password-reset", None, doc_b.user_id),
                (admin_a, "GET", "/users?org={}", None, b.id),
                (admin_a, "GET", "/orgs/{}/care-relationships", None, b.id),
                (admin_a, "GET", "/orgs/{}/delegations", None, b.id),
                (admin_a, "DELETE", "/delegations/{}", None, delegation_b),
                (admin_a, "DELETE", "/care-relationships/{}", None, care_b),
                (admin_a, "POST", "/delegations", lambda x: delegate(x, sec), doc_b.user_id),
                (admin_a, "POST", "/delegations", lambda x: delegate(doc, x), sec_b.user_id),
                (doc_a, "POST", "/delegations", lambda x: delegate(doc, x), sec_b.user_id),
                (admin_a, "POST", "/care-relationships", lambda x: follows(x, pat), doc_b.user_id),
                (admin_a, "POST", "/care-relationships", lambda x: follows(doc, x), pat_b.user_id),
            ]
            for caller, method, path, body, real in cases:
                answers = []
                for target in (real, unknown(real)):
                    url = path.format(target)
                    payload = body(target) if callable(body) else body
                    r = await http.request(method, url, json=payload, headers=bearer(caller.token))
                    answers.append((r.status_code, r.json()))
                where = f"{method} {path} {real[:2]}"
                assert answers[0] == answers[1], where
                assert answers[0][0] == 404, where
            # B's data is untouched
            r = await http.get(f"/users/{doc_b.user_id}", headers=hb)
            assert r.json()["status"] == "active"
