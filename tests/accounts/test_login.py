"""Enrolment and login end to end over the ASGI app, with an injected clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

from server.accounts import totp
from server.accounts.web import MAX_BODY_BYTES
from tests.accountstest import PASSWORD, Env, enrol, login

TOO_LARGE = {"error": {"code": "payload_too_large", "message": "the request body is too large"}}
CHUNK = 8192


async def test_full_enrolment_and_login(env: Env, org_id: str) -> None:
    async with env.client() as http:
        user = await enrol(http, env.accounts, org_id, "practitioner", "ada@a.example", env.clock())
        assert len(user.recovery_codes) == 10
        r = await http.get("/session", headers={"authorization": f"Bearer {user.token}"})
        assert r.status_code == 200
        assert r.json()["role"] == "practitioner"
        env.clock.advance(30)
        r = await login(http, "ADA@a.example", user.secret, env.clock())
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user_id"] == user.user_id
        assert body["token"] != user.token
        assert body["restricted"] is None
    actions = env.audit.actions()
    assert actions.count("login") == 2
    assert "mfa_enroll" in actions
    assert "account_create" in actions
    assert all("@" not in str(e) for e in env.audit.events)


async def test_unknown_user_and_wrong_password_same_answer(env: Env, org_id: str) -> None:
    async with env.client() as http:
        await enrol(http, env.accounts, org_id, "patient", "pat@a.example", env.clock())
        wrong = await http.post("/login", json={"email": "pat@a.example", "password": "nope"})
        unknown = await http.post("/login", json={"email": "who@a.example", "password": PASSWORD})
        assert wrong.status_code == unknown.status_code == 401
        assert (
            wrong.json()
            == unknown.json()
            == {"error": {"code": "auth_failed", "message": "wrong email or password"}}
        )


async def test_wrong_replayed_and_expired_totp(env: Env, org_id: str) -> None:
    async with env.client() as http:
        user = await enrol(http, env.accounts, org_id, "patient", "p2@a.example", env.clock())
        enrol_step = totp.step_at(env.clock())
        # the enrolment code's step was accepted: replaying it fails
        r = await http.post("/login", json={"email": user.email, "password": PASSWORD})
        challenge = r.json()["challenge"]
        replay = totp.code_at(user.secret, enrol_step)
        r = await http.post("/login/mfa", json={"challenge": challenge, "code": replay})
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "mfa_failed"
        # a wrong code
        bad = "000000" if replay != "000000" else "111111"
        r = await http.post("/login/mfa", json={"challenge": challenge, "code": bad})
        assert r.json()["error"]["code"] == "mfa_failed"
        # an expired code: two steps old
        env.clock.advance(90)
        old = totp.code_at(user.secret, totp.step_at(env.clock()) - 2)
        r = await http.post("/login/mfa", json={"challenge": challenge, "code": old})
        assert r.json()["error"]["code"] == "mfa_failed"
        # the right code works once
        good = totp.code_at(user.secret, totp.step_at(env.clock()))
        r = await http.post("/login/mfa", json={"challenge": challenge, "code": good})
        assert r.status_code == 200, r.text
        r = await http.post("/login/mfa", json={"challenge": challenge, "code": good})
        assert r.json()["error"]["code"] == "challenge_invalid"
        # the same code with a fresh challenge: replay refused
        r = await http.post("/login", json={"email": user.email, "password": PASSWORD})
        r = await http.post("/login/mfa", json={"challenge": r.json()["challenge"], "code": good})
        assert r.json()["error"]["code"] == "mfa_failed"
    assert env.audit.actions().count("mfa_failed") >= 4


async def test_challenge_expires(env: Env, org_id: str) -> None:
    async with env.client() as http:
        user = await enrol(http, env.accounts, org_id, "patient", "p3@a.example", env.clock())
        r = await http.post("/login", json={"email": user.email, "password": PASSWORD})
        challenge = r.json()["challenge"]
        env.broker.backend.clock = lambda: 10**9  # the broker's TTL has passed
        code = totp.code_at(user.secret, totp.step_at(env.clock()) + 1)
        r = await http.post("/login/mfa", json={"challenge": challenge, "code": code})
        assert r.json()["error"]["code"] == "challenge_invalid"


async def test_recovery_code_is_single_use(env: Env, org_id: str) -> None:
    async with env.client() as http:
        user = await enrol(http, env.accounts, org_id, "patient", "p4@a.example", env.clock())
        for expected in (200, 401):
            r = await http.post("/login", json={"email": user.email, "password": PASSWORD})
            r = await http.post(
                "/login/mfa",
                json={"challenge": r.json()["challenge"], "recovery_code": user.recovery_codes[0]},
            )
            assert r.status_code == expected, r.text


async def test_a_session_is_not_a_challenge(env: Env, org_id: str) -> None:
    """Only the MFA endpoints accept a challenge; a challenge is no session."""
    async with env.client() as http:
        user = await enrol(http, env.accounts, org_id, "patient", "p5@a.example", env.clock())
        r = await http.post("/login", json={"email": user.email, "password": PASSWORD})
        challenge = r.json()["challenge"]
        r = await http.get("/session", headers={"authorization": f"Bearer {challenge}"})
        assert r.status_code == 401
        r = await http.post("/mfa/enrol", json={"challenge": challenge, "code": "123456"})
        assert r.json()["error"]["code"] == "challenge_invalid"


async def test_bad_input_gets_stable_codes(env: Env, org_id: str) -> None:
    async with env.client() as http:
        r = await http.post("/login", json={"email": "a@a.example", "password": "x", "extra": 1})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "bad_request"
        r = await http.post(
            "/login", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.json()["error"]["code"] == "bad_request"
        r = await http.post("/login", content=b"email=a", headers={"content-type": "text/plain"})
        assert r.status_code == 415
        r = await http.get("/login")
        assert r.status_code == 405
        r = await http.get("/nowhere")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"
        r = await http.get("/users/not-an-id", headers={"authorization": "Bearer x" * 3})
        assert r.status_code == 404
        r = await http.get("/openapi.json")
        assert r.json()["openapi"] == "3.1.0"


class EndlessBody:
    """A streamed body of ``total`` bytes that fails once more than ``allowed`` are taken."""

    def __init__(self, total: int, allowed: int) -> None:
        self.total, self.allowed, self.taken = total, allowed, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.taken < self.total:
            if self.taken + CHUNK > self.allowed:
                raise AssertionError(f"the server read {self.taken} bytes and asked for more")
            self.taken += CHUNK
            yield b" " * CHUNK


async def test_oversized_body_is_refused_without_reading_it(env: Env) -> None:
    """Before any login: a body over the limit is 413 payload_too_large, never buffered."""
    async with env.client() as http:
        # streamed (chunked, no Content-Length): refused once the count passes the limit
        for path in ("/login", "/logout"):  # with a body type, and without one
            body = EndlessBody(total=1 << 30, allowed=MAX_BODY_BYTES + CHUNK)
            r = await http.post(path, content=body, headers={"content-type": "application/json"})
            assert (r.status_code, r.json()) == (413, TOO_LARGE), path
            assert body.taken <= MAX_BODY_BYTES + CHUNK
        # a declared Content-Length over the limit: refused before reading anything
        body = EndlessBody(total=1 << 30, allowed=0)
        r = await http.post(
            "/login",
            content=body,
            headers={"content-type": "application/json", "content-length": str(1 << 30)},
        )
        assert (r.status_code, r.json()) == (413, TOO_LARGE)
        assert body.taken == 0
        # one byte over the limit is refused; exactly the limit is read and decoded
        login_json = b'{"email": "x@a.example", "password": "Wrong-password-1"}'
        at_limit = login_json + b" " * (MAX_BODY_BYTES - len(login_json))
        r = await http.post("/login", content=at_limit + b" ")
        assert (r.status_code, r.json()) == (413, TOO_LARGE)
        r = await http.post("/login", content=at_limit)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "auth_failed"
