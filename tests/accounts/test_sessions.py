"""Sessions: timeouts, list and revoke, cookies and CSRF, re-authentication, expiry."""

from __future__ import annotations

import pytest

from protocol.errors import ErrorCode
from protocol.messages import Auth
from server.accounts import csrf, totp
from server.auth import AuthError, HandshakeInfo
from tests.accountstest import PASSWORD, Env, enrol, login, secret_of

NEW = "Another-Long-Passphrase-7"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_idle_and_absolute_timeouts(env: Env, org_id: str) -> None:
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "patient", "s1@a.example", env.clock())
        idle = env.settings.session_idle_timeout_s
        env.clock.advance(idle - 60)
        assert (await http.get("/session", headers=bearer(u.token))).status_code == 200
        env.clock.advance(idle - 60)  # used recently: still alive
        assert (await http.get("/session", headers=bearer(u.token))).status_code == 200
        env.clock.advance(idle + 1)
        r = await http.get("/session", headers=bearer(u.token))
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthenticated"
        r = await login(http, u.email, u.secret, env.clock())
        token = r.json()["token"]
        for _ in range(int(env.settings.session_absolute_timeout_s // 1200)):
            env.clock.advance(1200)
            await http.get("/session", headers=bearer(token))
        env.clock.advance(1200)
        assert (await http.get("/session", headers=bearer(token))).status_code == 401


async def test_list_revoke_one_and_revoke_others(env: Env, org_id: str) -> None:
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "patient", "s2@a.example", env.clock())
        tokens = [u.token]
        for _ in range(2):
            env.clock.advance(30)
            r = await login(http, u.email, u.secret, env.clock())
            tokens.append(r.json()["token"])
        assert len(set(tokens)) == 3  # a new token at every login
        r = await http.get("/me/sessions", headers=bearer(tokens[0]))
        listed = r.json()["sessions"]
        assert len(listed) == 3
        assert sum(s["current"] for s in listed) == 1
        other = next(s["session_id"] for s in listed if not s["current"])
        r = await http.delete(f"/me/sessions/{other}", headers=bearer(tokens[0]))
        assert r.json() == {"revoked": 1}
        r = await http.post("/me/sessions/revoke-others", headers=bearer(tokens[0]))
        assert r.json() == {"revoked": 1}
        assert (await http.get("/session", headers=bearer(tokens[1]))).status_code == 401
        assert (await http.get("/session", headers=bearer(tokens[2]))).status_code == 401
        assert (await http.get("/session", headers=bearer(tokens[0]))).status_code == 200
        r = await http.delete(f"/me/sessions/{other}", headers=bearer(tokens[0]))
        assert r.status_code == 404
    assert env.audit.actions().count("session_revoke") == 2


async def test_cookie_session_needs_csrf_and_origin(env: Env, org_id: str) -> None:
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "patient", "c1@a.example", env.clock())
        env.clock.advance(30)
        r = await http.post("/login", json={"email": u.email, "password": PASSWORD})
        code = totp.code_at(u.secret, totp.step_at(env.clock()))
        r = await http.post(
            "/login/mfa",
            json={"challenge": r.json()["challenge"], "code": code, "session": "cookie"},
        )
        assert r.status_code == 200
        body = r.json()
        assert body["token"] is None  # never readable by scripts
        set_cookie = r.headers["set-cookie"]
        assert set_cookie.startswith(csrf.COOKIE_NAME + "=")
        for attr in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
            assert attr in set_cookie
        assert "Domain" not in set_cookie
        token = set_cookie.split(";")[0].split("=", 1)[1]
        origin = env.settings.allowed_origins[0]
        cookie = {"cookie": f"{csrf.COOKIE_NAME}={token}"}
        # reads need no CSRF token
        assert (await http.get("/me/sessions", headers=cookie)).status_code == 200
        # a state-changing request without the CSRF token is refused
        r = await http.post("/ws-ticket", headers={**cookie, "origin": origin})
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "csrf_failed"
        r = await http.post(
            "/ws-ticket", headers={**cookie, "origin": origin, "x-csrf-token": "forged-token-value"}
        )
        assert r.json()["error"]["code"] == "csrf_failed"
        good = {**cookie, "x-csrf-token": body["csrf_token"]}
        r = await http.post("/ws-ticket", headers={**good, "origin": "https://evil.example"})
        assert r.json()["error"]["code"] == "origin_refused"
        r = await http.post("/ws-ticket", headers=good)  # neither Origin nor Sec-Fetch-Site
        assert r.json()["error"]["code"] == "origin_refused"
        r = await http.post("/ws-ticket", headers={**good, "sec-fetch-site": "cross-site"})
        assert r.json()["error"]["code"] == "origin_refused"
        r = await http.post("/ws-ticket", headers={**good, "sec-fetch-site": "same-origin"})
        assert r.status_code == 200
        r = await http.post("/ws-ticket", headers={**good, "origin": origin})
        assert r.status_code == 200
        assert len(r.json()["ticket"]) >= 43
        # login CSRF: a cross-site login form is refused
        r = await http.post(
            "/login",
            json={"email": u.email, "password": PASSWORD},
            headers={"origin": "https://evil.example"},
        )
        assert r.json()["error"]["code"] == "origin_refused"


async def test_password_change_needs_reauth_and_revokes_others(env: Env, org_id: str) -> None:
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "secretary", "pw@a.example", env.clock())
        env.clock.advance(30)
        other = (await login(http, u.email, u.secret, env.clock())).json()["token"]
        env.clock.advance(301)
        r = await http.post("/me/password", json={"new_password": NEW}, headers=bearer(u.token))
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "reauth_required"
        code = totp.code_at(u.secret, totp.step_at(env.clock()))
        r = await http.post(
            "/reauth", json={"password": PASSWORD, "code": code}, headers=bearer(u.token)
        )
        assert r.status_code == 200, r.text
        r = await http.post(
            "/me/password", json={"new_password": PASSWORD}, headers=bearer(u.token)
        )
        assert r.json()["error"]["code"] == "password_reused"
        r = await http.post("/me/password", json={"new_password": NEW}, headers=bearer(u.token))
        assert r.status_code == 200, r.text
        assert (await http.get("/session", headers=bearer(other))).status_code == 401
        assert (await http.get("/session", headers=bearer(u.token))).status_code == 200
        env.clock.advance(30)
        r = await login(http, u.email, u.secret, env.clock(), password=NEW)
        assert r.status_code == 200
    assert "password_change" in env.audit.actions()


@pytest.mark.parametrize(
    "role", ["practitioner", "secretary", "technician", "interpreter", "admin", "superadmin"]
)
async def test_expired_password_forces_a_change(env: Env, org_id: str, role: str) -> None:
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, role, "old@a.example", env.clock())
        env.clock.advance(366 * 86400)
        r = await login(http, u.email, u.secret, env.clock())
        body = r.json()
        assert r.status_code == 200
        assert body["restricted"] == "password_expired"
        token = body["token"]
        r = await http.get("/me/sessions", headers=bearer(token))
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "password_expired"
        r = await http.post("/ws-ticket", headers=bearer(token))
        assert r.json()["error"]["code"] == "password_expired"
        r = await http.post("/me/password", json={"new_password": NEW}, headers=bearer(token))
        assert r.status_code == 200, r.text
        assert (await http.get("/me/sessions", headers=bearer(token))).status_code == 200


async def test_patient_passwords_do_not_expire(env: Env, org_id: str) -> None:
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "patient", "pp@a.example", env.clock())
        env.clock.advance(400 * 86400)
        r = await login(http, u.email, u.secret, env.clock())
        assert r.json()["restricted"] is None


async def test_mfa_change_revokes_other_sessions(env: Env, org_id: str) -> None:
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "patient", "mfa@a.example", env.clock())
        env.clock.advance(30)
        other = (await login(http, u.email, u.secret, env.clock())).json()["token"]
        r = await http.post("/me/mfa", headers=bearer(u.token))  # enrolled 30 s ago: recent
        assert r.status_code == 200, r.text
        new_secret = secret_of(r.json()["otpauth_uri"])
        assert new_secret != u.secret
        code = totp.code_at(new_secret, totp.step_at(env.clock()))
        r = await http.post("/me/mfa/confirm", json={"code": code}, headers=bearer(u.token))
        assert r.status_code == 200
        assert len(r.json()["recovery_codes"]) == 10
        assert (await http.get("/session", headers=bearer(other))).status_code == 401
        env.clock.advance(301)
        r = await http.post("/me/mfa", headers=bearer(u.token))
        assert r.json()["error"]["code"] == "reauth_required"
        env.clock.advance(30)
        r = await login(http, u.email, new_secret, env.clock())
        assert r.status_code == 200


async def test_expired_guest_is_refused_by_ticket_as_by_token(env: Env, org_id: str) -> None:
    """A guest account past its end opens no socket, whatever the hello method."""
    async with env.client() as http:
        guest = await enrol(http, env.accounts, org_id, "patient", "guest@a.example", env.clock())
        end_us = int((env.clock() + 10) * 1e6)
        await env.accounts.service.store.update_user(
            guest.user_id, by=None, now_us=env.accounts.service.now_us(), expires_us=end_us
        )
        tickets = []
        for _ in range(2):
            r = await http.post("/ws-ticket", headers=bearer(guest.token))
            assert r.status_code == 200, r.text
            tickets.append(r.json()["ticket"])
        authn, info = env.accounts.authenticator, HandshakeInfo(None, "10.0.0.7")
        principal = await authn.authenticate(Auth("ticket", tickets[0]), info)
        assert principal.user_id == guest.user_id  # before the end: welcome
        env.clock.advance(11)  # the guest account has ended; its session has not
        for auth in (Auth("ticket", tickets[1]), Auth("token", guest.token)):
            with pytest.raises(AuthError) as refused:
                await authn.authenticate(auth, info)
            assert refused.value.code == ErrorCode.AUTH_FAILED, auth.method
        r = await http.get("/session", headers=bearer(guest.token))
        assert r.status_code == 401


def test_codes_never_start_with_a_dash_so_a_command_line_takes_them() -> None:
    """`medhub-chat enrol CODE` with a code starting with '-' was an argparse usage error."""
    from server.accounts.sessions import new_token

    tokens = {new_token() for _ in range(5000)}  # 1 in 64 started with '-' before
    assert len(tokens) == 5000
    assert not [t for t in tokens if t.startswith("-")]
    assert all(len(t) == 43 for t in tokens)  # still 256 bits, URL-safe base64
