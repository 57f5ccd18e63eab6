"""2,000 sockets log in at once with real sessions: the handshake deadline is the
client's, not the server's queue; an overloaded node sheds with unavailable + 1013."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from protocol.codec import SUBPROTOCOL_JSON
from tests.accountstest import accounts_settings, enrol, run_accounts_hub

SOCKETS = 2000
USERS = 4


async def one_login(url: str, token: str) -> str:
    """``welcome``, or ``<error code>/<close code>``, or ``closed/<close code>``."""
    try:
        async with connect(url, subprotocols=[SUBPROTOCOL_JSON], open_timeout=60) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "hello", "id": 1,
                                      "auth": {"method": "token", "token": token}}))  # fmt: skip
            reply = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if reply["type"] == "welcome":
                return "welcome"
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as exc:
                return f"{reply['code']}/{exc.rcvd.code if exc.rcvd else None}"
            return f"{reply['code']}/open"
    except ConnectionClosed as exc:
        return f"closed/{exc.rcvd.code if exc.rcvd else None}"


@pytest.mark.slow
async def test_a_login_storm_is_welcomed_or_shed_never_timed_out(tmp_path: Path) -> None:
    settings = accounts_settings(
        tmp_path,
        ws_max_connections_per_user=SOCKETS,
        max_connections_per_address=SOCKETS * 2,
        ws_auth_concurrency=8,
        ws_auth_queue_max=1500,  # smaller than the storm: some must be shed
    )
    async with run_accounts_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api) as http:
        accounts = hub.components.accounts
        org = await accounts.admin.create_org(None, "Clinique S")
        tokens = [
            (await enrol(http, accounts, org.id, "patient", f"p{i}@s.example", time.time())).token
            for i in range(USERS)
        ]
        accounts.service.cache.clear()  # the storm starts cold
        outcomes = Counter(
            await asyncio.gather(*(one_login(hub.url, tokens[i % USERS]) for i in range(SOCKETS)))
        )
        assert set(outcomes) <= {"welcome", "unavailable/1013"}, outcomes
        assert outcomes["welcome"] >= SOCKETS // 2, outcomes
        assert (await http.get(f"{hub.http}/healthz")).status_code == 200
