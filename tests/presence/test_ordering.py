"""Presence alone (memory broker, no hub): refreshes and follows against closes, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from server.broker.base import BrokerError, MessageHandler, Subscription
from server.broker.memory import MemoryBroker
from server.chat.facts import Facts
from server.connection import Connection
from server.hub import AuditRecorder
from server.presence.service import PresenceService
from tests.hubtest import principal


class GatedBroker(MemoryBroker):
    """Holds the next ``presence_set`` / ``subscribe`` while a gate is armed."""

    def __init__(self) -> None:
        super().__init__()
        self.set_gate: asyncio.Event | None = None
        self.set_entered = asyncio.Event()
        self.subscribe_gate: asyncio.Event | None = None
        self.fail_subscribe = 0
        self.subscribes = 0

    async def presence_set(self, key: str, member: str, value: bytes, ttl_s: float) -> None:
        gate, self.set_gate = self.set_gate, None
        if gate is not None:
            self.set_entered.set()
            await gate.wait()
        await super().presence_set(key, member, value, ttl_s)

    async def subscribe(self, topic: str, handler: MessageHandler) -> Subscription:
        self.subscribes += 1
        if self.subscribe_gate is not None:
            await self.subscribe_gate.wait()
        if self.fail_subscribe:
            self.fail_subscribe -= 1
            raise BrokerError("subscribe failed")
        return await super().subscribe(topic, handler)


class FakeConn:
    def __init__(self, user: str, conn_id: str) -> None:
        self.principal = principal(user)
        self.conn_id = conn_id


@pytest.fixture
async def broker() -> AsyncIterator[GatedBroker]:
    b = GatedBroker()
    await b.start()
    yield b
    await b.close()


def service(broker: GatedBroker, refresh_s: float = 60.0) -> PresenceService:
    return PresenceService(
        broker, cast(Facts, None), cast(AuditRecorder, None), "n1", refresh_s=refresh_s
    )


async def drained(svc: PresenceService) -> None:
    """Return once every job queued so far has run."""
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def noop() -> None:
        return None

    svc._jobs.put_nowait((noop, done))
    await asyncio.wait_for(done, 3.0)


async def test_a_refresh_never_brings_a_closed_device_back(broker: GatedBroker) -> None:
    svc = service(broker, refresh_s=0.05)
    await svc.start()
    bob = cast(Connection, FakeConn("bob", "k1"))
    svc.connection_opened(bob)
    await drained(svc)
    assert await broker.presence_get("presence:bob") == {"n1:k1": b"online"}

    broker.set_gate = gate = asyncio.Event()
    await asyncio.wait_for(broker.set_entered.wait(), 3.0)  # a refresh is writing bob
    svc.connection_closed(bob)
    gate.set()
    await drained(svc)
    assert await broker.presence_get("presence:bob") == {}  # not written back
    assert await broker.get_value("presence-last:bob") is not None
    assert (await svc.state_of("bob")).state == "offline"
    await svc.close()


async def test_a_follower_waiting_on_a_failed_subscribe_subscribes_itself(
    broker: GatedBroker,
) -> None:
    svc = service(broker)
    await svc.start()
    broker.subscribe_gate = asyncio.Event()
    broker.fail_subscribe = 1
    first = cast(Connection, FakeConn("alice", "a1"))
    second = cast(Connection, FakeConn("carol", "c1"))
    watching = [asyncio.create_task(svc._watch_user(c, "bob")) for c in (first, second)]
    await asyncio.sleep(0)  # both tasks take their first step
    assert broker.subscribes == 1  # the first is held in subscribe, the second waits on it
    broker.subscribe_gate.set()
    done = await asyncio.gather(*watching, return_exceptions=True)
    assert isinstance(done[0], BrokerError)
    assert done[1] is None
    watch = svc._watch["bob"]  # the second one is on a live watch, not the dropped one
    assert watch.subscription is not None
    assert watch.conns == {second}
    await svc.close()
