"""``medhub demo seed`` as a newcomer runs it: a server in one terminal, the demo in
another, then a login and a consultation with what it printed."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from protocol.codec import SUBPROTOCOL_JSON
from server.accounts import totp
from tests.hubtest import Client
from tests.server.serveproc import BANNER, ROOT, Child, medhub_env
from tests.services import free_port

START_S = 60.0  # a cold start imports everything and migrates: generous, not a measurement
CHEAP = {"argon2_time_cost": 1, "argon2_memory_kib": 1024}


def medhub(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def table_rows(out: str) -> dict[str, list[str]]:
    """The printed logins by role label (columns are two or more spaces apart)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ROLE"))
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells
    return rows


def test_two_commands_to_a_working_consultation(tmp_path: Path) -> None:
    port = free_port()
    env = medhub_env(tmp_path / "var", port=port, **CHEAP)
    server = Child(["serve"], env)
    try:
        server.out.wait_for(BANNER, START_S)
        seeded = medhub(["demo", "seed"], env)
        assert seeded.returncode == 0, seeded.stderr
        out = seeded.stdout
        assert out.startswith("Demo clinic seeded")
        rows = table_rows(out)
        assert list(rows) == [
            "admin", "practitioner 1", "practitioner 2", "secretary", "technician",
            "interpreter", "patient 1", "patient 2", "patient 3",
        ]  # fmt: skip
        _, name, email, password, secret, code = rows["practitioner 1"]
        step = totp.step_at(time.time())
        assert code in {totp.code_at(secret, s) for s in (step - 1, step, step + 1)}
        consultation = re.search(r"Consultation: (\S+) \(", out)
        assert consultation is not None
        assert f"Consultation: {consultation.group(1)} ({name} with {rows['patient 1'][1]})" in out
        demo_file = tmp_path / "var" / "demo.json"
        assert stat.S_IMODE(demo_file.stat().st_mode) == 0o600
        # the doctor signs in with what was printed and opens the consultation
        reply = asyncio.run(_consult(port, email, password, secret, consultation.group(1)))
        assert reply["type"] == "result", reply
        assert reply["data"]["created"] is True
        # again: the demo is there; the same logins, with fresh codes
        again = medhub(["demo", "seed", "--json"], env)
        assert again.returncode == 0, again.stderr
        data = json.loads(again.stdout)
        assert data["consultation"] == consultation.group(1)
        logins = {login["label"]: login for login in data["logins"]}
        assert (logins["practitioner 1"]["password"], logins["practitioner 1"]["totp_secret"]) == (
            password,
            secret,
        )
        assert all(
            [login["email"], login["password"], login["totp_secret"]] == rows[label][2:5]
            for label, login in logins.items()
        )
        assert "already there" in medhub(["demo", "seed"], env).stdout
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
    finally:
        server.stop()
    # no secret of the demo in the server's logs
    logged = server.err.text()
    assert password not in logged
    assert secret not in logged


async def _consult(port: int, email: str, password: str, secret: str, consultation: str) -> Any:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/v1") as http:
        r = await http.post("/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        code = totp.code_at(secret, totp.step_at(time.time()))
        r = await http.post("/login/mfa", json={"challenge": r.json()["challenge"], "code": code})
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        assert r.json()["restricted"] is None
    async with connect(f"ws://127.0.0.1:{port}/ws", subprotocols=[SUBPROTOCOL_JSON]) as ws:  # type: ignore[list-item]
        c = Client(ws, binary=False)
        welcome = await c.request(
            {"type": "hello", "id": "h", "auth": {"method": "token", "token": token}}
        )
        assert welcome["type"] == "welcome", welcome
        return await c.request(
            {"type": "chat.create", "id": "1", "kind": "consultation", "consultation": consultation}
        )


def _refusal(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.startswith("medhub demo:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_refuses_postgresql_and_a_database_with_real_users(tmp_path: Path) -> None:
    pg = medhub_env(tmp_path / "pg", database_url="postgresql+asyncpg://u@127.0.0.1:1/medhub")
    line = _refusal(medhub(["demo", "seed"], pg))
    assert "embedded SQLite" in line
    assert "postgresql" in line
    env = medhub_env(tmp_path / "real", **CHEAP)
    made = medhub(["admin", "create-superadmin", "--name", "Root", "--email", "r@p.example"], env)
    assert made.returncode == 0, made.stderr
    line = _refusal(medhub(["demo", "seed"], env))
    assert "already holds users that are not the demo's" in line
    assert not (tmp_path / "real" / "demo.json").exists()
