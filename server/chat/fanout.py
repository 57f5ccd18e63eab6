"""Per-node fan-out of conversation events to the sockets that follow them.

After a commit, the writer's node publishes one notice per conversation on
broker topic ``conv:<id>``: msgpack ``{"c": conv, "e": [[seq, frame], ...]}``
where ``frame`` is the ``event`` message already encoded with the msgpack
codec (ephemeral events: ``{"c": conv, "x": frame}``). Never pickle.

Each node keeps one :class:`Channel` per conversation that a local socket
follows, subscribed to its topic. A channel delivers persisted events to its
sockets strictly in seq order, without gaps: an event that arrives ahead of
its predecessors (several publishing nodes, or a notice lost by the
at-most-once broker) waits while the missing ones are read from the database,
where they are already committed (seqs commit contiguously, see
:mod:`server.chat.store`). Frames are encoded once per codec and queued
RELIABLE with ``send_frame``; a socket that cannot keep up is closed 4009 by
the connection layer and resumes with ``chat.sync``.

The node that commits also feeds its own channel directly
(:meth:`Fanout.committed`), so its followers never depend on the broker round
trip; the broker notice that comes back later is de-duplicated by seq. A
publish that fails triggers a check of the conversation's last seq, and every
channel re-reads its conversation's last seq every :data:`CHECK_INTERVAL_S`
seconds: a seq seen committed at the previous check and still not delivered is
read from the database. So a lost notice (Redis pub/sub is at-most-once, e.g.
while its listener reconnects) delays an event by at most about twice that
interval, even when it is the conversation's last one.

A socket that starts following gets an :class:`Attachment` with a buffer:
live events are buffered while the caller replays history, then
:meth:`Attachment.go_live` sends the buffered ones newer than the last replayed
seq. ``last_sent`` filters any event a socket already got, so the handover
never duplicates nor loses an event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import msgspec

from protocol.chat import ChatEvent, channel_of
from protocol.codec import JsonCodec, MsgpackCodec
from protocol.messages import Event
from server.broker.base import Broker, BrokerError, Subscription
from server.connection import Connection
from server.sendqueue import Delivery

log = logging.getLogger(__name__)

_MSGPACK = MsgpackCodec()
_JSON = JsonCodec()
_EVENT_DECODER = msgspec.msgpack.Decoder(Event)

#: Reads committed events of ``conv`` with ``after < seq < until``, ascending.
ReadRange = Callable[[str, int, int], Awaitable[list[ChatEvent]]]
#: The last committed seq of ``conv``.
ReadLast = Callable[[str], Awaitable[int]]
#: The last committed seq of each existing conversation among those given.
ReadLasts = Callable[[list[str]], Awaitable[dict[str, int]]]

#: Seconds between two checks of a followed conversation's last seq (lost notices).
CHECK_INTERVAL_S = 5.0
#: Conversations whose last seq one check reads in one query.
CHECK_BATCH = 500
#: Seconds :meth:`Fanout.close` waits for pending publishes before cancelling them.
CLOSE_TIMEOUT_S = 5.0


def encode_event(conv: str, ev: ChatEvent) -> bytes:
    """The msgpack ``event`` frame of a persisted chat event."""
    return _MSGPACK.encode(Event(ch=channel_of(conv), seq=ev.seq, kind=ev.kind, data=ev))


def _to_json(frame: bytes) -> str:
    return _JSON.encode(_EVENT_DECODER.decode(frame))


class Attachment:
    """One socket following one conversation."""

    __slots__ = ("buffer", "conn", "last_sent")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.last_sent = 0
        self.buffer: list[tuple[int, bytes]] | None = []

    def send(self, seq: int, frame: bytes, json_cache: list[str]) -> bool:
        """Queue event ``seq`` unless already sent; False when the socket is closing."""
        if seq <= self.last_sent:
            return True
        self.last_sent = seq
        conn = self.conn
        if conn.codec.binary:
            return conn.send_frame(frame, "event", Delivery.RELIABLE)
        if not json_cache:
            json_cache.append(_to_json(frame))
        return conn.send_frame(json_cache[0], "event", Delivery.RELIABLE)

    def go_live(self, last_replayed: int) -> None:
        """End the handover: send buffered events newer than ``last_replayed``."""
        self.last_sent = max(self.last_sent, last_replayed)
        buffered, self.buffer = self.buffer or [], None
        for seq, frame in buffered:
            self.send(seq, frame, [])


class Channel:
    """The node's view of one conversation: ordered delivery to its attachments."""

    def __init__(self, conv: str) -> None:
        self.conv = conv
        self.last = -1  # last seq delivered; -1 until ready
        self.pending: dict[int, bytes] = {}
        self.attached: dict[Connection, Attachment] = {}
        self.subscription: Subscription | None = None
        self.ready = asyncio.Event()
        self.filling = False
        self.seen_last = 0  # the conversation's last seq read at the previous check


class Fanout:
    """The channels of this node; see the module docstring."""

    def __init__(
        self, broker: Broker, read_range: ReadRange, read_last: ReadLast,
        read_lasts: ReadLasts | None = None, *, check_interval_s: float = CHECK_INTERVAL_S,
    ) -> None:  # fmt: skip
        self._broker = broker
        self._read_range = read_range
        self._read_last = read_last
        self._read_lasts = read_lasts or self._read_each
        self._check_interval_s = check_interval_s
        self._channels: dict[str, Channel] = {}
        self._by_conn: dict[Connection, set[str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._checker: asyncio.Task[None] | None = None
        self.gap_fills = 0
        self.publish_failures = 0

    async def start(self) -> None:
        """Start the periodic last-seq check of followed conversations (idempotent)."""
        if self._checker is None:
            self._checker = asyncio.create_task(self._check_loop(), name="chat-fanout-check")

    async def _read_each(self, convs: list[str]) -> dict[str, int]:
        return {conv: await self._read_last(conv) for conv in convs}

    # -- publishing ---------------------------------------------------------------
    def committed(self, conv: str, events: list[ChatEvent]) -> None:
        """Deliver committed ``events`` of ``conv`` (ascending seq) here, and publish them.

        This node's followers get them at once, without the broker round trip;
        the notice coming back from the broker is then ignored (seq already
        delivered). Must be called on the event loop; does not block.
        """
        entries = [(ev.seq, encode_event(conv, ev)) for ev in events]
        ch = self._channels.get(conv)
        if ch is not None:
            for seq, frame in entries:
                if seq > ch.last:
                    ch.pending.setdefault(seq, frame)
            self._advance(ch)
        self.spawn(self._publish(conv, entries))

    async def _publish(self, conv: str, entries: list[tuple[int, bytes]]) -> None:
        notice = {"c": conv, "e": [list(e) for e in entries]}
        try:
            await self._broker.publish(channel_of(conv), msgpack.packb(notice))
        except BrokerError as exc:
            # Other nodes catch up at their next check; the broker is probably
            # losing other nodes' notices too: check this node's channel now.
            self.publish_failures += 1
            log.warning("chat publish failed", extra={"conv": conv, "error": type(exc).__name__})
            ch = self._channels.get(conv)
            if ch is not None:
                self.spawn(self._check_now(ch))

    async def publish_ephemeral(self, conv: str, kind: str, data: Any) -> None:
        """Send an ephemeral (seq 0, not stored, not replayed) event to followers."""
        frame = _MSGPACK.encode(Event(ch=channel_of(conv), seq=0, kind=kind, data=data))
        await self._broker.publish(channel_of(conv), msgpack.packb({"c": conv, "x": frame}))

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` in a task kept until done (publishing from sync callbacks)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("chat fan-out task failed", exc_info=task.exception())

    # -- following ------------------------------------------------------------------
    async def attach(self, conn: Connection, conv: str) -> Attachment:
        """Start (or restart) ``conn`` following ``conv``, in buffering mode.

        The caller replays history then calls :meth:`Attachment.go_live`.
        Raises BrokerError when the broker cannot subscribe.
        """
        while True:
            ch = self._channels.get(conv)
            if ch is None:
                ch = Channel(conv)
                self._channels[conv] = ch
                try:
                    ch.subscription = await self._broker.subscribe(
                        channel_of(conv), self._on_notice
                    )
                    ch.last = ch.seen_last = await self._read_last(conv)
                except BaseException:
                    if self._channels.get(conv) is ch:
                        del self._channels[conv]
                    if ch.subscription is not None:
                        self.spawn(self._broker.unsubscribe(ch.subscription))
                    ch.ready.set()
                    raise
                ch.ready.set()
                self._advance(ch)
                break
            await ch.ready.wait()
            if self._channels.get(conv) is ch:
                break
            # Its subscribe failed and it was dropped: start over (and subscribe ourselves).
        att = Attachment(conn)
        ch.attached[conn] = att
        self._by_conn.setdefault(conn, set()).add(conv)
        return att

    def detach(self, conn: Connection, conv: str) -> None:
        """Stop ``conn`` following ``conv``; the channel goes when nobody follows it."""
        ch = self._channels.get(conv)
        if ch is not None and ch.attached.pop(conn, None) is not None and not ch.attached:
            del self._channels[conv]
            if ch.subscription is not None:
                self.spawn(self._broker.unsubscribe(ch.subscription))
        convs = self._by_conn.get(conn)
        if convs is not None:
            convs.discard(conv)
            if not convs:
                del self._by_conn[conn]

    def drop(self, conn: Connection) -> None:
        """Forget every attachment of a closed socket."""
        for conv in list(self._by_conn.get(conn, ())):
            self.detach(conn, conv)

    def following(self, conn: Connection, conv: str) -> bool:
        """True while ``conn`` follows ``conv`` on this node."""
        ch = self._channels.get(conv)
        return ch is not None and conn in ch.attached

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Wait (at most ``timeout_s``) for pending publishes, then unsubscribe everything.

        Call after the writer is closed, so that its last batch is announced.
        Tasks still running after ``timeout_s`` (broker or database down) are cancelled.
        """
        if self._checker is not None:
            self._checker.cancel()
            await asyncio.gather(self._checker, return_exceptions=True)
            self._checker = None
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)
        for ch in list(self._channels.values()):
            if ch.subscription is not None:
                try:
                    await self._broker.unsubscribe(ch.subscription)
                except BrokerError:
                    log.warning("chat unsubscribe failed at close")
        self._channels.clear()
        self._by_conn.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- delivery ----------------------------------------------------------------------
    def _on_notice(self, topic: str, payload: bytes) -> None:
        notice = msgpack.unpackb(payload, raw=False)
        ch = self._channels.get(notice["c"])
        if ch is None:
            return
        if "x" in notice:
            self._ephemeral(ch, notice["x"])
            return
        for seq, frame in notice["e"]:
            if seq > ch.last:
                ch.pending[seq] = frame
        self._advance(ch)

    def _ephemeral(self, ch: Channel, frame: bytes) -> None:
        json_cache: list[str] = []
        for conn, att in list(ch.attached.items()):
            if att.buffer is not None:
                continue
            if conn.codec.binary:
                ok = conn.send_frame(frame, "event", Delivery.RELIABLE)
            else:
                if not json_cache:
                    json_cache.append(_to_json(frame))
                ok = conn.send_frame(json_cache[0], "event", Delivery.RELIABLE)
            if not ok and conn.closing:
                self.detach(conn, ch.conv)

    def _advance(self, ch: Channel) -> None:
        if ch.last < 0 or ch.filling:
            return
        pending = ch.pending
        while pending:
            frame = pending.pop(ch.last + 1, None)
            if frame is None:
                for seq in [s for s in pending if s <= ch.last]:
                    del pending[seq]
                if pending:
                    ch.filling = True
                    self.spawn(self._fill(ch, min(pending)))
                return
            ch.last += 1
            self._deliver(ch, ch.last, frame)

    def _deliver(self, ch: Channel, seq: int, frame: bytes) -> None:
        json_cache: list[str] = []
        dead: list[Connection] = []
        for conn, att in ch.attached.items():
            if att.buffer is not None:
                att.buffer.append((seq, frame))
            elif not att.send(seq, frame, json_cache) and conn.closing:
                dead.append(conn)
        for conn in dead:
            self.detach(conn, ch.conv)

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self._check_interval_s)
            try:
                await self._check_all()
            except Exception:
                log.exception("chat last seq check failed")

    async def _check_all(self) -> None:
        """Fill every gap up to the last seq seen committed at the previous check.

        A seq committed a whole interval ago and still not delivered was lost
        by the broker; one committed just now may still be on its way.
        """
        channels = [ch for ch in self._channels.values() if ch.last >= 0]
        for i in range(0, len(channels), CHECK_BATCH):
            chunk = channels[i : i + CHECK_BATCH]
            try:
                lasts = await self._read_lasts([ch.conv for ch in chunk])
            except Exception as exc:
                log.warning("chat last seq check failed", extra={"error": type(exc).__name__})
                return
            for ch in chunk:
                current = lasts.get(ch.conv)
                if current is not None:
                    target, ch.seen_last = ch.seen_last, max(ch.seen_last, current)
                    self._catch_up(ch, target)

    async def _check_now(self, ch: Channel) -> None:
        """Fill up to the conversation's current last seq (its notice will not come)."""
        try:
            current = await self._read_last(ch.conv)
        except Exception as exc:
            log.warning("chat last seq check failed", extra={"error": type(exc).__name__})
            return
        ch.seen_last = max(ch.seen_last, current)
        self._catch_up(ch, current)

    def _catch_up(self, ch: Channel, target: int) -> None:
        """Read the events up to ``target`` from the database unless delivered or under way."""
        if ch.last < 0 or ch.filling or target <= ch.last:
            return
        if self._channels.get(ch.conv) is not ch:
            return  # nobody follows it any more
        ch.filling = True
        self.spawn(self._fill(ch, target + 1))

    async def _fill(self, ch: Channel, until: int) -> None:
        """Read the events between ``ch.last`` and ``until`` from the database, then advance."""
        self.gap_fills += 1
        delay = 0.05
        while True:
            try:
                missing = await self._read_range(ch.conv, ch.last, until)
                break
            except Exception as exc:
                log.error("chat gap fill failed", extra={"error": type(exc).__name__})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if not missing or missing[0].seq != ch.last + 1:
            await asyncio.sleep(delay)  # not visible yet (replica lag): do not spin
        for ev in missing:
            if ev.seq > ch.last:
                ch.pending.setdefault(ev.seq, encode_event(ch.conv, ev))
        ch.filling = False
        self._advance(ch)
