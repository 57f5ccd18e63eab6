"""Helpers for accounts tests on a real hub over real HTTP (see tests/accountstest.py)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from server.accounts import totp
from server.accounts.module import Accounts
from tests.accountstest import PASSWORD, Enrolled, enrol, secret_of


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def wrong_code(secret: str, now: float) -> str:
    """A six-digit code that no step around ``now`` accepts."""
    step = totp.step_at(now)
    taken = {totp.code_at(secret, s) for s in range(step - 3, step + 4)}
    return next(c for c in (f"{n:06d}" for n in range(0, 1_000_000, 7919)) if c not in taken)


def code_now(secret: str, offset: int = 0) -> str:
    return totp.code_at(secret, totp.step_at(time.time()) + offset)


async def person(
    http: httpx.AsyncClient, accounts: Accounts, org_id: str, role: str, email: str, name: str
) -> Enrolled:
    """An enrolled user (invited by the CLI path, enrolled over HTTP, real clock)."""
    return await enrol(http, accounts, org_id, role, email, time.time(), name=name)


async def accept(http: httpx.AsyncClient, token: str, password: str = PASSWORD) -> dict[str, Any]:
    """``POST /invitations/accept``; the body (asserting 200)."""
    r = await http.post("/invitations/accept", json={"token": token, "password": password})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def enrol_with(http: httpx.AsyncClient, token: str) -> tuple[str, dict[str, Any]]:
    """Accept an invitation and confirm with the current code: (secret, session body)."""
    body = await accept(http, token)
    secret = secret_of(body["otpauth_uri"])
    r = await http.post(
        "/mfa/enrol", json={"challenge": body["challenge"], "code": code_now(secret)}
    )
    assert r.status_code == 200, r.text
    session: dict[str, Any] = r.json()
    return secret, session


async def password_step(
    http: httpx.AsyncClient, email: str, password: str = PASSWORD
) -> dict[str, Any]:
    r = await http.post("/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def error_code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])
