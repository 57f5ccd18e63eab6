"""The access-decision cache: one read per key at a time, a strict time bound,
and a rights change that wins over a read already under way."""

from __future__ import annotations

import asyncio

import pytest

from server.decisions import DecisionCache


async def test_concurrent_misses_share_one_read() -> None:
    cache: DecisionCache[str, str] = DecisionCache(5.0)
    release = asyncio.Event()
    calls = 0

    async def read() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "conv-1"

    waiters = [asyncio.ensure_future(cache.read("k", read)) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiters)
    assert calls == 1
    assert cache.reads == 1
    assert cache.shared == 49
    assert {value for value, _ in results} == {"conv-1"}
    # another key is read on its own
    value, _ = await cache.read("other", read)
    assert value == "conv-1"
    assert calls == 2


async def test_put_then_get_until_the_time_bound() -> None:
    cache: DecisionCache[str, int] = DecisionCache(0.05, jitter=0.5)

    async def read() -> int:
        return 7

    value, stamp = await cache.read("k", read)
    cache.put("k", value, stamp)
    assert cache.get("k") == 7
    await asyncio.sleep(0.06)  # past ttl_s, whatever the spread drew
    assert cache.get("k") is None


async def test_a_forget_during_a_read_keeps_its_result_out_of_the_cache() -> None:
    cache: DecisionCache[tuple[str, str], str] = DecisionCache(5.0)
    reading = asyncio.Event()
    release = asyncio.Event()

    async def read() -> str:
        reading.set()
        await release.wait()
        return "allowed before the revocation"

    pending = asyncio.ensure_future(cache.read(("alice", "c1"), read))
    await reading.wait()
    cache.forget(lambda key, _value: key[0] == "alice")  # her rights changed meanwhile
    release.set()
    value, stamp = await pending
    cache.put(("alice", "c1"), value, stamp)
    assert cache.get(("alice", "c1")) is None  # the next request reads again
    # a read begun after the forget is cached as usual
    value, stamp = await cache.read(("alice", "c1"), read)
    cache.put(("alice", "c1"), value, stamp)
    assert cache.get(("alice", "c1")) == value


async def test_forget_drops_only_what_matches() -> None:
    cache: DecisionCache[tuple[str, str], str] = DecisionCache(5.0)

    async def read() -> str:
        return "x"

    for user in ("alice", "bob"):
        value, stamp = await cache.read((user, "c1"), read)
        cache.put((user, "c1"), value, stamp)
    assert cache.forget(lambda key, _value: key[0] == "alice") == 1
    assert cache.get(("alice", "c1")) is None
    assert cache.get(("bob", "c1")) == "x"


async def test_a_failed_read_reaches_every_caller_and_is_not_kept() -> None:
    cache: DecisionCache[str, str] = DecisionCache(5.0)
    release = asyncio.Event()

    async def broken() -> str:
        await release.wait()
        raise OSError("store unavailable")

    waiters = [asyncio.ensure_future(cache.read("k", broken)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    for outcome in await asyncio.gather(*waiters, return_exceptions=True):
        assert isinstance(outcome, OSError)

    async def fine() -> str:
        return "ok"

    assert (await cache.read("k", fine))[0] == "ok"  # read again, not the old failure


async def test_a_cancelled_caller_does_not_cancel_the_shared_read() -> None:
    cache: DecisionCache[str, str] = DecisionCache(5.0)
    release = asyncio.Event()

    async def read() -> str:
        await release.wait()
        return "v"

    first = asyncio.ensure_future(cache.read("k", read))
    second = asyncio.ensure_future(cache.read("k", read))
    await asyncio.sleep(0)
    first.cancel()  # the socket that started the read went away
    release.set()
    assert (await second)[0] == "v"
    with pytest.raises(asyncio.CancelledError):
        await first


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="required"):
        DecisionCache(-1.0)
    with pytest.raises(ValueError, match="required"):
        DecisionCache(1.0, jitter=1.5)
    with pytest.raises(ValueError, match="required"):
        DecisionCache(1.0, max_entries=0)
