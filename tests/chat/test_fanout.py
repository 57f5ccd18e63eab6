"""The fan-out on its own: lost notices, failed subscribes, shutdown (no hub, a memory broker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import msgspec
import pytest

from protocol.chat import ChatEvent
from server.broker.base import BrokerError, MessageHandler, Subscription
from server.broker.memory import MemoryBroker
from server.chat.fanout import Fanout
from server.connection import Connection

CONV = "c-1"


class FakeConn:
    """What the fan-out uses of a socket: a binary codec and ``send_frame``."""

    closing = False

    def __init__(self) -> None:
        self.codec = type("Codec", (), {"binary": True})()
        self.seqs: list[int] = []
        self.got = asyncio.Event()

    def send_frame(self, frame: bytes, kind: str, delivery: Any, key: Any = None) -> bool:
        self.seqs.append(msgspec.msgpack.decode(frame)["seq"])
        self.got.set()
        return True

    async def wait_for(self, seqs: list[int], timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            while self.seqs != seqs:
                assert self.seqs == seqs[: len(self.seqs)], self.seqs
                self.got.clear()
                await self.got.wait()


class Store:
    """Committed events of one conversation, as the database would have them."""

    def __init__(self) -> None:
        self.events: list[ChatEvent] = []

    def commit(self, text: str) -> ChatEvent:
        seq = len(self.events) + 1
        ev = ChatEvent(seq=seq, kind="message", sender="alice", client_msg_id=f"m{seq}", at=0,
                       text=text, version=1)  # fmt: skip
        self.events.append(ev)
        return ev

    async def read_range(self, conv: str, after: int, until: int) -> list[ChatEvent]:
        return [e for e in self.events if after < e.seq < until]

    async def read_last(self, conv: str) -> int:
        return len(self.events)

    def fanout(self, broker: MemoryBroker, **kw: Any) -> Fanout:
        return Fanout(broker, self.read_range, self.read_last, **kw)


class FailingBroker(MemoryBroker):
    """A node whose publishes on ``conv:*`` fail; ``subscribe_gate`` holds subscribes."""

    def __init__(self, other: MemoryBroker) -> None:
        super().__init__(other.backend)
        self.fail_publish = False
        self.fail_subscribe = 0  # subscribes that fail (after the gate)
        self.subscribe_gate: asyncio.Event | None = None
        self.subscribes = 0

    async def publish(self, topic: str, payload: bytes) -> None:
        if self.fail_publish and topic.startswith("conv:"):
            raise BrokerError("pub/sub down")
        await super().publish(topic, payload)

    async def subscribe(self, topic: str, handler: MessageHandler) -> Subscription:
        self.subscribes += 1
        if self.subscribe_gate is not None:
            await self.subscribe_gate.wait()
        if self.fail_subscribe:
            self.fail_subscribe -= 1
            raise BrokerError("subscribe failed")
        return await super().subscribe(topic, handler)


@pytest.fixture
async def broker() -> AsyncIterator[MemoryBroker]:
    b = MemoryBroker()
    await b.start()
    yield b
    await b.close()


async def node(broker: MemoryBroker) -> FailingBroker:
    other = FailingBroker(broker)
    await other.start()
    return other


def conn() -> tuple[FakeConn, Connection]:
    c = FakeConn()
    return c, cast(Connection, c)


async def test_a_lost_last_notice_reaches_every_node(broker: MemoryBroker) -> None:
    db = Store()
    writer_node, reader_node = await node(broker), await node(broker)
    here, there = db.fanout(writer_node), db.fanout(reader_node, check_interval_s=0.05)
    await here.start()
    await there.start()
    local, local_c = conn()
    remote, remote_c = conn()
    (await here.attach(local_c, CONV)).go_live(0)
    (await there.attach(remote_c, CONV)).go_live(0)

    writer_node.fail_publish = True
    here.committed(CONV, [db.commit("lost notice")])
    await local.wait_for([1])  # the writer's node delivers without the broker
    await remote.wait_for([1])  # the other node finds it at its periodic check
    assert here.publish_failures == 1
    assert there.gap_fills == 1

    writer_node.fail_publish = False
    notices: asyncio.Queue[bytes] = asyncio.Queue()
    await broker.subscribe(f"conv:{CONV}", lambda topic, payload: notices.put_nowait(payload))
    here.committed(CONV, [db.commit("delivered by the broker")])
    await local.wait_for([1, 2])
    await remote.wait_for([1, 2])
    # The broker's notice of seq 2 reaches the nodes (subscribed before this probe,
    # so handled first) after their own delivery: it must not deliver twice.
    await asyncio.wait_for(notices.get(), 3.0)
    await asyncio.sleep(0)
    assert (local.seqs, remote.seqs) == ([1, 2], [1, 2])
    await here.close()
    await there.close()


async def test_close_waits_for_the_last_publish(broker: MemoryBroker) -> None:
    db = Store()
    slow = await node(broker)
    real_publish = slow.publish
    heard: asyncio.Queue[bytes] = asyncio.Queue()

    async def publish(topic: str, payload: bytes) -> None:
        await asyncio.sleep(0.05)
        await real_publish(topic, payload)

    slow.publish = publish  # type: ignore[method-assign]
    await broker.subscribe(f"conv:{CONV}", lambda topic, payload: heard.put_nowait(payload))
    fanout = db.fanout(slow)
    fanout.committed(CONV, [db.commit("last words")])
    await fanout.close()
    await asyncio.wait_for(heard.get(), 3.0)  # published before close returned
    assert heard.empty()


async def test_a_follower_waiting_on_a_failed_subscribe_subscribes_itself(
    broker: MemoryBroker,
) -> None:
    db = Store()
    flaky = await node(broker)
    flaky.subscribe_gate = asyncio.Event()
    flaky.fail_subscribe = 1
    fanout = db.fanout(flaky)
    first, first_c = conn()
    second, second_c = conn()
    attaching = [asyncio.create_task(fanout.attach(c, CONV)) for c in (first_c, second_c)]
    await asyncio.sleep(0)  # both tasks take their first step
    assert flaky.subscribes == 1  # the first is held in subscribe, the second waits on it
    flaky.subscribe_gate.set()
    done = await asyncio.gather(*attaching, return_exceptions=True)
    assert isinstance(done[0], BrokerError)
    assert not fanout.following(first_c, CONV)
    assert fanout.following(second_c, CONV)  # not attached to the dropped channel
    assert flaky.subscribes == 2
    cast(Any, done[1]).go_live(0)
    fanout.committed(CONV, [db.commit("hello")])
    await second.wait_for([1])
    assert first.seqs == []
    await fanout.close()
