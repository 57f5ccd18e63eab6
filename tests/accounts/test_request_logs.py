"""A real ``medhub serve``: one log line per request and per login outcome, no personal
data in any of them, and a final ``stopped`` line."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from tests.server.serveproc import BANNER, Child, medhub_env
from tests.services import free_port

START_S = 60.0  # a cold start imports everything and migrates: generous, not a measurement
EMAIL = "mallory.private-person@example.org"
PASSWORD = "Hunter2-Very-Secret-Pass!"
USER_ID = "u-0123456789abcdef0123"
ORG_ID = "o-abcdef123456"
TOKEN = "not-a-real-token-but-secret-looking"


def test_request_and_login_lines_carry_no_personal_data(tmp_path: Path) -> None:
    port = free_port()
    env = medhub_env(tmp_path / "var", argon2_time_cost=1, argon2_memory_kib=1024)
    child = Child(["serve", "--port", str(port)], env)
    try:
        child.out.wait_for(BANNER, START_S)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base) as http:
            login = http.post("/api/v1/login", json={"email": EMAIL, "password": PASSWORD})
            assert login.status_code == 401
            one = http.get(f"/api/v1/users/{USER_ID}", headers={"authorization": f"Bearer {TOKEN}"})
            assert one.status_code == 401
            listed = http.get("/api/v1/users", params={"org": ORG_ID, "q": EMAIL})
            assert listed.status_code == 401
            assert http.get("/healthz").status_code == 200
            assert http.get(f"/nowhere/{EMAIL}").status_code == 404
        child.err.wait_for('"/healthz"', 10)  # the health check's request line
        child.proc.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0
    finally:
        child.stop()
    records = list(child.err.records())
    requests = {r["request_id"]: r for r in records if r["msg"] == "request"}
    line = requests[login.headers["x-request-id"]]
    assert (line["method"], line["route"], line["status"]) == ("POST", "/api/v1/login", 401)
    assert isinstance(line["duration_ms"], float)
    assert line["ctx"] == line["request_id"]
    assert requests[one.headers["x-request-id"]]["route"] == "/api/v1/users/{user_id}"
    assert requests[listed.headers["x-request-id"]]["route"] == "/api/v1/users"
    routes = sorted(r["route"] for r in requests.values())
    assert "/healthz" in routes
    assert any(r in ("<unmatched>", "/{path}") for r in routes)  # the 404 (or the browser app)
    (outcome,) = [r for r in records if r["msg"] == "login"]
    assert (outcome["step"], outcome["outcome"], outcome["reason"]) == (
        "password",
        "failed",
        "bad_password",
    )
    assert outcome["user"] is None  # unknown email: no id to give
    assert outcome["ctx"] == login.headers["x-request-id"]
    text = child.err.text() + child.out.text()
    for private in (EMAIL, "mallory", PASSWORD, USER_ID, ORG_ID, TOKEN, "nowhere"):
        assert private not in text, private
    assert records[-1]["msg"] == "stopped"
    assert records[-1]["exit_code"] == 0
