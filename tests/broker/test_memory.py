"""MemoryBroker only: bounded memory, delivery off the publisher's stack, factory."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from server.broker import BrokerError, MemoryBackend, MemoryBroker, create_broker
from server.broker.redis import RedisBroker
from tests.broker.conftest import Inbox, ManualClock


async def started(broker: MemoryBroker) -> MemoryBroker:
    await broker.start()
    return broker


async def test_expired_entries_are_dropped_without_being_read() -> None:
    clock = ManualClock()
    broker = await started(MemoryBroker(clock=clock))
    for i in range(1000):
        await broker.set_value(f"v{i}", b"x", ttl_s=1)
        await broker.presence_set("room", f"m{i}", b"x", ttl_s=1)
        await broker.incr(f"c{i}", ttl_s=1)
    assert broker.backend.entry_count() == 3000
    clock.now += 2
    await broker.get_value("unrelated")  # any operation sweeps
    assert broker.backend.entry_count() == 0
    assert broker.backend.presence == {}


async def test_refresh_churn_keeps_the_deadline_heap_bounded() -> None:
    clock = ManualClock()
    broker = await started(MemoryBroker(clock=clock))
    for _ in range(50):
        for i in range(100):
            await broker.presence_set("room", f"m{i}", b"x", ttl_s=3600)
        clock.now += 1
    assert broker.backend.entry_count() == 100
    assert len(broker.backend._deadlines) <= 2 * 100 + 1024


async def test_max_entries_is_enforced_and_frees_up_on_expiry() -> None:
    clock = ManualClock()
    broker = await started(MemoryBroker(clock=clock, max_entries=3))
    await broker.set_value("a", b"1", ttl_s=1)
    await broker.presence_set("p", "m", b"1", ttl_s=1)
    await broker.incr("c")
    with pytest.raises(BrokerError):
        await broker.set_value("d", b"1")
    await broker.set_value("a", b"2", ttl_s=1)  # replacing is not growing
    clock.now += 2
    await broker.set_value("d", b"1")


async def test_handlers_run_after_publish_returns() -> None:
    broker = await started(MemoryBroker())
    inbox = Inbox()
    await broker.subscribe("t", inbox)
    await broker.publish("t", b"x")
    assert inbox.drained() == []  # not called on the publisher's stack
    assert await inbox.get() == ("t", b"x")


async def test_shared_with_builds_another_node_and_close_is_per_node() -> None:
    first = await started(MemoryBroker())
    second = await started(MemoryBroker.shared_with(first))
    assert second.backend is first.backend
    inbox = Inbox()
    await second.subscribe("t", inbox)
    await second.close()
    await first.subscribe("t", fence := Inbox())
    await first.publish("t", b"x")
    assert await fence.get() == ("t", b"x")
    assert inbox.drained() == []
    assert await first.ping() is True


@dataclass(frozen=True)
class FakeSettings:
    """The two fields of server.config.Settings that create_broker reads."""

    broker: str
    redis_url: str = "redis://127.0.0.1:1/0"


def test_create_broker_follows_settings() -> None:
    assert isinstance(create_broker(FakeSettings("memory")), MemoryBroker)
    assert isinstance(create_broker(FakeSettings("redis")), RedisBroker)
    with pytest.raises(BrokerError):
        create_broker(FakeSettings("kafka"))


def test_backend_rejects_a_nonsense_limit() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryBackend(max_entries=0)
