"""Pre-serialised frames: the shared cache is bounded in bytes; batches count as their frames."""

from __future__ import annotations

from websockets.frames import Frame, Opcode

from server.sendqueue import PutResult, SendQueue
from server.transport import WireCache, serialize, wire_batch


def test_the_wire_cache_never_holds_more_than_its_bytes() -> None:
    cache = WireCache(max_bytes=64 * 1024, max_frame_bytes=4096)
    for i in range(10_000):  # every reply is different: the cache must not grow with them
        frame = cache.wire(f"reply {i} " + "x" * 200)
        assert frame == Frame(Opcode.TEXT, (f"reply {i} " + "x" * 200).encode()).serialize(
            mask=False
        )
        assert cache._bytes <= cache.max_bytes
    big = b"y" * 100_000
    assert cache.wire(big) == serialize(big)
    assert big not in cache._frames  # too large to keep
    shared = b"presence"
    assert cache.wire(shared) is cache.wire(shared)  # the same frame for every socket


def test_a_batch_is_one_item_that_counts_as_its_frames() -> None:
    q = SendQueue(max_messages=5, max_bytes=1 << 20)
    batch = wire_batch([b"a", b"b", b"c"], "event")
    assert batch.wire == serialize(b"a") + serialize(b"b") + serialize(b"c")
    assert q.put_batch(batch) is PutResult.QUEUED
    assert len(q) == 3
    assert q.put(b"d") is PutResult.QUEUED
    assert q.put_batch(wire_batch([b"e", b"f"], "event")) is PutResult.OVERFLOW  # 6 > 5
    assert q.pop_all() == [batch, b"d"]
    assert len(q) == 0
