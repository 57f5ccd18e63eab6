"""Between nodes: a node asks the node recording a stream for the samples in its ring.

A viewer's first watch of a stream on a node that does not record it needs
the last ``eeg_ring_seconds`` of samples, contiguous with the live messages
the node starts receiving on the stream's topic. The node subscribes to the
topic first (buffering what comes), then asks the owner, over the broker:

- request, on topic ``eegq:<owner node>``: msgpack ``{"q": id, "n": node,
  "s": stream}``;
- replies, on topic ``eegr:<asking node>``, published by the owner in one
  batch right after it read its ring: ``{"q": id, "f": first, "d": bytes}``
  (samples ``[f, f + len(d) / frame width)``, at most 512 KiB each),
  ``{"q": id, "g": [a, b]}`` (a gap), and last ``{"q": id, "end": e}``; or
  ``{"q": id, "x": "not_owner"}``.

Contiguity: the owner appends what it accepts to its ring before publishing
it, and publishes the reply after everything it accepted until then; the
broker delivers one publisher's messages in order, and the asking node was
subscribed to the topic before it asked, so every sample after ``e`` reaches
it on the topic. When the owner does not answer within ``eeg_fill_timeout_s``
(it died, or the stream moved), the node fills from the store instead (what
is committed: up to ``eeg_persist_interval_s`` behind the live edge; the
difference is a gap in that node's ring until the next watch).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from server.broker.base import Broker, BrokerError, Subscription
from server.eeg.feed import Feed

log = logging.getLogger(__name__)

#: Bytes of samples per reply message (the broker's messages are at most 1 MiB).
REPLY_BYTES = 512 * 1024


def request_topic(node: str) -> str:
    """Where ``node`` receives fill requests."""
    return f"eegq:{node}"


def reply_topic(node: str) -> str:
    """Where ``node`` receives fill replies."""
    return f"eegr:{node}"


@dataclass
class Fill:
    """What the owner sent: runs of samples (bytes; None: a gap) and the end it had."""

    runs: list[tuple[int, int, bytes | None]] = field(default_factory=list)
    end: int = 0
    done: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Relay:
    """Fill requests and replies of one node (see the module docstring)."""

    def __init__(
        self,
        broker: Broker,
        publish: Callable[[str, bytes], None],
        node_id: str,
        local_feed: Callable[[str], Feed | None],
    ) -> None:
        self.broker, self.publish, self.node = broker, publish, node_id
        self.local_feed = local_feed
        self._subs: list[Subscription] = []
        self._ids = itertools.count(1)
        self._waiting: dict[int, Fill] = {}
        self.served = 0

    @property
    def running(self) -> bool:
        """Subscribed to its two topics."""
        return bool(self._subs)

    async def start(self) -> None:
        """Subscribe to this node's request and reply topics (raises BrokerError)."""
        self._subs = await self.broker.subscribe_many(
            [request_topic(self.node), reply_topic(self.node)], self._on_message
        )

    async def close(self) -> None:
        """Unsubscribe; pending fills end as not answered."""
        subs, self._subs = self._subs, []
        try:
            await self.broker.unsubscribe_many(subs)
        except BrokerError:
            log.warning("eeg relay unsubscribe failed")
        for fill in self._waiting.values():
            if not fill.done.done():
                fill.done.set_result(False)
        self._waiting.clear()

    async def fill(self, owner: str, sid: str, timeout_s: float) -> Fill | None:
        """The owner's buffered samples of ``sid``, or None (no answer, not the owner)."""
        rid = next(self._ids)
        fill = Fill()
        self._waiting[rid] = fill
        try:
            payload = msgpack.packb({"q": rid, "n": self.node, "s": sid})
            await self.broker.publish(request_topic(owner), payload)
            ok = await asyncio.wait_for(asyncio.shield(fill.done), timeout_s)
        except (TimeoutError, BrokerError):
            ok = False
        finally:
            self._waiting.pop(rid, None)
        return fill if ok else None

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            msg: dict[str, Any] = msgpack.unpackb(payload, raw=False)
            rid = int(msg["q"])
        except (ValueError, KeyError, TypeError, msgpack.UnpackException):
            log.warning("malformed eeg relay message")
            return
        if topic == request_topic(self.node):
            self._serve(rid, str(msg.get("n", "")), str(msg.get("s", "")))
            return
        fill = self._waiting.get(rid)
        if fill is None or fill.done.done():
            return
        if "x" in msg:
            fill.done.set_result(False)
        elif "d" in msg:
            data = msg["d"]
            fill.runs.append((int(msg["f"]), int(msg["c"]), data))
        elif "g" in msg:
            a, b = msg["g"]
            fill.runs.append((int(a), int(b) - int(a), None))
        elif "end" in msg:
            fill.end = int(msg["end"])
            fill.done.set_result(True)

    def _serve(self, rid: int, node: str, sid: str) -> None:
        if not node:
            return
        topic = reply_topic(node)
        feed = self.local_feed(sid)
        if feed is None or not feed.recorded_here or not feed.ready.is_set():
            self.publish(topic, msgpack.packb({"q": rid, "x": "not_owner"}))
            return
        ring = feed.ring
        width = feed.nch * feed.dtype.itemsize
        per = max(1, REPLY_BYTES // width)
        for ga, gb in ring.gaps_in(ring.start, ring.end):
            self.publish(topic, msgpack.packb({"q": rid, "g": [ga, gb]}))
        for a, b in ring.segments(ring.start, ring.end):
            for f in range(a, b, per):
                n = min(per, b - f)
                data = ring.read(f, f + n).tobytes()
                self.publish(topic, msgpack.packb({"q": rid, "f": f, "c": n, "d": data}))
        self.publish(topic, msgpack.packb({"q": rid, "end": ring.end}))
        self.served += 1
