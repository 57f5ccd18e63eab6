"""A real hub on a real socket with the real accounts authenticator.

The handshake uses accounts sessions (bearer token, single-use ticket, cookie
with a strict Origin); revoking a session closes its live socket at once with
4010, and a change of rights closes the user's sockets with 4011 (reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from protocol.codec import SUBPROTOCOL_JSON
from protocol.errors import CloseCode
from server.accounts import csrf, totp
from server.app import build_app
from tests.accountstest import (
    PASSWORD,
    Enrolled,
    LiveHub,
    accounts_settings,
    enrol,
    run_accounts_hub,
)
from tests.hubtest import Client, close_code


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[LiveHub]:
    async with run_accounts_hub(accounts_settings(tmp_path)) as h:
        yield h


async def _user(hub: LiveHub, http: httpx.AsyncClient, email: str) -> Enrolled:
    org = await hub.components.accounts.admin.create_org(None, "Clinique A")
    return await enrol(http, hub.components.accounts, org.id, "practitioner", email, time.time())


async def _hello(ws: ClientConnection, auth: dict[str, str]) -> dict[str, object]:
    c = Client(ws, binary=False)
    return await c.request({"type": "hello", "id": "h", "auth": auth})


async def test_handshake_with_token_ticket_and_cookie(hub: LiveHub) -> None:
    async with httpx.AsyncClient(base_url=hub.api) as http:
        u = await _user(hub, http, "ws1@a.example")
        async with connect(hub.url, subprotocols=[SUBPROTOCOL_JSON]) as ws:  # type: ignore[list-item]
            welcome = await _hello(ws, {"method": "token", "token": u.token})
            assert welcome["type"] == "welcome"
            assert welcome["identity"]["user"] == u.user_id  # type: ignore[index]
        r = await http.post("/ws-ticket", headers={"authorization": f"Bearer {u.token}"})
        ticket = r.json()["ticket"]
        async with connect(hub.url, subprotocols=[SUBPROTOCOL_JSON]) as ws:  # type: ignore[list-item]
            welcome = await _hello(ws, {"method": "ticket", "token": ticket})
            assert welcome["type"] == "welcome"
        async with connect(hub.url, subprotocols=[SUBPROTOCOL_JSON]) as ws:  # type: ignore[list-item]
            with pytest.raises(ConnectionClosed) as info:
                reply = await _hello(ws, {"method": "ticket", "token": ticket})  # used once
                assert reply["type"] == "error"
                await ws.recv()
            assert close_code(info) == CloseCode.AUTH_FAILED
        cookie = {"Cookie": f"{csrf.COOKIE_NAME}={u.token}"}
        origin = hub.components.settings.allowed_origins[0]
        async with connect(
            hub.url,
            subprotocols=[SUBPROTOCOL_JSON],  # type: ignore[list-item]
            additional_headers={**cookie, "Origin": origin},
        ) as ws:
            welcome = await _hello(ws, {"method": "cookie"})
            assert welcome["type"] == "welcome"
        # the cookie without an Origin (not a browser) is refused
        async with connect(
            hub.url,
            subprotocols=[SUBPROTOCOL_JSON],  # type: ignore[list-item]
            additional_headers=cookie,
        ) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await _hello(ws, {"method": "cookie"})
                await ws.recv()
            assert close_code(info) == CloseCode.AUTH_FAILED


async def test_revoking_a_session_closes_its_live_socket(hub: LiveHub) -> None:
    async with httpx.AsyncClient(base_url=hub.api) as http:
        u = await _user(hub, http, "ws2@a.example")
        # a second session (code of the next step: the enrolment spent this one)
        r = await http.post("/login", json={"email": u.email, "password": PASSWORD})
        code = totp.code_at(u.secret, totp.step_at(time.time()) + 1)
        r = await http.post("/login/mfa", json={"challenge": r.json()["challenge"], "code": code})
        second = r.json()["token"]
        async with connect(hub.url, subprotocols=[SUBPROTOCOL_JSON]) as ws:  # type: ignore[list-item]
            assert (await _hello(ws, {"method": "token", "token": u.token}))["type"] == "welcome"
            r = await http.get("/me/sessions", headers={"authorization": f"Bearer {second}"})
            listed = r.json()["sessions"]
            assert len(listed) == 2
            r = await http.delete(
                f"/me/sessions/{u.session_id}", headers={"authorization": f"Bearer {second}"}
            )
            assert r.json() == {"revoked": 1}
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await ws.recv()
            assert close_code(info) == CloseCode.SESSION_REVOKED
        # the revoked token no longer opens a socket
        async with connect(hub.url, subprotocols=[SUBPROTOCOL_JSON]) as ws:  # type: ignore[list-item]
            with pytest.raises(ConnectionClosed) as info:
                await _hello(ws, {"method": "token", "token": u.token})
                await ws.recv()
            assert close_code(info) == CloseCode.AUTH_FAILED


async def test_revoking_a_delegation_closes_the_delegates_socket(hub: LiveHub) -> None:
    accounts = hub.components.accounts
    async with httpx.AsyncClient(base_url=hub.api) as http:
        org = await accounts.admin.create_org(None, "Clinique D")
        now = time.time()
        doc = await enrol(http, accounts, org.id, "practitioner", "doc@d.example", now)
        sec = await enrol(http, accounts, org.id, "secretary", "sec@d.example", now)
        auth = {"authorization": f"Bearer {doc.token}"}
        body = {"practitioner_id": doc.user_id, "delegate_id": sec.user_id, "scopes": ["contact"]}
        did = (await http.post("/delegations", json=body, headers=auth)).json()["id"]
        async with connect(hub.url, subprotocols=[SUBPROTOCOL_JSON]) as ws:  # type: ignore[list-item]
            assert (await _hello(ws, {"method": "token", "token": sec.token}))["type"] == "welcome"
            r = await http.delete(f"/delegations/{did}", headers=auth)
            assert r.status_code == 200
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await ws.recv()
            assert close_code(info) == CloseCode.RIGHTS_CHANGED


async def test_ending_care_closes_the_care_teams_sockets(hub: LiveHub) -> None:
    """Ending a care relationship cuts live access: practitioner, patient, delegate closed."""
    accounts = hub.components.accounts
    async with httpx.AsyncClient(base_url=hub.api) as http:
        org = await accounts.admin.create_org(None, "Clinique C")
        now = time.time()
        admin = await enrol(http, accounts, org.id, "admin", "adm@c.example", now)
        doc = await enrol(http, accounts, org.id, "practitioner", "doc@c.example", now)
        pat = await enrol(http, accounts, org.id, "patient", "pat@c.example", now)
        sec = await enrol(http, accounts, org.id, "secretary", "sec@c.example", now)
        body = {"practitioner_id": doc.user_id, "delegate_id": sec.user_id, "scopes": ["contact"]}
        r = await http.post("/delegations", json=body, headers=_bearer(doc))
        assert r.status_code == 201, r.text
        body = {"kind": "follows", "actor_id": doc.user_id, "patient_id": pat.user_id}
        r = await http.post("/care-relationships", json=body, headers=_bearer(admin))
        assert r.status_code == 201, r.text
        rel_id = r.json()["id"]
        async with contextlib.AsyncExitStack() as stack:
            sockets = {}
            for who in (doc, pat, sec, admin):
                ws = await stack.enter_async_context(
                    connect(hub.url, subprotocols=[SUBPROTOCOL_JSON])  # type: ignore[list-item]
                )
                welcome = await _hello(ws, {"method": "token", "token": who.token})
                assert welcome["type"] == "welcome"
                sockets[who.user_id] = ws
            r = await http.delete(f"/care-relationships/{rel_id}", headers=_bearer(admin))
            assert r.status_code == 200, r.text
            for who in (doc, pat, sec):
                with pytest.raises(ConnectionClosed) as info:
                    async with asyncio.timeout(5):
                        while True:
                            await sockets[who.user_id].recv()
                assert close_code(info) == CloseCode.RIGHTS_CHANGED, who.email
            # the admin's rights did not change: their socket stays open
            ping = await Client(sockets[admin.user_id], binary=False).request(
                {"type": "ping", "id": 1}
            )
            assert ping["type"] == "result"


def _bearer(who: Enrolled) -> dict[str, str]:
    return {"authorization": f"Bearer {who.token}"}


def test_only_accounts_serves_no_websocket(tmp_path: Path) -> None:
    app = build_app(accounts_settings(tmp_path), only="accounts")
    inner = getattr(app, "app", app)  # the hub's ASGI wrapper holds the Starlette app
    paths = {getattr(r, "path", None) for r in inner.routes}
    assert "/api/v1" in paths
    assert "/ws" not in paths
    assert getattr(app, "endpoint", None) is None
