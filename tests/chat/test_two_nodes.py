"""Two hub processes' worth of nodes on one real Redis and one real PostgreSQL.

The multi-node deployment of the README: every node has its own ``node_id`` and
``data_dir`` and the same secrets, broker and database. Chat, presence and the
audit chain must behave as on one node, over real sockets.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from server.audit import ops, store
from server.audit.checkpoints import FileCheckpointSink
from server.audit.keys import keyring
from server.config import Settings
from server.store.db import Database
from tests.chat.conftest import CARE, DELEGATED, PEOPLE
from tests.chat.helpers import Peer, open_peer, peer, principals, seed
from tests.hubtest import RunningHub, hub_settings, run_hub
from tests.pg import PostgresServer, fresh_database, start_postgres
from tests.services import start_redis

__all__ = ["start_postgres"]

SECRETS = {
    "secret_at_rest_key": base64.b64encode(bytes(range(32))).decode(),
    "secret_audit_key": base64.b64encode(bytes(range(32, 64))).decode(),
    "secret_totp_key": base64.b64encode(bytes(range(64, 96))).decode(),
    "secret_turn": base64.b64encode(bytes(range(96, 128))).decode(),
}


@dataclass
class Cluster:
    a: RunningHub
    b: RunningHub
    database_url: str
    settings: tuple[Settings, Settings]

    @property
    def sinks(self) -> list[FileCheckpointSink]:
        return [FileCheckpointSink(s.effective_checkpoint_path) for s in self.settings]


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path, pg: PostgresServer) -> AsyncIterator[Cluster]:
    """Node A and node B sharing a private redis-server and a fresh PostgreSQL database.

    Node A starts first and migrates; the accounts facts are seeded once.
    """
    redis = start_redis(tmp_path / "redis")
    try:
        database_url = await fresh_database(pg)
        common: dict[str, Any] = {
            "broker": "redis",
            "redis_url": redis.url,
            "database_url": database_url,
            "ws_rate_per_s": 100000.0,
            "ws_rate_burst": 100000,
            "audit_checkpoint_every": 50,
            **SECRETS,
        }
        settings = (
            hub_settings(tmp_path / "a", node_id="node-a", **common),
            hub_settings(tmp_path / "b", node_id="node-b", **common),
        )
        assert settings[0].data_dir != settings[1].data_dir
        users = principals(PEOPLE)
        async with run_hub(settings[0], users) as a:
            await seed(a.components.database, PEOPLE, care=CARE, delegated=DELEGATED)
            async with run_hub(settings[1], users) as b:
                assert a.components.hub.node_id != b.components.hub.node_id
                yield Cluster(a, b, database_url, settings)
    finally:
        redis.stop()


@pytest.fixture
async def nodes(tmp_path: Path, start_postgres: PostgresServer) -> AsyncIterator[Cluster]:
    async with two_nodes(tmp_path, start_postgres) as cluster:
        yield cluster


async def messages(p: Peer, n: int) -> list[dict[str, Any]]:
    """The next ``n`` message events of ``p`` (other events are skipped)."""
    return [await p.event("message") for _ in range(n)]


async def open_direct(alice: Peer, bob: Peer) -> str:
    """alice creates a direct conversation with bob; bob hears of it and follows."""
    created = await alice.ok("chat.create", kind="direct", members=["bob"])
    assert created["created"] is True
    conv: str = created["conv"]
    notice = await bob.event("conversation")
    assert notice["data"]["conv"] == conv
    assert set(notice["data"]["members"]) == {"alice", "bob"}
    assert await bob.ok("chat.sync", conv=conv, after_seq=0) == {"last_seq": 0, "caught_up": True}
    return conv


async def next_presence(p: Peer, user: str, state: str) -> dict[str, Any]:
    """The first presence update of ``user`` in ``state`` that ``p`` receives."""
    while True:
        ev = await p.event("presence")
        if ev["data"]["user"] == user and ev["data"]["state"] == state:
            assert ev["ch"] == f"presence:{user}"
            data: dict[str, Any] = ev["data"]
            return data


async def test_direct_chat_crosses_nodes(nodes: Cluster) -> None:
    async with peer(nodes.a, "alice") as alice, peer(nodes.b, "bob", binary=False) as bob:
        conv = await open_direct(alice, bob)
        texts = ["hello bob", "from node a", "third"]
        for i, text in enumerate(texts, 1):
            ack = await alice.ok("chat.send", conv=conv, client_msg_id=f"a{i}", text=text)
            assert ack == {"seq": i, "duplicate": False}
        got = await messages(bob, 3)
        assert [(e["ch"], e["seq"], e["data"]["sender"], e["data"]["text"]) for e in got] == [
            (f"conv:{conv}", i, "alice", t) for i, t in enumerate(texts, 1)
        ]
        ack = await bob.ok("chat.send", conv=conv, client_msg_id="b1", text="hi from node b")
        assert ack == {"seq": 4, "duplicate": False}
        mine = await messages(alice, 4)  # her own three, then bob's reply from node B
        assert [e["seq"] for e in mine] == [1, 2, 3, 4]
        assert (mine[3]["data"]["sender"], mine[3]["data"]["text"]) == ("bob", "hi from node b")
        # a retry on the other node still answers the original seq
        retry = await bob.ok("chat.send", conv=conv, client_msg_id="b1", text="hi from node b")
        assert retry == {"seq": 4, "duplicate": True}
        for p in (alice, bob):
            page = await p.ok("chat.history", conv=conv, limit=10)
            assert [e["seq"] for e in page["events"]] == [1, 2, 3, 4]


async def test_concurrent_senders_on_two_nodes_share_one_sequence(nodes: Cluster) -> None:
    per_node = 50
    async with peer(nodes.a, "alice") as alice, peer(nodes.b, "bob") as bob:
        conv = await open_direct(alice, bob)

        async def send_all(p: Peer, who: str) -> list[int]:
            seqs = []
            for i in range(per_node):
                ack = await p.ok(
                    "chat.send", conv=conv, client_msg_id=f"{who}{i}", text=f"{who}{i}"
                )
                assert ack["duplicate"] is False
                seqs.append(ack["seq"])
            return seqs

        acked_a, acked_b = await asyncio.gather(send_all(alice, "a"), send_all(bob, "b"))
        # each node's seqs grow in send order; together they are 1..100, each once
        assert acked_a == sorted(acked_a)
        assert acked_b == sorted(acked_b)
        assert sorted(acked_a + acked_b) == list(range(1, 2 * per_node + 1))

        seen_a, seen_b = await asyncio.gather(
            messages(alice, 2 * per_node), messages(bob, 2 * per_node)
        )
        order = [(e["seq"], e["data"]["sender"], e["data"]["text"]) for e in seen_a]
        assert [s for s, _, _ in order] == list(range(1, 2 * per_node + 1))
        assert order == [(e["seq"], e["data"]["sender"], e["data"]["text"]) for e in seen_b]
        by_seq = {s: t for s, _, t in order}
        assert [by_seq[s] for s in acked_a] == [f"a{i}" for i in range(per_node)]
        assert [by_seq[s] for s in acked_b] == [f"b{i}" for i in range(per_node)]
        for p in (alice, bob):
            page = await p.ok("chat.history", conv=conv, limit=200)
            assert [e["seq"] for e in page["events"]] == list(range(1, 2 * per_node + 1))
            # that reply came after every event queued for the socket: no duplicate
            assert all(ev["kind"] != "message" for ev in drain(p))


def drain(p: Peer) -> list[dict[str, Any]]:
    """Events already queued for ``p`` (no waiting)."""
    out = []
    while not p.events.empty():
        out.append(p.events.get_nowait())
    return out


async def test_presence_crosses_nodes(nodes: Cluster) -> None:
    async with peer(nodes.b, "bob") as bob:
        snap = await bob.ok("presence.subscribe", users=["alice"])
        assert snap["refused"] == []
        assert [(s["user"], s["state"]) for s in snap["presence"]] == [("alice", "offline")]
        alice = await open_peer(nodes.a, "alice")
        try:
            await next_presence(bob, "alice", "online")
            assert await alice.ok("presence.set", state="busy") == {"state": "busy"}
            await next_presence(bob, "alice", "busy")
        finally:
            await alice.close()
        gone = await next_presence(bob, "alice", "offline")
        assert gone["last_seen"] > 0
        again = await bob.ok("presence.get", users=["alice"])
        assert again["presence"][0]["state"] == "offline"


async def test_audit_chain_stays_intact_with_two_writers(
    tmp_path: Path, start_postgres: PostgresServer
) -> None:
    async with two_nodes(tmp_path, start_postgres) as cluster:
        keys = keyring(cluster.settings[0])
        assert keys == keyring(cluster.settings[1])
        async with peer(cluster.a, "alice") as alice, peer(cluster.b, "bob") as bob:
            conv = await open_direct(alice, bob)
            await bob.ok("presence.subscribe", users=["alice"])

            async def chatter(p: Peer, who: str) -> None:
                for i in range(40):
                    await p.ok("chat.send", conv=conv, client_msg_id=f"{who}{i}", text="x")
                    if i % 10 == 0:
                        await p.ok("chat.history", conv=conv, limit=5)

            await asyncio.gather(chatter(alice, "a"), chatter(bob, "b"))
            await messages(bob, 80)
        for hub in (cluster.a, cluster.b):
            await hub.components.audit.flush()
        db = cluster.a.components.database
        live = await ops.verify_log(db, keys, sinks=cluster.sinks)
        assert live.first_break is None, live
        assert live.checked > 0
        assert live.checkpoints_checked >= 2
    # both nodes stopped (their last entries and checkpoints written): still intact
    async with Database(cluster.database_url) as db:
        final = await ops.verify_log(db, keys, sinks=cluster.sinks)
        nodes_seen = set()
        async for entry in store.iter_entries(db):
            nodes_seen.add(entry.node)
    assert final.first_break is None, final
    assert final.checked >= live.checked
    assert final.first_seq == 1
    assert nodes_seen == {"node-a", "node-b"}
