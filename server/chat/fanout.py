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
from server.broker.base import Broker, Subscription
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


class Fanout:
    """The channels of this node; see the module docstring."""

    def __init__(self, broker: Broker, read_range: ReadRange, read_last: ReadLast) -> None:
        self._broker = broker
        self._read_range = read_range
        self._read_last = read_last
        self._channels: dict[str, Channel] = {}
        self._by_conn: dict[Connection, set[str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.gap_fills = 0

    # -- publishing ---------------------------------------------------------------
    async def publish(self, conv: str, events: list[ChatEvent]) -> None:
        """Tell every node about committed ``events`` of ``conv`` (ascending seq)."""
        notice = {"c": conv, "e": [[ev.seq, encode_event(conv, ev)] for ev in events]}
        await self._broker.publish(channel_of(conv), msgpack.packb(notice))

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
        ch = self._channels.get(conv)
        if ch is None:
            ch = Channel(conv)
            self._channels[conv] = ch
            try:
                ch.subscription = await self._broker.subscribe(channel_of(conv), self._on_notice)
                ch.last = await self._read_last(conv)
            except BaseException:
                self._channels.pop(conv, None)
                ch.ready.set()
                raise
            ch.ready.set()
            self._advance(ch)
        else:
            await ch.ready.wait()
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

    async def close(self) -> None:
        """Unsubscribe every channel and wait for pending tasks."""
        for ch in list(self._channels.values()):
            if ch.subscription is not None:
                await self._broker.unsubscribe(ch.subscription)
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
