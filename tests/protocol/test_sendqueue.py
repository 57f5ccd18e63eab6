"""server/sendqueue.py: the bounded per-socket send queue (pure; no event loop)."""

from __future__ import annotations

import pytest

from server.sendqueue import Delivery, PutResult, SendQueue

R, C, L = Delivery.RELIABLE, Delivery.COALESCE, Delivery.LOSSY


def drain(q: SendQueue) -> list[bytes | str]:
    out = []
    while (frame := q.pop()) is not None:
        out.append(frame)
    assert len(q) == 0
    assert q.queued_bytes == 0
    return out


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        SendQueue(0, 10)
    with pytest.raises(ValueError, match="positive"):
        SendQueue(10, 0)


def test_pop_order_is_fifo_across_classes() -> None:
    q = SendQueue(100, 10_000)
    assert q.put(b"r1") is PutResult.QUEUED
    assert q.put(b"c1", C, "alice") is PutResult.QUEUED
    assert q.put(b"l1", L, "eeg") is PutResult.QUEUED
    assert q.put("r2") is PutResult.QUEUED  # text frames too
    assert len(q) == 4
    assert drain(q) == [b"r1", b"c1", b"l1", "r2"]
    assert q.pop() is None


def test_reliable_overflow_by_count() -> None:
    q = SendQueue(3, 10_000)
    for i in range(3):
        assert q.put(b"x%d" % i) is PutResult.QUEUED
    assert q.put(b"y") is PutResult.OVERFLOW
    assert len(q) == 3  # the overflowing frame was not queued
    q.pop()
    assert q.put(b"y") is PutResult.QUEUED


def test_reliable_overflow_by_bytes() -> None:
    q = SendQueue(100, 10)
    assert q.put(b"123456") is PutResult.QUEUED
    assert q.put(b"1234") is PutResult.QUEUED  # exactly at the bound
    assert q.queued_bytes == 10
    assert q.put(b"1") is PutResult.OVERFLOW
    assert q.queued_bytes == 10
    assert drain(q) == [b"123456", b"1234"]


def test_a_single_frame_larger_than_the_queue_overflows() -> None:
    q = SendQueue(10, 8)
    assert q.put(b"123456789") is PutResult.OVERFLOW
    assert len(q) == 0


def test_text_frames_count_utf8_bytes() -> None:
    q = SendQueue(10, 100)
    q.put("é" * 10)
    assert q.queued_bytes == 20


def test_coalesce_keeps_position_and_only_the_latest() -> None:
    q = SendQueue(100, 10_000)
    q.put(b"first")
    q.put(b"alice:online", C, "alice")
    q.put(b"middle")
    q.put(b"bob:online", C, "bob")
    assert q.put(b"alice:away", C, "alice") is PutResult.COALESCED
    assert q.put(b"alice:busy!", C, "alice") is PutResult.COALESCED
    assert len(q) == 4
    assert drain(q) == [b"first", b"alice:busy!", b"middle", b"bob:online"]


def test_coalesce_byte_accounting_is_exact() -> None:
    q = SendQueue(100, 10_000)
    q.put(b"12345")
    q.put(b"abc", C, "k")
    assert q.queued_bytes == 8
    q.put(b"abcdefgh", C, "k")  # grows by 5
    assert q.queued_bytes == 13
    q.put(b"a", C, "k")  # shrinks by 7
    assert q.queued_bytes == 6
    assert q.pop() == b"12345"
    assert q.queued_bytes == 1
    assert q.pop() == b"a"
    assert q.queued_bytes == 0


def test_coalesce_key_is_free_again_after_pop() -> None:
    q = SendQueue(100, 10_000)
    q.put(b"v1", C, "k")
    assert q.pop() == b"v1"
    assert q.put(b"v2", C, "k") is PutResult.QUEUED  # a new entry, not a replacement
    q.put(b"r")
    assert q.put(b"v3", C, "k") is PutResult.COALESCED
    assert drain(q) == [b"v3", b"r"]


def test_coalesce_new_key_overflows_like_reliable() -> None:
    q = SendQueue(2, 10_000)
    q.put(b"a", C, "a")
    q.put(b"b", C, "b")
    assert q.put(b"c", C, "c") is PutResult.OVERFLOW
    assert q.put(b"a2", C, "a") is PutResult.COALESCED  # a replacement still fits


def test_coalesce_and_lossy_need_a_key() -> None:
    q = SendQueue(10, 100)
    with pytest.raises(ValueError, match="key"):
        q.put(b"x", C)
    with pytest.raises(ValueError, match="key"):
        q.put(b"x", L)


def test_lossy_dropped_past_half_capacity_by_count() -> None:
    q = SendQueue(10, 10_000)
    results = [q.put(b"s%d" % i, L, "eeg:1") for i in range(8)]
    assert results == [PutResult.QUEUED] * 5 + [PutResult.DROPPED] * 3
    assert len(q) == 5
    assert q.take_dropped("eeg:1") == 3
    assert q.take_dropped("eeg:1") == 0  # reset by take_dropped


def test_lossy_dropped_past_half_capacity_by_bytes() -> None:
    q = SendQueue(100, 100)
    assert q.put(b"x" * 30, L, "eeg") is PutResult.QUEUED
    assert q.put(b"x" * 20, L, "eeg") is PutResult.QUEUED  # 50 bytes: exactly half
    assert q.put(b"x", L, "eeg") is PutResult.DROPPED
    assert q.queued_bytes == 50


def test_lossy_drops_are_counted_per_key() -> None:
    q = SendQueue(2, 10_000)
    q.put(b"a", L, "eeg:a")
    for _ in range(3):
        assert q.put(b"a", L, "eeg:a") is PutResult.DROPPED
    assert q.put(b"b", L, "eeg:b") is PutResult.DROPPED
    assert q.take_dropped("eeg:a") == 3
    assert q.take_dropped("eeg:b") == 1
    assert q.take_dropped("eeg:c") == 0
    q.pop()  # room again
    assert q.put(b"a", L, "eeg:a") is PutResult.QUEUED
    assert q.take_dropped("eeg:a") == 0


def test_reliable_still_fits_when_lossy_filled_half() -> None:
    q = SendQueue(10, 100)
    while q.put(b"e" * 10, L, "eeg") is PutResult.QUEUED:
        pass
    assert len(q) == 5
    assert q.queued_bytes == 50
    for i in range(5):
        assert q.put(b"r" * 10) is PutResult.QUEUED, i
    assert q.put(b"r") is PutResult.OVERFLOW  # full now, by count and by bytes
    assert q.put(b"p", C, "presence") is PutResult.OVERFLOW
    assert q.put(b"e", L, "eeg") is PutResult.DROPPED


def test_clear() -> None:
    q = SendQueue(10, 1000)
    q.put(b"r")
    q.put(b"c", C, "k")
    q.put(b"l", L, "eeg")
    q.clear()
    assert len(q) == 0
    assert q.queued_bytes == 0
    assert q.pop() is None
    assert q.put(b"c2", C, "k") is PutResult.QUEUED  # the coalesce slot was forgotten too
    assert drain(q) == [b"c2"]
