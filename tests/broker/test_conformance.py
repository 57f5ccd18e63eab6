"""The broker contract, written against the Broker interface only.

Every test runs on MemoryBroker and on RedisBroker (a real redis-server).
"""

from __future__ import annotations

import asyncio

import pytest

from server.broker import Broker, BrokerError
from server.broker.base import MAX_NAME_LENGTH, MAX_PAYLOAD_BYTES
from tests.broker.conftest import Cluster, Inbox, eventually

# -- pub/sub ------------------------------------------------------------------------


async def test_publish_reaches_every_subscriber_of_the_topic_and_no_other(
    broker: Broker, cluster: Cluster
) -> None:
    other = await cluster.node()
    a, b, stranger = Inbox(), Inbox(), Inbox()
    await broker.subscribe("room.1", a)
    await other.subscribe("room.1", b)
    await other.subscribe("room.2", stranger)

    await broker.publish("room.1", b"hello")
    # A fence after the stray message: once it arrives, the stray one would have too.
    await broker.publish("room.2", b"fence")

    assert await a.get() == ("room.1", b"hello")
    assert await b.get() == ("room.1", b"hello")
    assert await stranger.get() == ("room.2", b"fence")
    assert stranger.drained() == []
    assert a.drained() == []
    assert b.drained() == []


async def test_order_is_preserved_for_1000_messages_on_every_node(
    broker: Broker, cluster: Cluster
) -> None:
    other = await cluster.node()
    local, remote = Inbox(), Inbox()
    await broker.subscribe("eeg.s1", local)
    await other.subscribe("eeg.s1", remote)
    sent = [i.to_bytes(4, "big") for i in range(1000)]
    for payload in sent:
        await broker.publish("eeg.s1", payload)
    for inbox in (local, remote):
        received = [(await inbox.get())[1] for _ in sent]
        assert received == sent


async def test_subscription_is_active_when_subscribe_returns(
    broker: Broker, cluster: Cluster
) -> None:
    publisher = await cluster.node()
    for i in range(20):
        inbox = Inbox()
        await broker.subscribe(f"fresh.{i}", inbox)
        await publisher.publish(f"fresh.{i}", b"first")
        assert await inbox.get() == (f"fresh.{i}", b"first")


async def test_unsubscribe_stops_delivery(broker: Broker, cluster: Cluster) -> None:
    publisher = await cluster.node()
    gone, stays = Inbox(), Inbox()
    sub = await broker.subscribe("call.9", gone)
    await broker.subscribe("call.9", stays)
    await publisher.publish("call.9", b"one")
    assert await gone.get() == ("call.9", b"one")
    assert await stays.get() == ("call.9", b"one")

    await broker.unsubscribe(sub)
    await broker.unsubscribe(sub)  # unknown handles are ignored
    await broker.subscribe("fence", gone)
    await publisher.publish("call.9", b"two")
    await publisher.publish("fence", b"end")
    assert await stays.get() == ("call.9", b"two")
    assert await gone.get() == ("fence", b"end")
    assert gone.drained() == []


async def test_last_unsubscribe_then_resubscribe_delivers_again(
    broker: Broker, cluster: Cluster
) -> None:
    publisher = await cluster.node()
    inbox = Inbox()
    await broker.unsubscribe(await broker.subscribe("t", inbox))
    await broker.subscribe("t", inbox)
    await publisher.publish("t", b"back")
    assert await inbox.get() == ("t", b"back")


async def test_handler_that_raises_keeps_its_subscription(broker: Broker) -> None:
    calls: list[bytes] = []
    inbox = Inbox()

    def flaky(topic: str, payload: bytes) -> None:
        calls.append(payload)
        if payload == b"boom":
            raise RuntimeError("handler bug")

    await broker.subscribe("chat.1", flaky)
    await broker.subscribe("chat.1", inbox)
    await broker.publish("chat.1", b"boom")
    await broker.publish("chat.1", b"after")
    assert await inbox.get() == ("chat.1", b"boom")
    assert await inbox.get() == ("chat.1", b"after")
    assert calls == [b"boom", b"after"]
    assert getattr(broker, "handler_errors", None) == 1


async def test_handler_may_unsubscribe_and_publish_reentrantly(broker: Broker) -> None:
    inbox = Inbox()
    tasks: list[asyncio.Task[None]] = []

    def once(topic: str, payload: bytes) -> None:
        tasks.append(asyncio.create_task(broker.unsubscribe(sub)))
        tasks.append(asyncio.create_task(broker.publish("echo", payload)))

    sub = await broker.subscribe("ping", once)
    await broker.subscribe("echo", inbox)
    await broker.publish("ping", b"1")
    assert await inbox.get() == ("echo", b"1")
    await asyncio.gather(*tasks)
    await broker.publish("ping", b"2")
    await broker.publish("echo", b"fence")
    assert await inbox.get() == ("echo", b"fence")


async def test_largest_payload_is_delivered_intact(broker: Broker) -> None:
    inbox = Inbox()
    await broker.subscribe("big", inbox)
    payload = bytes(range(256)) * (MAX_PAYLOAD_BYTES // 256)
    await broker.publish("big", payload)
    assert await inbox.get() == ("big", payload)


# -- validation and lifecycle --------------------------------------------------------

BAD_NAMES = ["", "x" * (MAX_NAME_LENGTH + 1), "caf\u00e9"]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_invalid_names_raise(broker: Broker, name: str) -> None:
    def handler(topic: str, payload: bytes) -> None:
        pass

    calls = [
        broker.publish(name, b"x"),
        broker.subscribe(name, handler),
        broker.presence_set(name, "m", b"x", 1.0),
        broker.presence_set("k", name, b"x", 1.0),
        broker.presence_get(name),
        broker.set_value(name, b"x"),
        broker.set_if_absent(name, b"x"),
        broker.get_value(name),
        broker.pop_value(name),
        broker.delete_value(name),
        broker.incr(name),
    ]
    for call in calls:
        with pytest.raises(BrokerError):
            await call


async def test_oversized_or_non_bytes_payloads_and_bad_ttls_raise(broker: Broker) -> None:
    too_big = b"x" * (MAX_PAYLOAD_BYTES + 1)
    for call in (
        broker.publish("t", too_big),
        broker.publish("t", "text"),  # type: ignore[arg-type]
        broker.set_value("k", too_big),
        broker.set_if_absent("k", too_big),
        broker.presence_set("k", "m", too_big, 1.0),
        broker.presence_set("k", "m", b"x", 0),
        broker.presence_set("k", "m", b"x", float("nan")),
        broker.set_value("k", b"x", ttl_s=-1),
        broker.incr("k", ttl_s=float("inf")),
    ):
        with pytest.raises(BrokerError):
            await call
    assert await broker.get_value("k") is None
    assert await broker.presence_get("k") == {}


async def test_lifecycle_ping_and_use_after_close(cluster: Cluster) -> None:
    broker = await cluster.node()
    await broker.start()  # idempotent
    assert await broker.ping() is True
    await broker.close()
    await broker.close()  # idempotent
    assert await broker.ping() is False
    with pytest.raises(BrokerError):
        await broker.publish("t", b"x")
    with pytest.raises(BrokerError):
        await broker.set_value("k", b"x")
    with pytest.raises(BrokerError):
        await broker.start()


# -- presence -------------------------------------------------------------------------


async def test_presence_is_shared_between_nodes(broker: Broker, cluster: Cluster) -> None:
    other = await cluster.node()
    await broker.presence_set("user.7", "conn-a", b"online", ttl_s=30)
    await other.presence_set("user.7", "conn-b", b"busy", ttl_s=30)
    expected = {"conn-a": b"online", "conn-b": b"busy"}
    assert await broker.presence_get("user.7") == expected
    assert await other.presence_get("user.7") == expected

    await other.presence_set("user.7", "conn-a", b"away", ttl_s=30)  # last state wins
    assert await broker.presence_get("user.7") == {"conn-a": b"away", "conn-b": b"busy"}
    await broker.presence_remove("user.7", "conn-b")
    await broker.presence_remove("user.7", "never-there")
    assert await other.presence_get("user.7") == {"conn-a": b"away"}
    assert await other.presence_get("user.8") == {}


async def test_presence_members_expire_after_their_ttl(broker: Broker, cluster: Cluster) -> None:
    other = await cluster.node()
    await broker.presence_set("room", "dead-node-user", b"1", ttl_s=0.2)
    await broker.presence_set("room", "live-user", b"2", ttl_s=30)
    assert await other.presence_get("room") == {"dead-node-user": b"1", "live-user": b"2"}

    cluster.advance(0.25)

    async def aged_out() -> bool:
        return await other.presence_get("room") == {"live-user": b"2"}

    await eventually(aged_out)


async def test_presence_refresh_restarts_the_ttl(broker: Broker, cluster: Cluster) -> None:
    await broker.presence_set("room", "u", b"1", ttl_s=0.3)
    await broker.presence_set("room", "u", b"2", ttl_s=30)
    cluster.advance(0.5)
    await broker.presence_set("room", "v", b"3", ttl_s=0.1)  # triggers a prune
    cluster.advance(0.2)

    async def only_refreshed() -> bool:
        return await broker.presence_get("room") == {"u": b"2"}

    await eventually(only_refreshed)


# -- ephemeral values -------------------------------------------------------------------


async def test_values_are_shared_and_expire(broker: Broker, cluster: Cluster) -> None:
    other = await cluster.node()
    await broker.set_value("ticket", b"abc")
    assert await other.get_value("ticket") == b"abc"
    await other.set_value("ticket", b"def", ttl_s=0.2)
    assert await broker.get_value("ticket") == b"def"
    await broker.set_value("keep", b"k", ttl_s=30)
    cluster.advance(0.25)

    async def expired() -> bool:
        return await broker.get_value("ticket") is None

    await eventually(expired)
    assert await broker.get_value("keep") == b"k"
    await broker.delete_value("keep")
    await broker.delete_value("keep")
    assert await other.get_value("keep") is None


async def test_set_if_absent_is_atomic_under_100_concurrent_attempts(
    broker: Broker, cluster: Cluster
) -> None:
    other = await cluster.node()
    nodes = [broker, other]
    results = await asyncio.gather(
        *(nodes[i % 2].set_if_absent("totp:user1:123456", str(i).encode(), 60) for i in range(100))
    )
    assert results.count(True) == 1
    winner = results.index(True)
    assert await other.get_value("totp:user1:123456") == str(winner).encode()


async def test_set_if_absent_succeeds_again_after_expiry(broker: Broker, cluster: Cluster) -> None:
    assert await broker.set_if_absent("once", b"1", ttl_s=0.2) is True
    assert await broker.set_if_absent("once", b"2", ttl_s=0.2) is False
    cluster.advance(0.25)

    async def free_again() -> bool:
        return await broker.set_if_absent("once", b"3", ttl_s=30)

    await eventually(free_again)
    assert await broker.get_value("once") == b"3"


async def test_pop_value_is_single_use_under_concurrency(broker: Broker, cluster: Cluster) -> None:
    other = await cluster.node()
    await broker.set_value("ws-ticket", b"secret-ish", ttl_s=30)
    nodes = [broker, other]
    results = await asyncio.gather(*(nodes[i % 2].pop_value("ws-ticket") for i in range(50)))
    assert results.count(b"secret-ish") == 1
    assert results.count(None) == 49
    assert await broker.get_value("ws-ticket") is None
    assert await broker.pop_value("never-set") is None


# -- counters ---------------------------------------------------------------------------


async def test_incr_under_concurrency_sums_exactly(broker: Broker, cluster: Cluster) -> None:
    other = await cluster.node()
    nodes = [broker, other]
    amounts = [1 + i % 3 for i in range(200)]
    results = await asyncio.gather(
        *(nodes[i % 2].incr("rate:ip", amount, ttl_s=60) for i, amount in enumerate(amounts))
    )
    assert max(results) == sum(amounts)
    assert len(set(results)) == len(results)  # each call saw its own total
    assert await other.incr("rate:ip", 0) == sum(amounts)
    assert await broker.incr("rate:ip", -5) == sum(amounts) - 5
    assert await broker.get_value("rate:ip") == str(sum(amounts) - 5).encode()


async def test_incr_ttl_applies_on_creation_only(broker: Broker, cluster: Cluster) -> None:
    assert await broker.incr("window", ttl_s=0.3) == 1
    cluster.advance(0.1)
    assert await broker.incr("window", ttl_s=60) == 2  # must not extend the window
    cluster.advance(0.3)

    async def window_closed() -> bool:
        return await broker.get_value("window") is None

    await eventually(window_closed)
    assert await broker.incr("window", ttl_s=60) == 1  # a new window starts


async def test_incr_on_a_non_integer_value_raises(broker: Broker) -> None:
    await broker.set_value("text", b"not a number")
    with pytest.raises(BrokerError):
        await broker.incr("text")
    with pytest.raises(BrokerError):
        await broker.incr("n", 1.5)  # type: ignore[arg-type]


# -- batched calls -----------------------------------------------------------------------


async def test_publish_many_keeps_order_across_topics_on_every_node(
    broker: Broker, cluster: Cluster
) -> None:
    other = await cluster.node()
    a, b = Inbox(), Inbox()
    subs = await other.subscribe_many(["batch.a", "batch.b"], a)
    await broker.subscribe("batch.b", b)
    messages = [(f"batch.{'ab'[i % 2]}", i.to_bytes(2, "big")) for i in range(200)]
    await broker.publish_many(messages)
    received = [await a.get() for _ in messages]
    assert received == messages
    only_b = [m for m in messages if m[0] == "batch.b"]
    assert [await b.get() for _ in only_b] == only_b
    await other.unsubscribe_many(subs)
    await broker.publish_many([("batch.a", b"late"), ("batch.b", b"fence")])
    assert await b.get() == ("batch.b", b"fence")
    assert a.drained() == []


async def test_subscribe_many_is_active_when_it_returns_and_validates_names(
    broker: Broker, cluster: Cluster
) -> None:
    publisher = await cluster.node()
    inbox = Inbox()
    topics = [f"many.{i}" for i in range(1500)]  # more than one SUBSCRIBE command
    await broker.subscribe_many(topics, inbox)
    await publisher.publish("many.1499", b"x")
    assert await inbox.get() == ("many.1499", b"x")
    with pytest.raises(BrokerError):
        await broker.subscribe_many(["ok", ""], inbox)
    await publisher.publish("ok", b"never")
    await publisher.publish("many.0", b"fence")
    assert await inbox.get() == ("many.0", b"fence")  # the failed call left nothing behind


async def test_presence_batches_match_the_single_calls(broker: Broker, cluster: Cluster) -> None:
    other = await cluster.node()
    entries = [(f"presence:u{i % 50}", f"n1:c{i}", b"online") for i in range(300)]
    await broker.presence_set_many(entries, ttl_s=30.0)
    keys = [f"presence:u{i}" for i in range(50)] + ["presence:nobody"]
    got = await other.presence_get_many(keys)
    assert got["presence:nobody"] == {}
    for i in range(50):
        assert got[f"presence:u{i}"] == {f"n1:c{j}": b"online" for j in range(i, 300, 50)}
    await broker.presence_remove_many([(f"presence:u{i % 50}", f"n1:c{i}") for i in range(50)])
    assert await other.presence_get("presence:u0") == {
        f"n1:c{j}": b"online" for j in range(50, 300, 50)
    }
    await broker.presence_set_many([("presence:brief", "n1:x", b"busy")], ttl_s=0.2)
    assert await other.presence_get_many(["presence:brief"]) == {
        "presence:brief": {"n1:x": b"busy"}
    }
    cluster.advance(0.25)

    async def aged_out() -> bool:
        return await other.presence_get_many(["presence:brief"]) == {"presence:brief": {}}

    await eventually(aged_out)


async def test_get_values_reads_many_keys_at_once(broker: Broker, cluster: Cluster) -> None:
    other = await cluster.node()
    await broker.set_value("v.a", b"1")
    await broker.set_value("v.b", b"2", ttl_s=5.0)
    assert await other.get_values(["v.a", "v.b", "v.c"]) == {"v.a": b"1", "v.b": b"2", "v.c": None}
    assert await other.get_values([]) == {}
    await broker.set_values([("v.c", b"3"), ("v.a", b"4")], ttl_s=30.0)
    assert await other.get_values(["v.a", "v.c"]) == {"v.a": b"4", "v.c": b"3"}
