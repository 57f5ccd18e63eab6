"""The device registry alone (memory broker, no hub): batching, ordering, refresh, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from server.broker.base import BrokerError
from server.broker.memory import MemoryBroker
from server.channels import ChannelService
from server.peer import Peer
from server.presence.devices import DeviceRegistry
from server.supervise import Supervisor
from tests.fakepeer import FakePeer


class CountingBroker(MemoryBroker):
    """Counts batched presence calls; can hold or fail ``presence_set_many``."""

    def __init__(self) -> None:
        super().__init__()
        self.set_calls: list[int] = []
        self.set_gate: asyncio.Event | None = None
        self.set_entered = asyncio.Event()
        self.fail_sets = 0

    async def presence_set_many(
        self, entries: Sequence[tuple[str, str, bytes]], ttl_s: float
    ) -> None:
        self.set_calls.append(len(entries))
        gate, self.set_gate = self.set_gate, None
        if gate is not None:
            self.set_entered.set()
            await gate.wait()
        if self.fail_sets:
            self.fail_sets -= 1
            raise BrokerError("redis down")
        await super().presence_set_many(entries, ttl_s)


class Rig:
    def __init__(self, broker: CountingBroker, refresh_s: float) -> None:
        self.broker = broker
        self.registry = CollectorRegistry()
        self.supervisor = Supervisor(self.registry, max_backoff_s=0.05)
        self.channels = ChannelService(broker, self.supervisor, self.registry)
        self.devices = DeviceRegistry(
            self.channels, "n1", self.registry, ttl_s=30.0, refresh_s=refresh_s, watched=list
        )

    def start(self) -> None:
        self.supervisor.loop("presence-writer", self.devices.run)

    async def settled(self) -> None:
        """Every change made so far is written (the writer is idle)."""
        async with asyncio.timeout(3):
            while self.devices._dirty or self.devices._removals:
                await asyncio.sleep(0.001)
            await asyncio.sleep(0)


@pytest.fixture
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    rigs: list[Rig] = []

    async def make(refresh_s: float = 60.0) -> Rig:
        broker = CountingBroker()
        await broker.start()
        r = Rig(broker, refresh_s)
        r.start()
        rigs.append(r)
        return r

    yield make
    for r in rigs:
        await r.supervisor.close()
        await r.broker.close()


def device(user: str, conn_id: str) -> Peer:
    return cast(Peer, FakePeer(user, conn_id))


async def test_a_refresh_never_brings_a_closed_device_back(rig: Any) -> None:
    r = await rig(refresh_s=0.05)
    bob = device("bob", "k1")
    r.devices.opened(bob)
    await r.settled()
    assert await r.broker.presence_get("presence:bob") == {"n1:k1": b"online"}

    r.broker.set_gate = gate = asyncio.Event()
    await asyncio.wait_for(r.broker.set_entered.wait(), 3.0)  # a refresh is writing bob
    r.devices.closed(bob)
    gate.set()
    await r.settled()
    assert await r.broker.presence_get("presence:bob") == {}  # not written back
    assert await r.broker.get_value("presence-last:bob") is not None
    state = (await r.devices.states(["bob"]))["bob"]
    assert (state.state, state.last_seen is not None) == ("offline", True)


async def test_a_burst_of_changes_is_written_in_a_few_batches(rig: Any) -> None:
    r = await rig()
    peers = [device(f"u{i % 40}", f"k{i}") for i in range(400)]
    for p in peers:
        r.devices.opened(p)
    for p in peers[::2]:
        r.devices.closed(p)
    await r.settled()
    assert len(r.broker.set_calls) <= 3  # not one awaited call per device
    for i in range(40):
        members = await r.broker.presence_get(f"presence:u{i}")
        expected = {f"n1:k{j}" for j in range(i, 400, 40) if j % 2}
        assert set(members) == expected


async def test_a_state_change_answers_with_the_combined_state(rig: Any) -> None:
    r = await rig()
    phone, laptop = device("bob", "phone"), device("bob", "laptop")
    r.devices.opened(phone)
    assert (await r.devices.set(laptop, "busy")).state == "busy"
    assert (await r.devices.set(laptop, "away")).state == "away"
    r.devices.closed(laptop)
    await r.settled()
    assert (await r.devices.states(["bob"]))["bob"].state == "online"


async def test_a_broker_failure_fails_the_request_and_the_change_is_retried(rig: Any) -> None:
    r = await rig()
    bob = device("bob", "k1")
    r.broker.fail_sets = 1
    with pytest.raises(BrokerError):
        await r.devices.set(bob, "busy")
    await r.settled()  # the supervisor restarted the writer, which wrote the change
    assert await r.broker.presence_get("presence:bob") == {"n1:k1": b"busy"}
    assert (
        r.registry.get_sample_value("medhub_task_failures_total", {"task": "presence-writer"}) == 1
    )


async def test_a_refresh_round_takes_one_pipeline_per_thousand_devices(rig: Any) -> None:
    r = await rig()
    for i in range(2500):
        r.devices.opened(device(f"u{i}", f"k{i}"))
    await r.settled()
    r.broker.set_calls.clear()
    await r.devices.refresh_round()
    assert r.broker.set_calls == [1000, 1000, 500]
    count = r.registry.get_sample_value("medhub_presence_refresh_seconds_count")
    assert count == 1
