"""A bounded per-connection send queue with a policy per traffic class.

Pure data structure: no asyncio. The connection shell puts encoded frames in
and a writer takes them out. Bounds are ``max_messages`` (frames) and
``max_bytes`` (sum of frame sizes); what happens past them depends on the
class of the frame (design.md, "Delivery guarantees"):

- :attr:`Delivery.RELIABLE` (replies, chat, call signalling): never dropped.
  When it does not fit, :meth:`SendQueue.put` returns :attr:`PutResult.OVERFLOW`
  and the caller must close the socket with ``slow_consumer`` (4009); the
  client reconnects and resumes from its last sequence numbers.
- :attr:`Delivery.COALESCE` (presence): one pending frame per ``key``; a newer
  frame replaces the pending one in place, so only the latest state is sent.
- :attr:`Delivery.LOSSY` (EEG): accepted only while the queue is under half of
  its bounds, leaving room for reliable traffic; otherwise dropped and counted
  per ``key``. The producer reads :meth:`SendQueue.take_dropped` and sends an
  explicit gap marker with its next frame for that key.

Fan-out queues a :class:`WireBatch` instead: several frames already framed for
the wire, built once and shared by every recipient, held as ONE queue item
(it still counts as ``count`` frames against ``max_messages``). It is
RELIABLE.
"""

from __future__ import annotations

import enum
from collections import deque

from protocol.codec import Frame, frame_size


class Delivery(enum.Enum):
    RELIABLE = "reliable"
    COALESCE = "coalesce"
    LOSSY = "lossy"


class PutResult(enum.Enum):
    QUEUED = "queued"
    COALESCED = "coalesced"  #: replaced a pending frame with the same key
    DROPPED = "dropped"  #: lossy frame dropped; counted for a gap marker
    OVERFLOW = "overflow"  #: reliable frame did not fit: close as slow consumer


class WireBatch:
    """Frames framed once for the wire and shared by every socket that gets them.

    ``wire`` is the concatenation of the serialised, unmasked WebSocket frames
    (written as is by the synchronous path); ``frames`` are their payloads, in
    the same order (sent one by one when the socket has no synchronous path).
    ``size`` is the payload bytes, ``count`` the number of frames, ``label``
    the message type for metrics.
    """

    __slots__ = ("count", "frames", "label", "size", "wire")

    def __init__(self, wire: bytes, frames: tuple[Frame, ...], label: str) -> None:
        self.wire = wire
        self.frames = frames
        self.count = len(frames)
        self.size = sum(frame_size(f) for f in frames)
        self.label = label


Queued = Frame | WireBatch


class _Item:
    __slots__ = ("frame", "key", "size")

    def __init__(self, frame: Frame, size: int, key: str | None) -> None:
        self.frame = frame
        self.size = size
        self.key = key


class SendQueue:
    """Frames waiting to be written to one socket, oldest first."""

    __slots__ = (
        "_bytes",
        "_coalesce",
        "_count",
        "_dropped",
        "_items",
        "max_bytes",
        "max_messages",
    )

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("queue bounds must be positive")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        # Created on first use and dropped when empty: an idle socket holds no deque.
        self._items: deque[_Item | WireBatch] | None = None
        self._count = 0  # frames queued (a batch counts its frames)
        self._bytes = 0
        self._coalesce: dict[str, _Item] = {}
        self._dropped: dict[str, int] = {}

    def __len__(self) -> int:
        """Frames queued (a :class:`WireBatch` counts as its ``count`` frames)."""
        return self._count

    @property
    def queued_bytes(self) -> int:
        """Sum of the sizes of the queued frames, in bytes."""
        return self._bytes

    def put(
        self, frame: Frame, delivery: Delivery = Delivery.RELIABLE, key: str | None = None
    ) -> PutResult:
        """Queue ``frame`` under ``delivery``'s policy; see the module docstring.

        ``key`` is required for COALESCE and LOSSY (raises ValueError otherwise).
        """
        size = frame_size(frame)
        if delivery is Delivery.RELIABLE:
            if len(self) >= self.max_messages or self._bytes + size > self.max_bytes:
                return PutResult.OVERFLOW
            self._append(_Item(frame, size, None))
            return PutResult.QUEUED
        if key is None:
            raise ValueError(f"{delivery.value} frames need a key")
        if delivery is Delivery.COALESCE:
            pending = self._coalesce.get(key)
            if pending is not None:
                if self._bytes + size - pending.size > self.max_bytes:
                    return PutResult.OVERFLOW
                self._bytes += size - pending.size
                pending.frame, pending.size = frame, size
                return PutResult.COALESCED
            if len(self) >= self.max_messages or self._bytes + size > self.max_bytes:
                return PutResult.OVERFLOW
            item = _Item(frame, size, key)
            self._coalesce[key] = item
            self._append(item)
            return PutResult.QUEUED
        if len(self) * 2 >= self.max_messages or (self._bytes + size) * 2 > self.max_bytes:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return PutResult.DROPPED
        self._append(_Item(frame, size, None))
        return PutResult.QUEUED

    def put_batch(self, batch: WireBatch) -> PutResult:
        """Queue ``batch`` (RELIABLE): QUEUED, or OVERFLOW when its frames do not fit."""
        if self._count + batch.count > self.max_messages or (
            self._bytes + batch.size > self.max_bytes
        ):
            return PutResult.OVERFLOW
        if self._items is None:
            self._items = deque()
        self._items.append(batch)
        self._count += batch.count
        self._bytes += batch.size
        return PutResult.QUEUED

    def _append(self, item: _Item) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        self._count += 1
        self._bytes += item.size

    def pop(self) -> Queued | None:
        """The oldest item (a frame or a batch), removed from the queue; None when empty."""
        items = self._items
        if not items:
            return None
        item = items.popleft()
        if not items:
            self._items = None
        self._bytes -= item.size
        if isinstance(item, WireBatch):
            self._count -= item.count
            return item
        self._count -= 1
        if item.key is not None:
            del self._coalesce[item.key]
        return item.frame

    def pop_all(self) -> list[Queued]:
        """Every queued item (frames and batches), oldest first, removing them all."""
        items = self._items
        if not items:
            return []
        self._items = None
        self._bytes = 0
        self._count = 0
        self._coalesce.clear()
        return [item if isinstance(item, WireBatch) else item.frame for item in items]

    def take_dropped(self, key: str) -> int:
        """How many LOSSY frames for ``key`` were dropped since the last call."""
        return self._dropped.pop(key, 0)

    def clear(self) -> None:
        """Forget every queued frame (the socket is gone)."""
        self._items = None
        self._coalesce.clear()
        self._dropped.clear()
        self._bytes = 0
        self._count = 0
