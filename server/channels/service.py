"""Node channels: one delivery service for every capability's live traffic.

Like Centrifugo's node or Synapse's notifier, one :class:`ChannelService` per
node serves every stream of events, whatever the capability:

* **One broker subscription per topic per node.** A channel is named
  ``<prefix>:<rest>`` (``conv:c-1``, ``presence:u-7``, ``inbox:u-7``) and is its
  broker topic. Sockets *attach* to channels; the first attachment subscribes,
  the last detach unsubscribes (reference counting); ``attach_many`` subscribes
  many topics in one broker call.
* **Encoded once per codec.** Events travel on the broker as msgpack frames
  (``{"e": [[seq, frame], ...]}`` for sequenced events, ``{"x": frame}`` for the
  others; never pickle). A node converts a frame to JSON at most once, and
  frames a delivered batch for the wire once per codec
  (:class:`~server.sendqueue.WireBatch`): every socket gets the same buffer.
  A binary stream frame (EEG views) goes as it is to sockets of both codecs.
* **Node-local channels** (``ChannelClass.local``): no broker topic; the
  capability delivers their frames itself (EEG views, derived on each node
  from the one stream the node receives).
* **A delivery class per channel** (:class:`ChannelClass`), defined by the
  capability that owns the prefix:

  - ``RELIABLE``: ordered by ``seq`` with recovery from the store
    (:mod:`server.channels.reliable`). Never dropped: a socket that cannot
    keep up is closed 4009 and resumes from its last seq.
  - ``COALESCE``: latest state wins; a slow socket gets only the newest frame
    of each channel (presence).
  - ``LOSSY``: a slow socket skips frames; the next frame it gets is preceded
    by an explicit gap marker built by the class (EEG viewers).

* **A per-user inbox** (channel ``inbox:<user>``): user-directed notices
  (a conversation was created, a session was revoked, a call rings) reach the
  user's sockets on whichever node they are. The service attaches every
  authenticated socket to its user's inbox before it is welcomed; a notice
  is handed to the handler registered for its kind with the user's local
  sockets. Inbox delivery is at-most-once like all pub/sub: what must not be
  lost is also in the store (the conversation list, the sessions table).
* **Batched broker calls.** Publishes made in one loop step leave in one
  ``publish_many`` (one pipeline on Redis).

Counters (gap fills, publish failures, drops, gap markers, recovery give-ups)
are exported on ``/metrics``. Must be used from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgpack
from prometheus_client import CollectorRegistry, Counter

from protocol.streams import is_stream_frame
from server.broker.base import MAX_PAYLOAD_BYTES, Broker, BrokerError
from server.channels.model import Attachment, Channel, ChannelClass, to_json
from server.channels.reliable import FILL_ATTEMPTS, ReliableEngine
from server.peer import Peer
from server.sendqueue import Delivery
from server.supervise import Supervisor

log = logging.getLogger(__name__)

#: Channel name prefix of the per-user inboxes.
INBOX = "inbox"
#: Bytes of event frames per broker message of a commit: a quarter of the broker's limit,
#: which leaves far more than msgpack's few bytes per event of room.
PUBLISH_CHUNK_BYTES = MAX_PAYLOAD_BYTES // 4

#: A handler of one inbox kind: (user id, that user's sockets on this node, data).
InboxHandler = Callable[[str, list[Peer], Any], None]


def inbox_of(user: str) -> str:
    """The inbox channel of ``user``."""
    return f"{INBOX}:{user}"


class ChannelService:
    """The channels of one node; see the module docstring."""

    def __init__(
        self,
        broker: Broker,
        supervisor: Supervisor,
        registry: CollectorRegistry | None = None,
        *,
        check_interval_s: float = 5.0,
        fill_attempts: int = FILL_ATTEMPTS,
    ) -> None:
        self.broker = broker
        self.supervisor = supervisor
        self._classes: dict[str, ChannelClass] = {}
        self._channels: dict[str, Channel] = {}
        self._by_peer: dict[Peer, set[str]] = {}
        self._users: dict[str, list[Peer]] = {}
        self._inbox_handlers: dict[str, InboxHandler] = {}
        self._outbox: list[tuple[str, bytes]] = []
        self._outbox_done: asyncio.Future[None] | None = None
        r = registry or CollectorRegistry()
        self.m_publish_failures = Counter(
            "medhub_channel_publish_failures", "Broker publishes that failed", registry=r
        )
        self.m_drops = Counter(
            "medhub_channel_drops", "Frames not queued to a socket, by class", ["cls"], registry=r
        )
        self.m_gaps = Counter(
            "medhub_channel_gap_markers", "Gap markers sent to lossy followers", registry=r
        )
        self.reliable = ReliableEngine(
            self._channels.get,
            lambda: list(self._channels),
            self.detach,
            supervisor,
            r,
            check_interval_s=check_interval_s,
            fill_attempts=fill_attempts,
        )
        self.define(ChannelClass(INBOX, Delivery.RELIABLE, None))

    # -- classes ---------------------------------------------------------------------
    def define(self, cls: ChannelClass) -> None:
        """Register how channels of ``cls.prefix`` are delivered (ValueError if taken)."""
        if cls.prefix in self._classes:
            raise ValueError(f"channel prefix {cls.prefix} is already defined")
        if cls.delivery is Delivery.RELIABLE and cls.recovery is None and cls.prefix != INBOX:
            raise ValueError("a RELIABLE channel class needs a recovery")
        if cls.delivery is Delivery.LOSSY and cls.gap_marker is None:
            raise ValueError("a LOSSY channel class needs a gap marker")
        self._classes[cls.prefix] = cls

    def class_of(self, name: str) -> ChannelClass:
        """The class of channel ``name``; KeyError for an undefined prefix."""
        return self._classes[name.partition(":")[0]]

    async def start(self) -> None:
        """Start the periodic check of RELIABLE channels (lost notices)."""
        self.reliable.start()

    async def close(self, timeout_s: float = 5.0) -> None:
        """Publish what is pending (at most ``timeout_s``), then unsubscribe everything."""
        await self.reliable.stop()
        if self._outbox_done is not None:
            await asyncio.wait([self._outbox_done], timeout=timeout_s)
        subs = [ch.subscription for ch in self._channels.values() if ch.subscription]
        try:
            await self.broker.unsubscribe_many(subs)
        except BrokerError:
            log.warning("channel unsubscribe failed at close")
        self._channels.clear()
        self._by_peer.clear()
        self._users.clear()

    # -- sockets and inboxes -------------------------------------------------------------
    async def open_peer(self, peer: Peer) -> None:
        """Attach an authenticated socket to its user's inbox (call before ``welcome``).

        Raises BrokerError when the inbox subscription fails.
        """
        assert peer.principal is not None
        user = peer.principal.user_id
        await self.attach(peer, inbox_of(user))
        if not peer.closing:
            self._users.setdefault(user, []).append(peer)

    def close_peer(self, peer: Peer) -> None:
        """Forget a closed socket: every attachment, and its place in the user index."""
        for name in list(self._by_peer.get(peer, ())):
            self.detach(peer, name)
        p = peer.principal
        if p is not None:
            mine = self._users.get(p.user_id)
            if mine is not None and peer in mine:
                mine.remove(peer)
                if not mine:
                    del self._users[p.user_id]

    def peers_of(self, user: str) -> list[Peer]:
        """The authenticated sockets of ``user`` on this node (a copy)."""
        return list(self._users.get(user, ()))

    def users(self) -> Iterable[str]:
        """Users with at least one socket on this node."""
        return self._users.keys()

    def on_inbox(self, kind: str, handler: InboxHandler) -> None:
        """Call ``handler`` for every inbox notice of ``kind`` (ValueError if taken)."""
        if kind in self._inbox_handlers:
            raise ValueError(f"inbox kind {kind} already has a handler")
        self._inbox_handlers[kind] = handler

    def notify_users(self, users: Iterable[str], kind: str, data: Any) -> asyncio.Future[None]:
        """Send an inbox notice to every node where one of ``users`` has sockets.

        Returns the future of the publish (await it to learn of a BrokerError;
        ignoring it is fine: failures are counted and logged).
        """
        targets = list(dict.fromkeys(users))
        if not targets:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        payload = msgpack.packb({"x": msgpack.packb({"k": kind, "d": data})})
        for user in targets:
            done = self.publish_raw(inbox_of(user), payload)
        return done

    def _on_inbox(self, ch: Channel, frame: bytes) -> None:
        try:
            notice = msgpack.unpackb(frame, raw=False)
            kind, data = notice["k"], notice.get("d")
        except (ValueError, KeyError, TypeError, msgpack.UnpackException):
            log.warning("malformed inbox notice")
            return
        handler = self._inbox_handlers.get(kind)
        if handler is None:
            log.warning("inbox notice of unknown kind", extra={"kind": str(kind)[:64]})
            return
        user = ch.name.partition(":")[2]
        handler(user, self.peers_of(user), data)

    # -- following --------------------------------------------------------------------
    async def attach(self, peer: Peer, name: str, *, buffering: bool = False) -> Attachment:
        """Start ``peer`` following channel ``name``; the subscription is active on return.

        ``buffering`` (RELIABLE): live events are held until
        :meth:`Attachment.go_live`, while the caller replays history.
        Raises BrokerError when the broker cannot subscribe, KeyError for an
        undefined prefix.
        """
        return (await self.attach_many(peer, [name], buffering=buffering))[0]

    async def attach_many(
        self, peer: Peer, names: Sequence[str], *, buffering: bool = False
    ) -> list[Attachment]:
        """:meth:`attach` to several channels with one broker call for the new topics.

        A socket that started closing meanwhile is not attached (its cleanup may
        already have run): the attachments returned are then not registered.
        """
        while True:
            fresh = [n for n in dict.fromkeys(names) if n not in self._channels]
            waiting = [self._channels[n] for n in names if n in self._channels]
            if fresh:
                await self._subscribe(fresh)
            for ch in waiting:
                await ch.ready.wait()
            if all(n in self._channels for n in names):
                break
            # a subscribe we waited on failed and its channel was dropped: retry ours
        if peer.closing:
            return [Attachment(peer, buffering) for _ in names]
        out = []
        mine = self._by_peer.setdefault(peer, set())
        for name in names:
            ch = self._channels[name]
            att = ch.attached.get(peer)
            if att is None:
                att = ch.attached[peer] = Attachment(peer, buffering)
            mine.add(name)
            out.append(att)
        return out

    async def _subscribe(self, names: list[str]) -> None:
        chans = []
        for name in names:
            ch = Channel(name, self.class_of(name))
            self._channels[name] = ch
            chans.append(ch)
        try:
            remote = [ch for ch in chans if not ch.cls.local]
            if remote:
                subs = await self.broker.subscribe_many(
                    [ch.name for ch in remote], self._on_message
                )
                for ch, sub in zip(remote, subs, strict=True):
                    ch.subscription = sub
            await self.reliable.prepare([ch for ch in chans if ch.cls.recovery is not None])
        except BaseException:
            for ch in chans:
                if self._channels.get(ch.name) is ch:
                    del self._channels[ch.name]
            left = [ch.subscription for ch in chans if ch.subscription is not None]
            if left:
                self.supervisor.spawn("channels-unsubscribe", self.broker.unsubscribe_many(left))
            raise
        finally:
            for ch in chans:
                ch.ready.set()

    def detach(self, peer: Peer, name: str) -> None:
        """Stop ``peer`` following ``name``; the channel goes when nobody follows it."""
        ch = self._channels.get(name)
        if ch is not None and ch.attached.pop(peer, None) is not None and not ch.attached:
            del self._channels[name]
            if ch.subscription is not None:
                self.supervisor.spawn(
                    "channels-unsubscribe", self.broker.unsubscribe_many([ch.subscription])
                )
        mine = self._by_peer.get(peer)
        if mine is not None:
            mine.discard(name)
            if not mine:
                del self._by_peer[peer]

    def following(self, peer: Peer, name: str) -> bool:
        """True while ``peer`` follows ``name`` on this node."""
        ch = self._channels.get(name)
        return ch is not None and peer in ch.attached

    def channel(self, name: str) -> Channel | None:
        """This node's channel ``name`` while someone here follows it."""
        return self._channels.get(name)

    # -- publishing ---------------------------------------------------------------------
    def committed(self, name: str, events: list[tuple[int, bytes]]) -> None:
        """Deliver sequenced ``events`` (ascending seq, msgpack frames) here and publish them.

        This node's followers get them at once, without the broker round trip;
        the copy coming back from the broker is de-duplicated by seq.
        """
        ch = self._channels.get(name)
        if ch is not None and ch.reliable is not None:
            self.reliable.arrived(ch, events)
        # One broker message per run of events, each well under the broker's payload
        # limit: a commit of a large batch (thousands of messages) would not fit in one,
        # and a publish the broker refuses loses the whole batch for the other nodes.
        run: list[list[object]] = []
        size = 0
        for seq, frame in events:
            if run and size + len(frame) > PUBLISH_CHUNK_BYTES:
                self.publish_raw(name, msgpack.packb({"e": run}))
                run, size = [], 0
            run.append([seq, frame])
            size += len(frame)
        self.publish_raw(name, msgpack.packb({"e": run}))

    def publish(self, name: str, frame: bytes) -> asyncio.Future[None]:
        """Send an unsequenced msgpack event frame to ``name``'s followers on every node.

        Returns the publish's future (see :meth:`notify_users`).
        """
        return self.publish_raw(name, msgpack.packb({"x": frame}))

    def publish_raw(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        """Queue ``payload`` for the next ``publish_many`` (leaves in this loop step)."""
        self._outbox.append((topic, payload))
        if self._outbox_done is None:
            self._outbox_done = asyncio.get_running_loop().create_future()
            self._outbox_done.add_done_callback(_retrieve)
            self.supervisor.spawn("channels-publish", self._flush(self._outbox_done))
        return self._outbox_done

    async def _flush(self, done: asyncio.Future[None]) -> None:
        await asyncio.sleep(0)  # let the rest of this loop step add to the batch
        batch, self._outbox, self._outbox_done = self._outbox, [], None
        try:
            await self.broker.publish_many(batch)
        except BrokerError as exc:
            self.m_publish_failures.inc()
            log.warning("channel publish failed", extra={"error": type(exc).__name__})
            for topic, _ in batch:
                ch = self._channels.get(topic)
                if ch is not None and ch.reliable is not None:
                    self.reliable.check_now(ch)
            if not done.done():
                done.set_exception(exc)
            return
        if not done.done():
            done.set_result(None)

    # -- delivery -------------------------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes) -> None:
        ch = self._channels.get(topic)
        if ch is None:
            return
        message = msgpack.unpackb(payload, raw=False)
        if "e" in message:
            if ch.reliable is not None:
                self.reliable.arrived(ch, [(int(s), f) for s, f in message["e"]])
            return
        frame = message["x"]
        if ch.cls.prefix == INBOX:
            self._on_inbox(ch, frame)
            return
        if ch.cls.observer is not None:
            ch.cls.observer(topic, frame)
        self.deliver(ch, frame)

    def deliver(self, ch: Channel, frame: bytes) -> None:
        """Send an unsequenced frame to the channel's followers here, by its class.

        ``frame`` is a msgpack event (converted to JSON once for the JSON
        sockets), or a binary stream frame (``protocol/streams.py``), sent as it
        is on both subprotocols.
        """
        delivery = ch.cls.delivery
        json_frame: str | None = None
        dead: list[Peer] = []
        as_is = is_stream_frame(frame)
        for peer, att in ch.attached.items():
            if att.buffer is not None:
                continue  # still replaying history: unsequenced events are not replayed
            if as_is or peer.codec.binary:
                out: bytes | str = frame
            else:
                if json_frame is None:
                    json_frame = to_json(frame)
                out = json_frame
            if delivery is Delivery.LOSSY:
                self._lossy(ch, att, out)
            elif delivery is Delivery.COALESCE:
                if not peer.send_frame(out, "event", Delivery.COALESCE, ch.name):
                    self.m_drops.labels("coalesce").inc()
            elif not peer.send_frame(out, "event", Delivery.RELIABLE) and peer.closing:
                dead.append(peer)
        for peer in dead:
            self.detach(peer, ch.name)

    def _lossy(self, ch: Channel, att: Attachment, frame: bytes | str) -> None:
        peer = att.peer
        if att.dropped:
            assert ch.cls.gap_marker is not None
            if peer.send(ch.cls.gap_marker(ch.name, att.dropped), Delivery.LOSSY, ch.name):
                self.m_gaps.inc()
                att.dropped = 0
            else:
                att.dropped += 1
                self.m_drops.labels("lossy").inc()
                return
        if not peer.send_frame(frame, "event", Delivery.LOSSY, ch.name):
            att.dropped += 1
            self.m_drops.labels("lossy").inc()


def _retrieve(fut: asyncio.Future[None]) -> None:
    """Mark a publish future's exception as seen (callers may ignore it)."""
    if not fut.cancelled():
        fut.exception()
