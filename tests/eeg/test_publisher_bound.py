"""The EEG publisher holds at most ``eeg_publish_queue_bytes`` of sample frames for a broker
that does not keep up: past it, sample frames are dropped (counted, one warning per episode),
everything else is kept, and what is kept reaches the other nodes in order once the broker
catches up.

Two stalled brokers: a private redis-server paused with ``CLIENT PAUSE WRITE`` (PUBLISH waits
in Redis until ``CLIENT UNPAUSE``), and, for the detailed checks, the in-memory broker. That one
has no slow state of its own (closed is final and fails at once, its ``max_entries`` bound does
not apply to pub/sub), so its batches wait at a gate before the real implementation publishes
them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import msgpack
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from server.broker.memory import MemoryBroker
from server.broker.redis import RedisBroker
from server.config import ConfigError, load_settings
from server.eeg.feed import end_message, frame_of, gap_message, samples_message, topic_of
from server.eeg.metrics import EegMetrics
from server.eeg.publisher import MIN_QUEUE_BYTES, OrderedPublisher
from server.eeg.relay import reply_topic
from server.supervise import Supervisor
from tests.broker.conftest import eventually
from tests.eeg.helpers import eeg_hub
from tests.eeg.test_disconnects import metric
from tests.services import start_redis

WAIT_S = 10.0
SID = "t-0000abcd"
TOPIC = topic_of(SID)
LOGGER = "server.eeg.publisher"


class StalledBroker(MemoryBroker):
    """A memory broker whose batches wait until :attr:`open` is set (a slow or stuck link)."""

    def __init__(self) -> None:
        super().__init__()
        self.open = asyncio.Event()
        self.held = asyncio.Event()  #: a batch is waiting at the gate

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        self.held.set()
        await self.open.wait()
        await super().publish_many(messages)


class Inbox:
    """What another node receives on the topics, in arrival order."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.changed = asyncio.Event()

    def __call__(self, topic: str, payload: bytes) -> None:
        self.got.append((topic, payload))
        self.changed.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(WAIT_S):
            while len(self.got) < count:
                self.changed.clear()
                await self.changed.wait()


def sample_frame(seq: int) -> bytes:
    """The topic message of an accepted frame: 256 samples x 8 channels int16 (4 KiB)."""
    block = np.full((256, 8), seq, dtype=np.int16)
    return samples_message(frame_of(1, seq, seq * 256, block, 0))


@pytest.fixture
async def node() -> AsyncIterator[tuple[StalledBroker, Inbox, Supervisor]]:
    broker = StalledBroker()
    other = MemoryBroker.shared_with(broker)
    await broker.start()
    await other.start()
    inbox = Inbox()
    await other.subscribe_many([TOPIC, reply_topic("n2")], inbox)
    supervisor = Supervisor()
    yield broker, inbox, supervisor
    await supervisor.close()
    await other.close()
    await broker.close()


async def test_a_stalled_broker_holds_at_most_the_bound_and_delivers_what_it_kept_in_order(
    node: tuple[StalledBroker, Inbox, Supervisor], caplog: pytest.LogCaptureFixture
) -> None:
    broker, inbox, supervisor = node
    registry = CollectorRegistry()
    metrics = EegMetrics(registry)
    pub = OrderedPublisher(
        broker, supervisor, max_bytes=MIN_QUEUE_BYTES, on_dropped=metrics.publish_dropped.inc
    )
    caplog.set_level(logging.WARNING, logger=LOGGER)
    kept: list[tuple[str, bytes]] = []

    def publish(topic: str, payload: bytes) -> None:
        before = pub.dropped
        pub.publish(topic, payload)
        if pub.dropped == before:
            kept.append((topic, payload))
        assert pub.sample_bytes <= pub.max_bytes

    publish(TOPIC, sample_frame(0))
    await asyncio.wait_for(broker.held.wait(), WAIT_S)  # frame 0 is in flight, stuck
    fill = msgpack.packb({"q": 1, "f": 0, "c": 1, "d": b"\x00" * 16})
    for seq in range(1, 60):  # 60 frames of 4 KiB: four times the bound
        publish(TOPIC, sample_frame(seq))
        if seq == 30:  # the bound is long reached: these are kept all the same
            publish(TOPIC, gap_message(30 * 256, 31 * 256))
            publish(reply_topic("n2"), fill)
            publish(reply_topic("n2"), msgpack.packb({"q": 1, "end": 31 * 256}))
    publish(TOPIC, end_message(60 * 256))

    frames_kept = sum(1 for _, p in kept if p[:1] == b"F")
    assert frames_kept == MIN_QUEUE_BYTES // len(sample_frame(0))  # as many as fit
    assert pub.dropped == 60 - frames_kept
    assert registry.get_sample_value("medhub_eeg_publish_dropped_total") == pub.dropped
    assert (TOPIC, gap_message(30 * 256, 31 * 256)) in kept
    assert (reply_topic("n2"), fill) in kept
    assert kept[-1] == (TOPIC, end_message(60 * 256))
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one per episode, not one per frame
    assert "queue full" in warnings[0].getMessage()
    assert not any(isinstance(v, bytes) for v in vars(warnings[0]).values())  # no payload
    assert inbox.got == []  # nothing left while the broker was stuck

    broker.open.set()  # the broker catches up
    await inbox.wait_for(len(kept))
    assert inbox.got == kept  # everything kept, in call order, across topics
    await pub.close()
    assert pub.sample_bytes == 0

    # room again: the next frame goes, and a new overflow is a new episode (a second warning)
    broker.open.clear()
    broker.held.clear()
    publish(TOPIC, sample_frame(61))
    await asyncio.wait_for(broker.held.wait(), WAIT_S)
    for seq in range(62, 62 + 2 * frames_kept):
        publish(TOPIC, sample_frame(seq))
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 2
    broker.open.set()
    await inbox.wait_for(len(kept))
    assert inbox.got == kept


async def test_a_paused_redis_holds_at_most_the_bound_then_gets_what_was_kept(
    tmp_path: Path,
) -> None:
    redis = start_redis(tmp_path / "redis")
    admin = Redis.from_url(redis.url)
    node = RedisBroker(redis.url, socket_timeout_s=60.0)
    other = RedisBroker(redis.url, socket_timeout_s=60.0)
    supervisor = Supervisor()
    try:
        await node.start()
        await other.start()
        inbox = Inbox()
        await other.subscribe(TOPIC, inbox)
        pub = OrderedPublisher(node, supervisor, max_bytes=MIN_QUEUE_BYTES)
        await admin.execute_command("CLIENT", "PAUSE", "60000", "WRITE")  # type: ignore[no-untyped-call]
        try:
            kept = [(TOPIC, sample_frame(0))]
            pub.publish(*kept[0])

            async def publishing_held() -> bool:
                info = await admin.info("clients")
                return int(info["blocked_clients"]) >= 1

            await eventually(publishing_held)  # the first batch waits in Redis
            for seq in range(1, 60):
                before = pub.dropped
                pub.publish(TOPIC, sample_frame(seq))
                if pub.dropped == before:
                    kept.append((TOPIC, sample_frame(seq)))
                assert pub.sample_bytes <= pub.max_bytes
            pub.publish(TOPIC, end_message(60 * 256))  # kept, full or not
            kept.append((TOPIC, end_message(60 * 256)))
            assert pub.dropped == 61 - len(kept) > 0
            assert inbox.got == []
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")  # type: ignore[no-untyped-call]
        await inbox.wait_for(len(kept))
        assert inbox.got == kept
        assert pub.failures == 0
    finally:
        await supervisor.close()
        await other.close()
        await node.close()
        await admin.aclose()
        redis.stop()


async def test_a_broker_that_keeps_up_drops_nothing(
    node: tuple[StalledBroker, Inbox, Supervisor],
) -> None:
    broker, inbox, supervisor = node
    broker.open.set()
    pub = OrderedPublisher(broker, supervisor, max_bytes=MIN_QUEUE_BYTES)
    frames = [sample_frame(seq) for seq in range(64)]  # 4 times the bound in all
    for k in range(0, len(frames), 8):
        for f in frames[k : k + 8]:
            pub.publish(TOPIC, f)
        await inbox.wait_for(k + 8)
    assert pub.dropped == 0
    assert [p for _, p in inbox.got] == frames


def test_the_bound_is_a_setting_of_at_least_64_kib() -> None:
    assert load_settings(environ={}).eeg_publish_queue_bytes == 16 * 1024 * 1024
    s = load_settings(environ={"MEDHUB_EEG_PUBLISH_QUEUE_BYTES": "65536"})
    assert s.eeg_publish_queue_bytes == 65536
    with pytest.raises(ConfigError, match="eeg_publish_queue_bytes"):
        load_settings(environ={"MEDHUB_EEG_PUBLISH_QUEUE_BYTES": "65535"})
    with pytest.raises(ValueError, match="max_bytes"):
        OrderedPublisher(MemoryBroker(), Supervisor(), max_bytes=MIN_QUEUE_BYTES - 1)


async def test_the_hub_builds_its_publisher_from_the_setting(tmp_path: Path) -> None:
    async with eeg_hub(tmp_path, eeg_publish_queue_bytes=1 << 20) as hub:
        eeg = hub.components.capabilities.get("eeg")
        assert eeg.publisher.max_bytes == 1 << 20  # type: ignore[attr-defined]
        assert "medhub_eeg_publish_dropped_total 0.0" in hub.components.metrics.render().decode()
        assert metric(hub, "medhub_eeg_publish_dropped_total") == 0.0
