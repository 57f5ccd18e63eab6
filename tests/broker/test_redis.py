"""RedisBroker only: the watched listener, prefixes, server-side expiry."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from server.broker import BrokerError
from server.broker.redis import RedisBroker
from tests.broker.conftest import Inbox, eventually
from tests.services import RedisProcess, free_port


@pytest.fixture
async def admin(redis_server: RedisProcess) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def make_broker(redis_server: RedisProcess) -> AsyncIterator[Callable[..., RedisBroker]]:
    """Build RedisBrokers on the session's server; all are closed at teardown."""
    made: list[RedisBroker] = []

    def make(**kwargs: Any) -> RedisBroker:
        made.append(RedisBroker(redis_server.url, **kwargs))
        return made[-1]

    yield make
    for broker in made:
        await broker.close()


async def kill_pubsub_connections(admin: Redis) -> int:
    """CLIENT KILL TYPE pubsub from another client; the number of connections killed."""
    killed: int = await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # type: ignore[no-untyped-call]
    return killed


async def test_listener_reconnects_after_its_connection_is_killed(
    make_broker: Callable[..., RedisBroker], admin: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    subscriber, publisher = make_broker(prefix="kill:"), make_broker(prefix="kill:")
    await subscriber.start()
    await publisher.start()
    inbox = Inbox()
    await subscriber.subscribe("user.1", inbox)
    await publisher.publish("user.1", b"before")
    assert await inbox.get() == ("user.1", b"before")

    with caplog.at_level(logging.WARNING, logger="server.broker.redis"):
        assert await kill_pubsub_connections(admin) >= 1

        async def recovered() -> bool:
            return subscriber.listener_restarts >= 1

        await eventually(recovered)
    assert subscriber.listener_failures >= 1
    assert "lost its connection" in caplog.text
    assert "reconnected" in caplog.text
    assert await subscriber.ping() is True

    await publisher.publish("user.1", b"after")
    assert await inbox.get() == ("user.1", b"after")


async def test_subscribe_while_the_connection_is_dead_is_active_on_return(
    make_broker: Callable[..., RedisBroker], admin: Redis
) -> None:
    subscriber, publisher = make_broker(prefix="dead:"), make_broker(prefix="dead:")
    await subscriber.start()
    await publisher.start()
    await subscriber.subscribe("warm", Inbox())
    assert await kill_pubsub_connections(admin) >= 1
    inbox = Inbox()
    await subscriber.subscribe("fresh", inbox)
    await publisher.publish("fresh", b"hi")
    assert await inbox.get() == ("fresh", b"hi")


async def test_silent_connection_is_detected_by_the_health_check(
    make_broker: Callable[..., RedisBroker], admin: Redis
) -> None:
    subscriber = make_broker(prefix="hc:", health_check_interval_s=0.1)
    publisher = make_broker(prefix="hc:")
    await subscriber.start()
    await publisher.start()
    inbox = Inbox()
    await subscriber.subscribe("t", inbox)
    # Redis stops answering (PING included) for 1 s: the listener must notice.
    await admin.execute_command("CLIENT", "PAUSE", "1000", "ALL")  # type: ignore[no-untyped-call]

    async def noticed() -> bool:
        return subscriber.listener_failures >= 1

    async def recovered() -> bool:
        return subscriber.listener_restarts >= 1

    await eventually(noticed)
    await eventually(recovered)
    await publisher.publish("t", b"back")
    assert await inbox.get() == ("t", b"back")


async def test_prefixes_isolate_deployments(make_broker: Callable[..., RedisBroker]) -> None:
    blue, green = make_broker(prefix="blue:"), make_broker(prefix="green:")
    await blue.start()
    await green.start()
    blue_inbox, green_inbox = Inbox(), Inbox()
    await blue.subscribe("t", blue_inbox)
    await green.subscribe("t", green_inbox)
    await blue.set_value("k", b"blue")
    await blue.presence_set("p", "m", b"blue", 30)
    assert await green.get_value("k") is None
    assert await green.presence_get("p") == {}
    await blue.publish("t", b"for blue")
    await green.publish("t", b"for green")
    assert await blue_inbox.get() == ("t", b"for blue")
    assert await green_inbox.get() == ("t", b"for green")
    assert blue_inbox.drained() == []
    assert green_inbox.drained() == []


async def test_abandoned_presence_keys_expire_in_redis(
    make_broker: Callable[..., RedisBroker], admin: Redis
) -> None:
    broker = make_broker(prefix="abandon:")
    await broker.start()
    await broker.presence_set("room", "u", b"1", ttl_s=0.2)
    assert await admin.exists("abandon:p:room", "abandon:pv:room") == 2
    ttl_ms = await admin.pttl("abandon:p:room")
    assert 0 < ttl_ms <= 200

    async def gone() -> bool:
        return await admin.exists("abandon:p:room", "abandon:pv:room") == 0

    await eventually(gone)


async def test_start_fails_when_redis_is_unreachable() -> None:
    broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=1.0)
    with pytest.raises(BrokerError):
        await broker.start()
    assert await broker.ping() is False
    await broker.close()
