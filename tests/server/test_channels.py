"""The node channel service on its own: a memory broker, fake sockets, a fake store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from protocol.messages import Event
from server.broker.base import BrokerError, MessageHandler, Subscription
from server.broker.memory import MemoryBroker
from server.channels import ChannelClass, ChannelService, encode_event, inbox_of
from server.peer import Peer
from server.sendqueue import Delivery
from server.supervise import Supervisor
from tests.fakepeer import FakePeer

CH = "room:r1"


class Store:
    """Committed events of every channel, as a store would hold them (the Recovery)."""

    def __init__(self) -> None:
        self.events: dict[str, list[tuple[int, bytes]]] = {}
        self.fail_reads = False
        self.reads = 0

    def commit(self, channel: str, text: str) -> tuple[int, bytes]:
        evs = self.events.setdefault(channel, [])
        seq = len(evs) + 1
        evs.append((seq, encode_event(channel, seq, "message", {"text": text})))
        return evs[-1]

    async def read_range(self, channel: str, after: int, until: int) -> list[tuple[int, bytes]]:
        self.reads += 1
        if self.fail_reads:
            raise OSError("store down")
        return [e for e in self.events.get(channel, []) if after < e[0] < until]

    async def last_seqs(self, channels: Sequence[str]) -> dict[str, int]:
        return {c: len(self.events[c]) for c in channels if c in self.events}


class FlakyBroker(MemoryBroker):
    """A node whose publishes can fail and whose subscribes can be held or fail."""

    def __init__(self, other: MemoryBroker) -> None:
        super().__init__(other.backend)
        self.fail_publish = False
        self.fail_subscribe = 0
        self.subscribe_gate: asyncio.Event | None = None
        self.subscribe_calls = 0

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        if self.fail_publish:
            raise BrokerError("pub/sub down")
        await super().publish_many(messages)

    async def subscribe_many(
        self, topics: Sequence[str], handler: MessageHandler
    ) -> list[Subscription]:
        self.subscribe_calls += 1
        if self.subscribe_gate is not None:
            await self.subscribe_gate.wait()
        if self.fail_subscribe:
            self.fail_subscribe -= 1
            raise BrokerError("subscribe failed")
        return await super().subscribe_many(topics, handler)


@pytest.fixture
async def backend() -> AsyncIterator[MemoryBroker]:
    b = MemoryBroker()
    await b.start()
    yield b
    await b.close()


class NodeUnderTest:
    def __init__(self, broker: FlakyBroker, store: Store, **kw: Any) -> None:
        self.broker = broker
        self.registry = CollectorRegistry()
        self.supervisor = Supervisor(self.registry)
        self.channels = ChannelService(broker, self.supervisor, self.registry, **kw)
        self.channels.define(ChannelClass("room", Delivery.RELIABLE, store))
        self.channels.define(ChannelClass("state", Delivery.COALESCE))
        self.channels.define(
            ChannelClass(
                "feed",
                Delivery.LOSSY,
                gap_marker=lambda ch, n: Event(ch=ch, seq=0, kind="gap", data={"skipped": n}),
            )
        )

    def metric(self, name: str) -> float:
        return self.registry.get_sample_value(name) or 0.0

    async def close(self) -> None:
        await self.channels.close()
        await self.supervisor.close()


@pytest.fixture
async def nodes(backend: MemoryBroker) -> AsyncIterator[Any]:
    made: list[NodeUnderTest] = []

    async def make(store: Store, **kw: Any) -> NodeUnderTest:
        broker = FlakyBroker(backend)
        await broker.start()
        n = NodeUnderTest(broker, store, **kw)
        await n.channels.start()
        made.append(n)
        return n

    yield make
    for n in made:
        await n.close()


def peer(user: str = "alice", conn_id: str = "k1", **kw: Any) -> tuple[FakePeer, Peer]:
    p = FakePeer(user, conn_id, **kw)
    return p, cast(Peer, p)


async def test_a_lost_last_event_reaches_every_node(nodes: Any) -> None:
    store = Store()
    here, there = await nodes(store), await nodes(store, check_interval_s=0.05)
    local, local_p = peer("alice", "a")
    remote, remote_p = peer("bob", "b")
    await here.channels.attach(local_p, CH)
    await there.channels.attach(remote_p, CH)

    here.broker.fail_publish = True
    here.channels.committed(CH, [store.commit(CH, "lost")])
    assert local.seqs() == [1]  # the committing node delivers without the broker
    await remote.wait_for(lambda p: p.seqs() == [1])  # the other node finds it at its check
    await here.supervisor.wait_spawned(1.0)
    assert here.metric("medhub_channel_publish_failures_total") == 1
    assert there.metric("medhub_channel_gap_fills_total") == 1

    here.broker.fail_publish = False
    here.channels.committed(CH, [store.commit(CH, "delivered")])
    await remote.wait_for(lambda p: p.seqs() == [1, 2])
    await here.supervisor.wait_spawned(1.0)
    await asyncio.sleep(0)  # the broker's copy comes back to the committing node too
    assert (local.seqs(), remote.seqs()) == ([1, 2], [1, 2])  # and is never delivered twice


async def test_one_subscription_per_topic_per_node_whatever_the_sockets(nodes: Any) -> None:
    store = Store()
    n = await nodes(store)
    peers = [peer("alice", f"k{i}") for i in range(50)]
    await asyncio.gather(*(n.channels.attach(p, CH) for _, p in peers))
    assert n.broker.subscribe_calls == 1
    for _, p in peers[:-1]:
        n.channels.detach(p, CH)
    assert n.channels.channel(CH) is not None  # one follower left: still subscribed
    n.channels.detach(peers[-1][1], CH)
    await n.supervisor.wait_spawned(1.0)
    assert n.channels.channel(CH) is None
    await n.channels.attach(peers[0][1], CH)
    assert n.broker.subscribe_calls == 2


async def test_a_run_goes_out_as_one_batch_shared_by_every_socket(nodes: Any) -> None:
    store = Store()
    n = await nodes(store)
    binary = [peer("alice", f"b{i}") for i in range(3)]
    text = [peer("bob", f"t{i}", binary=False) for i in range(2)]
    for _, p in binary + text:
        await n.channels.attach(p, CH)
    n.channels.committed(CH, [store.commit(CH, "one"), store.commit(CH, "two")])
    first = binary[0][0].batches[0]
    assert first.count == 2
    assert all(f.batches == [first] for f, _ in binary)  # the very same buffer
    assert text[0][0].batches[0] is text[1][0].batches[0] is not first
    for fake, _ in binary + text:
        events = fake.drain()
        assert [(e["seq"], e["data"]["text"]) for e in events] == [(1, "one"), (2, "two")]


async def test_events_during_a_replay_are_buffered_then_sent_once(nodes: Any) -> None:
    store = Store()
    n = await nodes(store)
    fake, p = peer()
    for text in ("a", "b"):
        store.commit(CH, text)
    att = await n.channels.attach(p, CH, buffering=True)
    n.channels.committed(CH, [store.commit(CH, "c")])  # arrives while history is replayed
    assert fake.seqs() == []
    att.go_live(3)  # the replay covered 1..3 already
    assert fake.seqs() == []
    n.channels.committed(CH, [store.commit(CH, "d")])
    assert fake.seqs() == [4]


async def test_a_follower_waiting_on_a_failed_subscribe_subscribes_itself(nodes: Any) -> None:
    store = Store()
    n = await nodes(store)
    n.broker.subscribe_gate = asyncio.Event()
    n.broker.fail_subscribe = 1
    first, first_p = peer("alice", "a")
    second, second_p = peer("bob", "b")
    tasks = [asyncio.create_task(n.channels.attach(p, CH)) for p in (first_p, second_p)]
    await asyncio.sleep(0)
    assert n.broker.subscribe_calls == 1  # the second waits on the first's subscribe
    n.broker.subscribe_gate.set()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[0], BrokerError)
    assert not n.channels.following(first_p, CH)
    assert n.channels.following(second_p, CH)
    assert n.broker.subscribe_calls == 2
    n.channels.committed(CH, [store.commit(CH, "hello")])
    assert (first.seqs(), second.seqs()) == ([], [1])


async def test_a_socket_that_closes_during_its_attach_is_not_kept(nodes: Any) -> None:
    store = Store()
    n = await nodes(store)
    n.broker.subscribe_gate = gate = asyncio.Event()
    fake, p = peer()
    task = asyncio.create_task(n.channels.attach(p, CH))
    await asyncio.sleep(0)
    fake.close(1001, "gone")
    n.channels.close_peer(p)  # the hub's cleanup runs before the subscribe returns
    gate.set()
    await task
    assert not n.channels.following(p, CH)


async def test_a_store_that_stays_down_sends_followers_away_to_resume(nodes: Any) -> None:
    store = Store()
    n = await nodes(store, fill_attempts=2)
    fake, p = peer()
    await n.channels.attach(p, CH)
    store.commit(CH, "missed")
    store.fail_reads = True
    n.channels.committed(CH, [store.commit(CH, "ahead")])  # seq 2 waits for seq 1
    await fake.wait_for(lambda f: f.closing)
    assert fake.closed_with == (1013, "recovery failed: resume later")
    assert store.reads == 2
    assert n.metric("medhub_channel_recovery_giveups_total") == 1


async def test_coalescing_channels_keep_only_the_latest_state(nodes: Any) -> None:
    n = await nodes(Store())
    fake, p = peer()
    await n.channels.attach(p, "state:bob")
    seen: asyncio.Queue[bytes] = asyncio.Queue()  # subscribed after the node: hears after it
    await n.broker.subscribe("state:bob", lambda topic, payload: seen.put_nowait(payload))
    for state in ("online", "away", "busy"):
        await n.channels.publish("state:bob", encode_event("state:bob", 0, "presence", state))
    for _ in range(3):
        await asyncio.wait_for(seen.get(), 3.0)
    assert [m["data"] for m in fake.drain()] == ["busy"]  # a slow socket: the latest only


async def test_a_lossy_follower_gets_a_gap_marker_before_the_next_frame(nodes: Any) -> None:
    n = await nodes(Store())
    slow, slow_p = peer("alice", "slow", max_messages=4)  # lossy: at most 2 queued
    fast, fast_p = peer("bob", "fast")
    for p in (slow_p, fast_p):
        await n.channels.attach(p, "feed:eeg")
    for i in range(5):
        await n.channels.publish("feed:eeg", encode_event("feed:eeg", 0, "frame", i))
    await fast.wait_for(lambda f: len(f.received) == 5)
    assert [m["data"] for m in slow.drain()] == [0, 1]  # the other 3 were skipped
    await n.channels.publish("feed:eeg", encode_event("feed:eeg", 0, "frame", 5))
    await slow.wait_for(lambda f: len(f.received) == 4)
    assert [(m["kind"], m["data"]) for m in slow.received[2:]] == [
        ("gap", {"skipped": 3}),
        ("frame", 5),
    ]
    assert [m["data"] for m in fast.received] == [0, 1, 2, 3, 4]
    assert n.metric("medhub_channel_gap_markers_total") == 1


async def test_inbox_notices_reach_the_users_sockets_on_every_node(nodes: Any) -> None:
    store = Store()
    here, there = await nodes(store), await nodes(store)
    got: list[tuple[str, list[str], Any]] = []
    there.channels.on_inbox("ring", lambda u, ps, d: got.append((u, [p.conn_id for p in ps], d)))
    _, bob1 = peer("bob", "b1")
    _, bob2 = peer("bob", "b2")
    _, carol = peer("carol", "c1")
    for p in (bob1, bob2, carol):
        await there.channels.open_peer(p)
    await here.channels.notify_users(["bob"], "ring", {"call": "x"})
    async with asyncio.timeout(3):
        while not got:
            await asyncio.sleep(0.01)
    assert got == [("bob", ["b1", "b2"], {"call": "x"})]
    there.channels.close_peer(bob1)
    there.channels.close_peer(bob2)
    await there.supervisor.wait_spawned(1.0)
    assert there.channels.channel(inbox_of("bob")) is None  # unsubscribed with its last socket
    assert there.channels.channel(inbox_of("carol")) is not None


async def test_follows_of_many_channels_take_one_broker_call(nodes: Any) -> None:
    n = await nodes(Store())
    _, p = peer()
    await n.channels.attach_many(p, [f"state:u{i}" for i in range(300)])
    assert n.broker.subscribe_calls == 1
    frame = encode_event("state:u7", 0, "presence", "busy")
    fake = cast(FakePeer, p)
    await n.channels.publish("state:u7", frame)
    await fake.wait_for(lambda f: len(f.received) == 1)
    assert msgspec.msgpack.decode(frame)["data"] == fake.received[0]["data"]


async def test_a_crowded_channel_is_served_over_several_loop_steps_in_order(nodes: Any) -> None:
    from server.channels.reliable import DELIVERY_CHUNK

    store = Store()
    n = await nodes(store)
    crowd = [peer("alice", f"k{i}") for i in range(DELIVERY_CHUNK * 2 + 10)]
    for _, p in crowd:
        await n.channels.attach(p, CH)
    n.channels.committed(CH, [store.commit(CH, "one")])
    n.channels.committed(CH, [store.commit(CH, "two")])
    served = sum(1 for fake, _ in crowd if fake.batches)
    assert served == DELIVERY_CHUNK  # one chunk now: the loop is not held by the whole crowd
    for _ in range(10):
        await asyncio.sleep(0)
    assert all(fake.seqs() == [1, 2] for fake, _ in crowd)  # everyone, in order, once


async def test_a_commit_too_large_for_one_broker_message_reaches_every_node(nodes: Any) -> None:
    store = Store()
    here, there = await nodes(store), await nodes(store)  # no periodic check: broker only
    remote, remote_p = peer("bob", "b", max_messages=4096)
    await there.channels.attach(remote_p, CH)

    # 1,500 events of ~1 KiB in one commit: about 1.5 MiB, over the broker's 1 MiB limit
    batch = [store.commit(CH, "x" * 1000) for _ in range(1500)]
    here.channels.committed(CH, batch)
    await remote.wait_for(lambda p: p.seqs() == list(range(1, 1501)))
    await here.supervisor.wait_spawned(1.0)
    assert here.metric("medhub_channel_publish_failures_total") == 0
    assert there.metric("medhub_channel_gap_fills_total") == 0  # none went missing
