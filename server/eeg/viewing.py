"""Viewers: the node's feeds (one per stream watched or recorded here), watch and backfill.

``eeg.watch`` makes sure the node has the stream's :class:`~server.eeg.feed.Feed`
(created on a first watch: subscribed to the stream's topic, then filled from
the owner node's ring through :mod:`server.eeg.relay`, or from the store),
attaches the socket to the view's node-local LOSSY channel and to the
stream's RELIABLE control channel (annotations, state), and answers the
output index the live frames start from (``live_from``). The viewer then
reads everything before it with ``eeg.backfill`` pages: from the node's ring
when it holds them, else from the store (decrypting the stored chunks), so a
finished recording is read the same way. A page is at most
``BACKFILL_PAGE_BYTES`` of frames, sent RELIABLE before the page's result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy.engine import Connection

from media.eeg.ring import Ring
from media.eeg.views import MAX_FACTOR, View, make_view
from protocol.eeg import (
    BACKFILL_PAGE_BYTES,
    FLAG_BACKFILL,
    FORMATS,
    StreamMeta,
)
from server.broker.base import Broker, Subscription
from server.channels import ChannelService
from server.eeg import store
from server.eeg.feed import Feed, topic_of, view_frames
from server.eeg.relay import Relay
from server.security.crypto import Keyring
from server.store.db import Database

log = logging.getLogger(__name__)


def ring_capacity(meta: StreamMeta, seconds: float, max_bytes: int) -> int:
    """Samples a stream's ring holds: ``seconds`` of it, at most ``max_bytes`` (>= 1 s)."""
    width = len(meta.channels) * FORMATS[meta.format][1]
    return max(meta.rate, min(int(seconds * meta.rate), max_bytes // width))


def source_range(view: View, j0: int, j1: int) -> tuple[int, int]:
    """The source samples outputs ``[j0, j1)`` of ``view`` are computed from."""
    q = view.factor
    if view.mode == "decimate":
        taps = getattr(view, "taps_per_output", 0) * q
        delay = taps // 2
        return max(0, j0 * q + delay - taps), (j1 - 1) * q + delay + 1
    return j0 * q, j1 * q


def check_view(mode: str, factor: int) -> View:
    """The view ``mode`` of ``factor``; ValueError unless the factor is one a watch gives."""
    if mode == "raw" and factor != 1:
        raise ValueError("raw views have factor 1")
    if mode != "raw" and (factor < 2 or factor > MAX_FACTOR or factor & (factor - 1)):
        raise ValueError(f"factor must be a power of two in 2..{MAX_FACTOR}")
    return make_view(mode, factor)


class Feeds:
    """The feeds of this node, by stream id."""

    def __init__(
        self,
        *,
        node_id: str,
        db: Database,
        keys: Keyring,
        broker: Broker,
        channels: ChannelService,
        relay: Relay,
        ring_seconds: float,
        ring_max_bytes: int,
        fill_timeout_s: float,
        on_frames: Callable[[int], None],
    ) -> None:
        self.node, self.db, self.keys, self.broker = node_id, db, keys, broker
        self.channels, self.relay = channels, relay
        self.ring_seconds, self.ring_max_bytes = ring_seconds, ring_max_bytes
        self.fill_timeout_s = fill_timeout_s
        self.on_frames = on_frames
        self.feeds: dict[str, Feed] = {}
        self._subs: dict[str, Subscription] = {}

    def get(self, sid: str) -> Feed | None:
        """The feed of ``sid`` on this node (ready or not), or None."""
        return self.feeds.get(sid)

    def new(self, row: store.StreamRow, meta: StreamMeta) -> Feed:
        """A fresh feed for ``row`` (not ready, not registered)."""
        cap = ring_capacity(meta, self.ring_seconds, self.ring_max_bytes)
        feed = Feed(row.id, row.number, meta, cap, self.channels, on_frames=self.on_frames)
        feed.exam_id = row.exam_id
        return feed

    async def for_recording(self, row: store.StreamRow, meta: StreamMeta) -> Feed:
        """The feed a recording of this node pushes into: the one viewers here already
        follow, or a new one prefilled from the store. Either way it follows the stream's
        topic too (its own copies are dropped by index), so it keeps serving its viewers
        if the recorder moves to another node."""
        feed = self.feeds.get(row.id)
        if feed is not None:
            await feed.ready.wait()
            feed.recorded_here = True
            return feed
        feed = self.new(row, meta)
        feed.recorded_here = True
        self.feeds[row.id] = feed
        try:
            await self._follow(feed)
            await self._fill_from_store(feed, row.durable_end)
        except BaseException:
            if self.feeds.get(row.id) is feed:
                del self.feeds[row.id]
                self._unsubscribe(row.id)
            feed.ready.set()
            raise
        return feed

    async def _follow(self, feed: Feed) -> None:
        if feed.sid not in self._subs:
            self._subs[feed.sid] = await self.broker.subscribe(
                topic_of(feed.sid), lambda _t, payload: feed.on_topic(payload)
            )

    async def ensure(self, row: store.StreamRow) -> Feed:
        """The ready feed of ``row``'s stream on this node (created and filled on first use).

        Raises BrokerError or SQLAlchemy errors when neither the broker nor the
        store can be reached.
        """
        sid = row.id
        feed = self.feeds.get(sid)
        if feed is not None:
            await feed.ready.wait()
            return feed
        keys = self.keys
        meta = await self.db.run(
            lambda c: store.stream_meta(c, keys, sid, row.meta_version), readonly=True
        )
        feed = self.new(row, meta)
        self.feeds[sid] = feed
        try:
            if row.state == "live":
                await self._follow(feed)
            await self._fill(feed)
        except BaseException:
            if self.feeds.get(sid) is feed:
                del self.feeds[sid]
                self._unsubscribe(sid)
            feed.ready.set()
            raise
        return feed

    async def _fill(self, feed: Feed) -> None:
        sid = feed.sid
        row = await self.db.run(lambda c: store.get_stream(c, sid), readonly=True)
        assert row is not None
        if row.state == "closed":
            feed.closed = True
        elif row.owner_node and row.owner_node != self.node:
            fill = await self.relay.fill(row.owner_node, sid, self.fill_timeout_s)
            if fill is not None:
                runs = sorted(fill.runs)
                start = runs[0][0] if runs else fill.end
                feed.ring.reset(start)
                for first, count, data in runs:
                    if data is None:
                        feed.push_gap(first, first + count)
                    else:
                        block = np.frombuffer(data, dtype=feed.dtype).reshape(count, feed.nch)
                        feed.push(first, block, 0)
                feed.push_gap(feed.ring.end, fill.end)
                feed.filled(start)
                return
            log.warning("eeg owner did not answer: filling from the store", extra={"stream": sid})
        await self._fill_from_store(feed, row.durable_end)

    async def _fill_from_store(self, feed: Feed, end: int) -> None:
        start = max(0, end - feed.ring.capacity)
        keys, sid = self.keys, feed.sid
        chunks = await self.db.run(
            lambda c: store.read_chunks(c, keys, sid, start, end), readonly=True
        )
        feed.ring.reset(start)
        load(feed.ring, chunks, start, end)
        feed.filled(start)

    def release(self, sid: str) -> None:
        """Drop the feed of ``sid`` when nobody watches it here and nothing records it."""
        feed = self.feeds.get(sid)
        if feed is None:
            return
        feed.drop_unused_views()
        if feed.views:
            return
        if feed.recorded_here and not feed.closed:
            return
        del self.feeds[sid]
        self._unsubscribe(sid)

    def moved_away(self, sid: str) -> None:
        """Another node records ``sid`` now (this feed keeps following the topic)."""
        feed = self.feeds.get(sid)
        if feed is not None:
            feed.recorded_here = False
            self.release(sid)

    def _unsubscribe(self, sid: str) -> None:
        sub = self._subs.pop(sid, None)
        if sub is not None:
            self.channels.supervisor.spawn("eeg-unsubscribe", self.broker.unsubscribe(sub))

    async def close(self) -> None:
        """Unsubscribe every topic."""
        subs = list(self._subs.values())
        self._subs.clear()
        self.feeds.clear()
        if subs:
            await self.broker.unsubscribe_many(subs)

    # -- backfill ---------------------------------------------------------------------
    async def page(
        self, row: store.StreamRow, view: View, j0: int, j1: int
    ) -> tuple[list[bytes], int, list[list[int]], str]:
        """One backfill page: frames of outputs from ``j0`` (before ``j1``), the next output
        to ask for, the output ranges with no data, and where it came from."""
        feed = self.feeds.get(row.id)
        meta = feed.meta if feed is not None else None
        if meta is None:
            keys, sid, v = self.keys, row.id, row.meta_version
            meta = await self.db.run(lambda c: store.stream_meta(c, keys, sid, v), readonly=True)
        fmt = view.output_format(meta.format)
        width = view.width(len(meta.channels), FORMATS[fmt][1])
        j1 = min(j1, j0 + max(1, BACKFILL_PAGE_BYTES // width))
        if feed is not None and feed.ready.is_set() and j0 * view.factor >= feed.ring.start:
            src: Any = feed.ring
            where = "ring"
        else:
            src = await self._store_source(row, meta, view, j0, j1)
            where = "store"
        j1 = min(j1, view.ready(src))
        if j1 <= j0:
            return [], j0, [], where
        runs = view.compute(src, j0, j1)
        device = feed.device_us if feed is not None else 0
        frames = view_frames(row.number, len(meta.channels), device, view, fmt, runs, FLAG_BACKFILL)
        missing, cur = [], j0
        for j, arr in runs:
            if j > cur:
                missing.append([cur, j])
            cur = j + arr.shape[0]
        if cur < j1:
            missing.append([cur, j1])
        return frames, j1, missing, where

    async def _store_source(
        self, row: store.StreamRow, meta: StreamMeta, view: View, j0: int, j1: int
    ) -> Ring:
        keys, sid = self.keys, row.id

        def read(c: Connection) -> tuple[store.StreamRow | None, list[store.Chunk]]:
            now = store.get_stream(c, sid)
            end = now.durable_end if now is not None else 0
            a, b = source_range(view, j0, j1)
            return now, store.read_chunks(c, keys, sid, a, min(b, end))

        now, chunks = await self.db.run(read, readonly=True)
        end = now.durable_end if now is not None else 0
        a, b = source_range(view, j0, j1)
        b = min(b, end)
        ring = Ring(len(meta.channels), FORMATS[meta.format][2], max(1, b - a + 1), at=a)
        load(ring, chunks, a, b)
        if now is not None and now.state == "closed" and b == end:
            ring.gap(end + 1)  # the end is final: the last outputs are computable
        return ring


def load(ring: Ring, chunks: list[store.Chunk], a: int, b: int) -> None:
    """Put the stored ``chunks`` (clipped to ``[a, b)``) into ``ring`` (reset at ``a``)."""
    nch, dtype = ring.channels, ring.dtype
    for ch in chunks:
        lo, hi = max(ch.first, a), min(ch.first + ch.count, b)
        if hi <= lo:
            continue
        if lo > ring.end:
            ring.gap(lo)
        if ch.data is None:
            ring.gap(hi)
            continue
        block = np.frombuffer(ch.data, dtype=dtype).reshape(ch.count, nch)
        ring.append(lo, block[lo - ch.first : hi - ch.first])
    if ring.end < b:
        ring.gap(b)
