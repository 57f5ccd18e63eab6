"""Access changes take effect on every node through the change log, not one pub/sub message:
a CLI revocation reaches a running server, a lost notice changes nothing, caches never
outlive a change."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from protocol.codec import SUBPROTOCOL_JSON
from protocol.errors import CloseCode
from server.accounts.access_log import AccessWatch, Change, ChangeKind, record
from server.accounts.revocation import Revocations
from server.accounts.tables import access_changes
from server.store.db import Database
from server.store.migrate import upgrade_to_head_async
from tests.accountstest import accounts_settings, enrol, run_accounts_hub
from tests.hubtest import close_code
from tests.server.serveproc import medhub_env, run

WAIT_S = 5.0  # generous: the poll interval is 0.5 s


async def _hello(ws: Any, token: str) -> dict[str, Any]:
    import json

    await ws.send(
        json.dumps({"type": "hello", "id": 1, "auth": {"method": "token", "token": token}})
    )
    return dict(json.loads(await ws.recv()))


async def _closed_with(ws: Any) -> int | None:
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(WAIT_S):
            while True:
                await ws.recv()
    return close_code(info)


async def test_a_disable_from_the_cli_reaches_the_running_server(tmp_path: Path) -> None:
    """Embedded default: the CLI is another process with its own memory broker."""
    settings = accounts_settings(tmp_path)
    async with run_accounts_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api) as http:
        accounts = hub.components.accounts
        org = await accounts.admin.create_org(None, "Clinique C")
        u = await enrol(http, accounts, org.id, "practitioner", "cli@c.example", time.time())
        auth = {"authorization": f"Bearer {u.token}"}
        assert (await http.get("/session", headers=auth)).status_code == 200  # now cached
        async with connect(hub.url, subprotocols=[SUBPROTOCOL_JSON]) as ws:  # type: ignore[list-item]
            assert (await _hello(ws, u.token))["type"] == "welcome"
            env = medhub_env(Path(settings.data_dir), argon2_time_cost=1, argon2_memory_kib=1024)
            await asyncio.to_thread(run, ["admin", "user", "disable", u.user_id], env)
            assert await _closed_with(ws) == CloseCode.SESSION_REVOKED
        assert (await http.get("/session", headers=auth)).status_code == 401  # not the cache


async def test_a_lost_notice_still_changes_rights_everywhere(tmp_path: Path) -> None:
    settings = accounts_settings(tmp_path)
    async with run_accounts_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api) as http:
        accounts = hub.components.accounts
        org = await accounts.admin.create_org(None, "Clinique L")
        now = time.time()
        doc = await enrol(http, accounts, org.id, "practitioner", "doc@l.example", now)
        sec = await enrol(http, accounts, org.id, "secretary", "sec@l.example", now)
        body = {"practitioner_id": doc.user_id, "delegate_id": sec.user_id, "scopes": ["contact"]}
        auth = {"authorization": f"Bearer {doc.token}"}
        did = (await http.post("/delegations", json=body, headers=auth)).json()["id"]

        async def lost(self: Revocations) -> None:  # pub/sub is at-most-once: lose it
            return None

        original = Revocations._notify
        Revocations._notify = lost  # type: ignore[method-assign]
        try:
            async with connect(hub.url, subprotocols=[SUBPROTOCOL_JSON]) as ws:  # type: ignore[list-item]
                assert (await _hello(ws, sec.token))["type"] == "welcome"
                r = await http.delete(f"/delegations/{did}", headers=auth)
                assert r.status_code == 200
                assert await _closed_with(ws) == CloseCode.RIGHTS_CHANGED
        finally:
            Revocations._notify = original  # type: ignore[method-assign]


async def test_an_authenticated_request_costs_one_query_then_none(tmp_path: Path) -> None:
    settings = accounts_settings(tmp_path)
    async with run_accounts_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api) as http:
        accounts = hub.components.accounts
        org = await accounts.admin.create_org(None, "Clinique Q")
        u = await enrol(http, accounts, org.id, "practitioner", "q@q.example", time.time())
        sessions = accounts.service.sessions
        calls = 0
        real = sessions.with_user

        async def counted(**kw: Any) -> Any:
            nonlocal calls
            calls += 1
            return await real(**kw)

        sessions.with_user = counted  # type: ignore[method-assign]
        accounts.service.cache.clear()
        auth = {"authorization": f"Bearer {u.token}"}
        for _ in range(20):
            assert (await http.get("/session", headers=auth)).status_code == 200
        assert calls == 1
        await http.post("/logout", headers=auth)
        assert (await http.get("/session", headers=auth)).status_code == 401


async def test_the_watch_applies_each_change_once_even_when_a_lower_seq_commits_late(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"
    await upgrade_to_head_async(url)
    applied: list[Change] = []
    async with Database(url) as db:
        watch = AccessWatch(db, applied.extend, interval_s=60.0)
        await watch.poll()  # starts after what exists
        async with db.begin() as conn:
            await record(conn, ChangeKind.RIGHTS, ["u1"], 1)
            await record(conn, ChangeKind.SESSION, ["u2"], 1, ["s-2"])
        # a transaction that took seq 10 commits after one that took seq 11
        async with db.begin() as conn:
            await conn.execute(
                sa.insert(access_changes).values(seq=11, at_us=1, user_id="u4", kind="profile")
            )
        assert await watch.poll() == 3
        async with db.begin() as conn:
            await conn.execute(
                sa.insert(access_changes).values(seq=10, at_us=1, user_id="u3", kind="rights")
            )
        assert await watch.poll() == 1
        assert await watch.poll() == 0
    assert [(c.user_id, c.kind) for c in applied] == [
        ("u1", ChangeKind.RIGHTS),
        ("u2", ChangeKind.SESSION),
        ("u4", ChangeKind.PROFILE),
        ("u3", ChangeKind.RIGHTS),
    ]
