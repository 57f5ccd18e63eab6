"""Calls across two hub nodes sharing a private Redis and PostgreSQL (the multi-node setup)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from protocol.calls import Signal
from server.calls.tables import call_record
from tests.calls.conftest import CALL_SETTINGS
from tests.calls.helpers import ANSWER, OFFER, candidate, open_party
from tests.chat.conftest import CARE, DELEGATED, PEOPLE
from tests.chat.helpers import principals, seed
from tests.chat.test_two_nodes import SECRETS
from tests.hubtest import RunningHub, hub_settings, run_hub
from tests.pg import PostgresServer, fresh_database, start_postgres
from tests.services import start_redis

__all__ = ["start_postgres"]


@contextlib.asynccontextmanager
async def two_nodes(
    tmp_path: Path, pg: PostgresServer
) -> AsyncIterator[tuple[RunningHub, RunningHub]]:
    redis = start_redis(tmp_path / "redis")
    try:
        common: dict[str, Any] = {
            "broker": "redis", "redis_url": redis.url,
            "database_url": await fresh_database(pg), **SECRETS, **CALL_SETTINGS,
        }  # fmt: skip
        users = principals(PEOPLE)
        async with run_hub(hub_settings(tmp_path / "a", node_id="node-a", **common), users) as a:
            await seed(a.components.database, PEOPLE, care=CARE, delegated=DELEGATED)
            async with run_hub(
                hub_settings(tmp_path / "b", node_id="node-b", **common), users
            ) as b:
                yield a, b
    finally:
        redis.stop()


@pytest.fixture
async def nodes(
    tmp_path: Path, start_postgres: PostgresServer
) -> AsyncIterator[tuple[RunningHub, RunningHub]]:
    async with two_nodes(tmp_path, start_postgres) as pair:
        yield pair


async def test_a_call_across_nodes_rings_relays_in_order_and_resumes_elsewhere(
    nodes: tuple[RunningHub, RunningHub],
) -> None:
    a, b = nodes
    alice, phone = await open_party(a, "alice"), await open_party(a, "bob")
    laptop = await open_party(b, "bob", binary=False)
    moved = None
    try:
        conv = (await alice.ok("chat.create", kind="direct", members=["bob"]))["conv"]
        call = (await alice.ok("call.invite", conv=conv, party="alice-dev-1", offer=OFFER))["call"]
        await phone.event("ring", call)
        assert (await laptop.event("ring", call))["data"]["offer"] == OFFER
        for n in range(5):  # before the answer: held on node A
            await alice.signal(Signal.CANDIDATE, call, candidate(n))
        await laptop.ok("call.accept", call=call, party="bob-laptop", answer=ANSWER)
        await phone.event("answered_elsewhere", call)
        assert (await alice.event("accepted", call))["data"]["answer"] == ANSWER
        for n in range(5, 40):
            await alice.signal(Signal.CANDIDATE, call, candidate(n))
            await laptop.signal(Signal.CANDIDATE, call, candidate(1000 + n))
        assert [await laptop.frame() for _ in range(40)] == [
            (Signal.CANDIDATE, call, candidate(n)) for n in range(40)
        ]
        assert [await alice.frame() for _ in range(35)] == [
            (Signal.CANDIDATE, call, candidate(1000 + n)) for n in range(5, 40)
        ]
        assert phone.frames.empty()

        # bob's laptop drops; bob resumes on node A
        laptop.abort()
        assert (await alice.event("reconnecting", call))["data"]["role"] == "callee"
        await alice.signal(Signal.OFFER, call, OFFER.encode())  # waits for bob
        moved = await open_party(a, "bob")
        got = await moved.ok("call.resume", call=call, party="bob-laptop")
        assert (got["state"], got["role"]) == ("connected", "callee")
        await alice.event("resumed", call)
        assert await moved.frame() == (Signal.OFFER, call, OFFER.encode())
        await moved.signal(Signal.ANSWER, call, ANSWER.encode())
        assert await alice.frame() == (Signal.ANSWER, call, ANSWER.encode())

        await alice.ok("call.hangup", call=call)
        assert (await moved.event("ended", call))["data"]["by"] == "alice"
        async with b.components.database.begin() as c:
            row = (await c.execute(sa.select(call_record).where(call_record.c.id == call))).one()
        assert (row.end_reason, row.caller, row.callee) == ("user_hangup", "alice", "bob")

        # an unanswered call rung on both nodes ends once, by its lifetime
        call = (await alice.ok("call.invite", conv=conv, party="alice-dev-1", offer=OFFER))["call"]
        assert (await phone.event("ended", call))["data"]["reason"] == "timeout"
        assert (await alice.event("ended", call))["data"]["reason"] == "timeout"
    finally:
        for p in (alice, phone, laptop, moved):
            if p is not None:
                await p.close()
