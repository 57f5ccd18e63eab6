"""RELIABLE channels: strictly ordered delivery by seq, with recovery from the store.

A RELIABLE channel delivers sequenced events (``seq`` from 1, no gaps; the
capability's store allocates them in the transaction that commits the event)
to its followers strictly in seq order. An event that arrives ahead of its
predecessors (several publishing nodes, or a notice lost by the at-most-once
broker) waits while the missing ones are read from the store
(:class:`Recovery`), where they are already committed.

The node that commits feeds its channel directly
(:meth:`server.channels.service.ChannelService.committed`), so its followers never
depend on the broker round trip; the copy coming back is ignored (seq already
delivered). A publish that fails triggers a check of the channel's last seq,
and every channel re-reads its last seq every ``check_interval_s`` seconds
(all of them in batches of :data:`CHECK_BATCH`, one query each): a seq seen
committed at the previous check and still not delivered is read from the
store. So a lost notice delays an event by at most about twice that interval.

A gap fill that keeps failing (the store is down) is retried with backoff
:data:`FILL_ATTEMPTS` times (about 20 s); then the channel's
followers on this node are closed with 1013 (``try again later``): they
reconnect and resume from their last seq once the store is back, instead of
waiting in silence. Each give-up is logged and counted.

A delivered run of events goes to every follower as ONE pre-framed batch per
codec; a follower still replaying history buffers it
(:meth:`server.channels.model.Attachment.go_live`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter

from protocol.errors import CloseCode
from server.channels.model import Channel, ReliableState, to_json
from server.peer import Peer
from server.sendqueue import WireBatch
from server.supervise import Supervisor
from server.transport import wire_batch

log = logging.getLogger(__name__)

#: Channels whose last seq one check reads in one query.
CHECK_BATCH = 500
#: Attempts of a gap fill before the followers are told to come back later.
FILL_ATTEMPTS = 8
#: Followers one channel serves per event-loop step (more wait for the next steps).
DELIVERY_CHUNK = 256


class _Delivery:
    """A run being delivered to a snapshot of a channel's followers, chunk by chunk."""

    __slots__ = ("batches", "index", "peers", "run")

    def __init__(self, run: list[tuple[int, bytes]], peers: list[Peer]) -> None:
        self.run = run
        self.peers = peers
        self.index = 0
        self.batches: dict[bool, WireBatch] = {}


class ReliableEngine:
    """Ordering, gap fills and periodic checks of a service's RELIABLE channels."""

    def __init__(
        self,
        lookup: Callable[[str], Channel | None],
        names: Callable[[], Iterable[str]],
        detach: Callable[[Peer, str], None],
        supervisor: Supervisor,
        registry: CollectorRegistry,
        *,
        check_interval_s: float,
        fill_attempts: int = FILL_ATTEMPTS,
    ) -> None:
        self._lookup, self._names, self._detach = lookup, names, detach
        self._supervisor = supervisor
        self._check_interval_s = check_interval_s
        self._fill_attempts = fill_attempts
        self.m_fills = Counter(
            "medhub_channel_gap_fills", "Reads of missed events from the store", registry=registry
        )
        self.m_giveups = Counter(
            "medhub_channel_recovery_giveups",
            "Gap fills abandoned (store down): followers told to come back later",
            registry=registry,
        )

    def start(self) -> None:
        """Start the periodic last-seq check."""
        self._supervisor.loop("channels-check", self._check_loop)

    async def stop(self) -> None:
        """Stop the periodic check."""
        await self._supervisor.stop("channels-check")

    async def prepare(self, chans: Sequence[Channel]) -> None:
        """Read the last seq of newly subscribed channels (grouped by class, one query each)."""
        by_class: dict[str, list[Channel]] = {}
        for ch in chans:
            by_class.setdefault(ch.cls.prefix, []).append(ch)
        for group in by_class.values():
            recovery = group[0].cls.recovery
            assert recovery is not None
            lasts = await recovery.last_seqs([ch.name for ch in group])
            for ch in group:
                ch.reliable = ReliableState(lasts.get(ch.name, 0))

    # -- ordering ---------------------------------------------------------------------
    def arrived(self, ch: Channel, events: Sequence[tuple[int, bytes]]) -> None:
        """Sequenced events reached this node (committed here, or from the broker)."""
        st = ch.reliable
        if st is None:
            return
        for seq, frame in events:
            if seq > st.last:
                st.pending.setdefault(seq, frame)
        self._advance(ch, st)

    def _advance(self, ch: Channel, st: ReliableState) -> None:
        if st.filling:
            return
        pending = st.pending
        run: list[tuple[int, bytes]] = []
        while pending:
            frame = pending.pop(st.last + 1, None)
            if frame is None:
                for seq in [s for s in pending if s <= st.last]:
                    del pending[seq]
                if pending:
                    st.filling = True
                    self._supervisor.spawn("channels-fill", self._fill(ch, st, min(pending)))
                break
            st.last += 1
            run.append((st.last, frame))
        if run:
            self._deliver(ch, run)

    def _deliver(self, ch: Channel, run: list[tuple[int, bytes]]) -> None:
        """Send ``run`` to every follower, at most :data:`DELIVERY_CHUNK` per loop step.

        A channel with many followers is served over several loop steps (so one
        commit never holds the event loop for long); its runs stay in order for
        every follower (one queue of deliveries per channel).
        """
        st = ch.reliable
        assert st is not None
        if not st.outbox and len(ch.attached) <= DELIVERY_CHUNK:
            self._serve(ch, run, list(ch.attached), {})
            return
        st.outbox.append(_Delivery(run, list(ch.attached)))
        if len(st.outbox) == 1:
            self._continue(ch)

    def _continue(self, ch: Channel) -> None:
        st = ch.reliable
        if st is None or not st.outbox:
            return
        d = st.outbox[0]
        self._serve(ch, d.run, d.peers[d.index : d.index + DELIVERY_CHUNK], d.batches)
        d.index += DELIVERY_CHUNK
        if d.index >= len(d.peers):
            st.outbox.popleft()
        if st.outbox:
            asyncio.get_running_loop().call_soon(self._continue, ch)

    def _serve(
        self,
        ch: Channel,
        run: list[tuple[int, bytes]],
        peers: list[Peer],
        batches: dict[bool, WireBatch],
    ) -> None:
        first, last = run[0][0], run[-1][0]
        dead: list[Peer] = []
        for peer in peers:
            att = ch.attached.get(peer)
            if att is None:
                continue  # detached meanwhile
            if att.buffer is not None:
                att.buffer.extend(run)
                continue
            if att.last_sent >= last:
                continue
            binary = peer.codec.binary
            found = None if att.last_sent >= first else batches.get(binary)
            if found is not None:
                batch = found
            elif att.last_sent >= first:  # rare: overlaps what its handover sent
                part = [(s, f) for s, f in run if s > att.last_sent]
                frames = [f for _, f in part] if binary else [to_json(f) for _, f in part]
                batch = wire_batch(frames, "event")
            else:
                frames = [f for _, f in run] if binary else [to_json(f) for _, f in run]
                batch = batches[binary] = wire_batch(frames, "event")
            att.last_sent = last
            if not peer.send_batch(batch) and peer.closing:
                dead.append(peer)
        for peer in dead:
            self._detach(peer, ch.name)

    # -- recovery -----------------------------------------------------------------------
    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self._check_interval_s)
            await self.check_all()

    async def check_all(self) -> None:
        """Fill every gap up to the last seq seen committed at the previous check.

        A seq committed a whole interval ago and still not delivered was lost
        by the broker; one committed just now may still be on its way.
        """
        chans = [
            ch
            for name in list(self._names())
            if (ch := self._lookup(name)) is not None and ch.reliable is not None
        ]
        by_class: dict[str, list[Channel]] = {}
        for ch in chans:
            by_class.setdefault(ch.cls.prefix, []).append(ch)
        for group in by_class.values():
            recovery = group[0].cls.recovery
            assert recovery is not None
            for i in range(0, len(group), CHECK_BATCH):
                chunk = group[i : i + CHECK_BATCH]
                try:
                    lasts = await recovery.last_seqs([ch.name for ch in chunk])
                except Exception as exc:
                    log.warning(
                        "channel last seq check failed", extra={"error": type(exc).__name__}
                    )
                    return
                for ch in chunk:
                    st = ch.reliable
                    current = lasts.get(ch.name)
                    if st is not None and current is not None:
                        target, st.seen_last = st.seen_last, max(st.seen_last, current)
                        self._catch_up(ch, st, target)

    def check_now(self, ch: Channel) -> None:
        """Fill up to the channel's current last seq (its broker notice will not come)."""
        self._supervisor.spawn("channels-check-now", self._check_now(ch))

    async def _check_now(self, ch: Channel) -> None:
        recovery = ch.cls.recovery
        st = ch.reliable
        if recovery is None or st is None:
            return
        try:
            current = (await recovery.last_seqs([ch.name])).get(ch.name)
        except Exception as exc:
            log.warning("channel last seq check failed", extra={"error": type(exc).__name__})
            return
        if current is not None:
            st.seen_last = max(st.seen_last, current)
            self._catch_up(ch, st, current)

    def _catch_up(self, ch: Channel, st: ReliableState, target: int) -> None:
        """Read the events up to ``target`` unless delivered, under way, or unfollowed."""
        if st.filling or target <= st.last or self._lookup(ch.name) is not ch:
            return
        st.filling = True
        self._supervisor.spawn("channels-fill", self._fill(ch, st, target + 1))

    async def _fill(self, ch: Channel, st: ReliableState, until: int) -> None:
        """Read the events between ``st.last`` and ``until`` from the store, then advance."""
        recovery = ch.cls.recovery
        assert recovery is not None
        self.m_fills.inc()
        delay = 0.05
        missing: list[tuple[int, bytes]] | None = None
        for attempt in range(self._fill_attempts):
            try:
                missing = await recovery.read_range(ch.name, st.last, until)
                break
            except Exception as exc:
                log.error(
                    "channel gap fill failed",
                    extra={"error": type(exc).__name__, "attempt": attempt + 1},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if missing is None:
            self._give_up(ch, st)
            return
        if not missing or missing[0][0] != st.last + 1:
            await asyncio.sleep(delay)  # not visible yet (replica lag): do not spin
        for seq, frame in missing:
            if seq > st.last:
                st.pending.setdefault(seq, frame)
        st.filling = False
        self._advance(ch, st)

    def _give_up(self, ch: Channel, st: ReliableState) -> None:
        """The store stays down: followers here reconnect and resume later."""
        self.m_giveups.inc()
        log.error("channel recovery abandoned; followers told to resume later")
        st.filling = False
        st.pending.clear()
        for peer in list(ch.attached):
            peer.close(CloseCode.TRY_AGAIN_LATER, "recovery failed: resume later")
            self._detach(peer, ch.name)
