"""Helpers for accounts tests: an in-process accounts stack with an injected clock,
users enrolled through the real flow, and a real hub using the real authenticator."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from server.accounts import totp
from server.accounts.module import Accounts, build_accounts
from server.audit.events import AuditEvent
from server.broker import MemoryBroker
from server.config import Settings, ensure_secrets, load_settings
from server.store.db import Database
from server.store.migrate import upgrade_to_head_async
from tests.hubtest import RunningHub, run_hub

PASSWORD = "Correct-Horse-Battery-9"
CHEAP = {"argon2_time_cost": 1, "argon2_memory_kib": 1024, "password_hash_threads": 2}


class FakeClock:
    """Seconds since the epoch that move only when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Recorder:
    """An audit trail stand-in that keeps events."""

    events: list[AuditEvent] = field(default_factory=list)

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)

    def actions(self) -> list[str]:
        return [e.action.value for e in self.events]


def accounts_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": str(tmp_path / "var"), **CHEAP}
    values.update(overrides)
    return ensure_secrets(load_settings(environ={}, overrides=values))


@dataclass
class Env:
    """An accounts stack on a real database and a memory broker, with a fake clock."""

    settings: Settings
    db: Database
    broker: MemoryBroker
    audit: Recorder
    clock: FakeClock
    accounts: Accounts

    def client(self, **headers: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.accounts.app(), client=("10.0.0.7", 5555))
        return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers)


@contextlib.asynccontextmanager
async def accounts_env(
    tmp_path: Path, db_url: str | None = None, **overrides: Any
) -> AsyncIterator[Env]:
    settings = accounts_settings(tmp_path, **overrides)
    url = db_url or f"sqlite+aiosqlite:///{tmp_path / 'acc.db'}"
    await upgrade_to_head_async(url)
    db = Database(url)
    await db.connect()
    broker = MemoryBroker()
    await broker.start()
    clock, audit = FakeClock(), Recorder()
    accounts = build_accounts(settings, db, broker, audit, clock=clock)
    await accounts.start(None)
    try:
        yield Env(settings, db, broker, audit, clock, accounts)
    finally:
        await accounts.close()
        await broker.close()
        await db.close()


def secret_of(otpauth_uri: str) -> str:
    found = re.search(r"secret=([A-Z2-7]+)", otpauth_uri)
    assert found, otpauth_uri
    return found.group(1)


@dataclass
class Enrolled:
    user_id: str
    org_id: str
    email: str
    secret: str
    token: str
    session_id: str
    recovery_codes: list[str]


async def enrol(
    http: httpx.AsyncClient,
    accounts: Accounts,
    org_id: str,
    role: str,
    email: str,
    now: float,
    password: str = PASSWORD,
    name: str = "Ada Lovelace",
) -> Enrolled:
    """Invite (as the CLI would), accept over HTTP, confirm TOTP with the code of ``now``."""
    inv = await accounts.admin.invite(None, org_id, role=role, name=name, email=email)
    r = await http.post("/invitations/accept", json={"token": inv.token, "password": password})
    assert r.status_code == 200, r.text
    body = r.json()
    secret = secret_of(body["otpauth_uri"])
    assert body["qr_svg"].startswith("<svg")
    code = totp.code_at(secret, totp.step_at(now))
    r = await http.post("/mfa/enrol", json={"challenge": body["challenge"], "code": code})
    assert r.status_code == 200, r.text
    s = r.json()
    return Enrolled(
        inv.user.id, org_id, email, secret, s["token"], s["session_id"], s["recovery_codes"]
    )


async def login(
    http: httpx.AsyncClient,
    email: str,
    secret: str,
    now: float,
    password: str = PASSWORD,
    step_offset: int = 0,
) -> httpx.Response:
    """Password then TOTP (code of ``now``'s step + ``step_offset``); the MFA response."""
    r = await http.post("/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    code = totp.code_at(secret, totp.step_at(now) + step_offset)
    return await http.post("/login/mfa", json={"challenge": r.json()["challenge"], "code": code})


LiveHub = RunningHub


def run_accounts_hub(settings: Settings) -> contextlib.AbstractAsyncContextManager[RunningHub]:
    """A real hub on a free port with the default (accounts) authenticator."""
    return run_hub(settings)
