"""A live socket ends with its login session: at the absolute end, and at the idle end.

Real hub, real socket, real accounts authenticator, short timeouts from settings.
Activity on the socket (requests) keeps its session alive past the idle timeout.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from protocol.codec import SUBPROTOCOL_JSON
from protocol.errors import CloseCode
from server.session_watch import SESSION_EXPIRED
from tests.accountstest import Enrolled, LiveHub, accounts_settings, enrol, run_accounts_hub
from tests.hubtest import Client


async def _enrolled(hub: LiveHub, http: httpx.AsyncClient, email: str) -> Enrolled:
    org = await hub.components.accounts.admin.create_org(None, "Clinique A")
    return await enrol(http, hub.components.accounts, org.id, "practitioner", email, time.time())


async def _open(ws: ClientConnection, token: str) -> Client:
    c = Client(ws, binary=False)
    welcome = await c.request(
        {"type": "hello", "id": "h", "auth": {"method": "token", "token": token}}
    )
    assert welcome["type"] == "welcome", welcome
    return c


async def _closed(ws: ClientConnection, timeout: float) -> Any:
    """Read until the server closes; the close frame received."""
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    return info.value.rcvd


async def test_socket_closes_at_the_sessions_absolute_end(tmp_path: Path) -> None:
    settings = accounts_settings(tmp_path, session_absolute_timeout_s=2.0)
    async with run_accounts_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api) as http:
        u = await _enrolled(hub, http, "abs@a.example")
        async with connect(hub.url, subprotocols=[SUBPROTOCOL_JSON]) as ws:  # type: ignore[list-item]
            c = await _open(ws, u.token)
            assert (await c.request({"type": "ping", "id": 1}))["type"] == "result"
            started = time.monotonic()
            rcvd = await _closed(ws, 10.0)
            assert rcvd is not None
            assert (rcvd.code, rcvd.reason) == (CloseCode.SESSION_REVOKED, SESSION_EXPIRED)
            assert time.monotonic() - started < 3.5  # the tick is 1 s at most
        r = await http.get("/session", headers={"authorization": f"Bearer {u.token}"})
        assert r.status_code == 401


async def test_idle_sessions_socket_is_closed(tmp_path: Path) -> None:
    settings = accounts_settings(tmp_path, session_idle_timeout_s=2.0)
    async with run_accounts_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api) as http:
        u = await _enrolled(hub, http, "idle@a.example")
        async with connect(hub.url, subprotocols=[SUBPROTOCOL_JSON]) as ws:  # type: ignore[list-item]
            await _open(ws, u.token)
            rcvd = await _closed(ws, 10.0)  # no request: the session idles out
            assert rcvd is not None
            assert (rcvd.code, rcvd.reason) == (CloseCode.SESSION_REVOKED, SESSION_EXPIRED)
        r = await http.get("/session", headers={"authorization": f"Bearer {u.token}"})
        assert r.status_code == 401


async def test_an_active_socket_keeps_its_session_alive(tmp_path: Path) -> None:
    settings = accounts_settings(tmp_path, session_idle_timeout_s=2.0, ws_heartbeat_interval_s=0.25)
    async with run_accounts_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api) as http:
        u = await _enrolled(hub, http, "busy@a.example")
        async with connect(hub.url, subprotocols=[SUBPROTOCOL_JSON]) as ws:  # type: ignore[list-item]
            c = await _open(ws, u.token)
            started, n = time.monotonic(), 0
            # The server's heartbeats pace the client: one request per heartbeat,
            # for three idle timeouts.
            while time.monotonic() - started < 6.0:
                await c.recv_type("heartbeat")
                n += 1
                assert (await c.request({"type": "ping", "id": n}))["type"] == "result"
        r = await http.get("/session", headers={"authorization": f"Bearer {u.token}"})
        assert r.status_code == 200, r.text
