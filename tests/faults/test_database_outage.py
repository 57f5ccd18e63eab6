"""PostgreSQL stopped for 5 s under chat traffic: every failure is a retryable
``unavailable`` (never ``internal``), nothing acknowledged is lost, and chat
resumes by itself once the database is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.chat.conftest import PEOPLE
from tests.chat.helpers import Peer, peer, principals, seed
from tests.hubtest import RunningHub, hub_settings, run_hub
from tests.pg import PostgresServer, fresh_database

OUTAGE_S = 5.0


@pytest.fixture
async def pg() -> AsyncIterator[PostgresServer]:
    server = PostgresServer()  # our own: this test stops it
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def hub(tmp_path: Path, pg: PostgresServer) -> AsyncIterator[RunningHub]:
    url = await fresh_database(pg)
    settings = hub_settings(
        tmp_path, database_url=url, ws_rate_per_s=100000.0, ws_rate_burst=100000
    )
    async with run_hub(settings, principals(PEOPLE)) as running:
        await seed(running.components.database, PEOPLE)
        yield running


async def send_until_stored(alice: Peer, conv: str, cid: str, codes: list[str]) -> int:
    """Send with the same client id until acknowledged; every error code is kept."""
    while True:
        reply = await alice.call("chat.send", conv=conv, client_msg_id=cid, text=cid)
        if reply["type"] == "result":
            return int(reply["data"]["seq"])
        codes.append(reply["code"])
        assert reply.get("retry_after_s"), reply
        await asyncio.sleep(min(float(reply["retry_after_s"]), 0.2))  # as a client would


@pytest.mark.slow
async def test_a_database_outage_answers_unavailable_and_loses_nothing(
    hub: RunningHub, pg: PostgresServer
) -> None:
    async with peer(hub, "alice") as alice, peer(hub, "bob") as bob:
        conv = (await alice.ok("chat.create", kind="direct", members=["bob"]))["conv"]
        await bob.ok("chat.sync", conv=conv)
        codes: list[str] = []
        acked: dict[str, int] = {}
        n = 0

        stop = asyncio.Event()

        async def traffic(until: float) -> None:
            nonlocal n
            while time.monotonic() < until and not stop.is_set():
                cid = f"m{n}"
                n += 1
                acked[cid] = await send_until_stored(alice, conv, cid, codes)

        await traffic(time.monotonic() + 1.0)
        before = len(acked)
        pg.halt()
        outage = asyncio.create_task(traffic(float("inf")))
        await asyncio.sleep(OUTAGE_S)  # the outage itself: traffic keeps hitting it
        await asyncio.to_thread(pg.launch)
        recovered = time.monotonic() + 60
        while len(acked) < before + 20:  # chat works again by itself
            assert time.monotonic() < recovered, "chat did not come back within 60 s"
            assert not outage.done(), outage
            await asyncio.sleep(0.05)
        stop.set()  # the send in flight finishes: its acknowledgement is counted
        await asyncio.wait_for(outage, 60)

        assert codes, "the outage was never noticed"
        assert set(codes) == {"unavailable"}  # never internal, never another code
        seqs = sorted(acked.values())
        assert seqs == list(range(1, len(seqs) + 1))  # each stored once, in order
        got: list[int] = []
        while len(got) < len(seqs):  # the follower gets every acknowledged message once
            got.append((await bob.event("message", timeout=30))["seq"])
        assert got == seqs
