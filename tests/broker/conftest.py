"""Fixtures: every broker test body runs against memory and a real Redis.

``cluster`` builds broker handles ("nodes") that share state: MemoryBroker
handles on one MemoryBackend, or RedisBrokers on one private redis-server with
one prefix unique to the test. ``broker`` is the first node.
``cluster.advance(s)`` moves the memory clock; on Redis time passes for real,
so TTL tests poll with a deadline (:func:`eventually`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from server.broker import Broker, MemoryBackend, MemoryBroker
from server.broker.redis import RedisBroker
from tests.services import RedisProcess, start_redis

WAIT_S = 5.0  # upper bound for anything a test waits on; a pass takes milliseconds


class ManualClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Cluster:
    """Nodes sharing one broker backend, closed at teardown."""

    def __init__(self, kind: str, redis_url: str = "") -> None:
        self.kind = kind
        self.clock = ManualClock()
        self.backend = MemoryBackend(clock=self.clock)
        self.redis_url = redis_url
        self.prefix = f"test-{uuid.uuid4().hex[:12]}:"
        self.nodes: list[Broker] = []

    async def node(self, *, prefix: str | None = None) -> Broker:
        """A new started broker handle on the shared state (optionally another prefix)."""
        broker: Broker
        if self.kind == "memory":
            backend = self.backend if prefix is None else MemoryBackend(clock=self.clock)
            broker = MemoryBroker(backend)
        else:
            broker = RedisBroker(self.redis_url, prefix=prefix or self.prefix)
        await broker.start()
        self.nodes.append(broker)
        return broker

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: instantly for memory; Redis uses real time."""
        self.clock.now += seconds

    async def close(self) -> None:
        for broker in self.nodes:
            await broker.close()


class Inbox:
    """A handler that queues (topic, payload) pairs for the test to await."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    def __call__(self, topic: str, payload: bytes) -> None:
        self.queue.put_nowait((topic, payload))

    async def get(self) -> tuple[str, bytes]:
        return await asyncio.wait_for(self.queue.get(), WAIT_S)

    def drained(self) -> list[tuple[str, bytes]]:
        items = []
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = WAIT_S) -> None:
    """Poll ``check`` until it is true; fail the test after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.02)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One private redis-server for the session; fails (never skips) if unavailable."""
    server = start_redis(Path(tmp_path_factory.mktemp("redis")))
    yield server
    server.stop()


@pytest.fixture(params=["memory", "redis"])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    if request.param == "redis":
        server: RedisProcess = request.getfixturevalue("redis_server")
        group = Cluster("redis", server.url)
    else:
        group = Cluster("memory")
    yield group
    await group.close()


@pytest.fixture
async def broker(cluster: Cluster) -> Broker:
    return await cluster.node()
