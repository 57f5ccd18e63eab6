"""This node's map of call parties, and the signalling relay between them.

The relay moves ``call`` stream frames (``protocol/calls.py``: trickled ICE
candidates, renegotiation offers and answers) from one party's socket to the
other's **without decoding them**: a frame is checked (its sender is a party of
the call on this socket, its payload passes the cheap structural checks) and
forwarded as the very bytes that arrived.

The map (:class:`CallView` per call with a party socket here) is refreshed from
the shared state (:mod:`server.calls.state`) and from the call's lifecycle
events, so it knows where the other party is:

- on this node: the frame is queued to its socket at once;
- on another node: it is published on that node's relay topic
  ``callnode:<node id>`` (one broker subscription per node, whatever the number
  of calls; publishes of one loop step leave in one batch), prefixed with the
  target role, and that node queues it to the party's socket;
- not reachable yet (ringing: nobody answered; reconnecting): it waits in the
  call's buffer (in memory, at most ``buffer_max`` frames, never stored) and
  leaves, in order, as soon as the party is known again. Past the bound the
  sender gets ``unavailable``.

Frames of one party arrive in order at the other: one socket's frames are
handled in order, the node's publishes to one topic keep their order, and a
buffer is flushed before any newer frame. Frames in flight while a party's
socket drops are lost (the parties renegotiate after ``resumed`` if media
suffered).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter

from protocol.calls import CALL_FRAME_PREFIX, SIGNAL_HEADER_BYTES, check_signal
from protocol.errors import ErrorCode
from server.broker.base import Broker, Subscription
from server.calls.state import CallState, PartyState
from server.channels import ChannelService
from server.peer import Peer
from server.router import HandlerError

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger(__name__)

#: Broker topic prefix of each node's relay inbox.
NODE_TOPIC = "callnode:"
#: Where the call id sits in a whole frame (after the stream header and the signal kind).
_ID_AT = len(CALL_FRAME_PREFIX) + 1


class Party:
    """What this node knows of one party: where it is, and its socket when here."""

    __slots__ = ("conn", "live", "node", "party", "peer", "user")

    def __init__(self, state: PartyState, peer: Peer | None = None) -> None:
        self.user = state.user
        self.party = state.party
        self.node = state.node
        self.conn = state.conn
        self.live = state.live
        self.peer = peer


class CallView:
    """This node's view of one call that has a party socket (or a timer) here."""

    __slots__ = ("answered", "id", "key", "parties", "pending", "quality", "state", "timers")

    def __init__(self, state: CallState, quality_max: int) -> None:
        self.id = state.id
        self.key = state.id.encode("ascii")
        self.state = state
        self.answered = False
        self.parties: list[Party | None] = [None, None]
        self.pending: list[deque[bytes]] = [deque(), deque()]
        self.quality: list[deque[bytes]] = [deque(maxlen=quality_max), deque(maxlen=quality_max)]
        self.timers: dict[str, asyncio.TimerHandle] = {}

    def role_of(self, peer: Peer) -> int | None:
        """The role ``peer`` holds in this call, or None when it is not a party socket."""
        for role in (0, 1):
            p = self.parties[role]
            if p is not None and p.peer is peer:
                return role
        return None

    def local_peers(self) -> list[Peer]:
        """The party sockets on this node."""
        return [p.peer for p in self.parties if p is not None and p.peer is not None]


class Relay:
    """The party map of one node and the relay of ``call`` stream frames."""

    def __init__(
        self,
        node_id: str,
        channels: ChannelService,
        broker: Broker,
        registry: CollectorRegistry,
        *,
        buffer_max: int,
    ) -> None:
        self.node_id = node_id
        self.channels = channels
        self.broker = broker
        self.buffer_max = buffer_max
        self.views: dict[bytes, CallView] = {}
        self._by_peer: dict[Peer, set[bytes]] = {}
        self._sub: Subscription | None = None
        self.m_frames = Counter(
            "medhub_call_frames", "Call signalling frames relayed, by path", ["path"],
            registry=registry,
        )  # fmt: skip
        self.m_refused = Counter(
            "medhub_call_frames_refused", "Call frames refused, by code", ["code"],
            registry=registry,
        )  # fmt: skip
        # children bound once: the relay's hot path
        frames = self.m_frames
        self._local, self._remote = frames.labels("local"), frames.labels("remote")
        self._delivered, self._dropped = frames.labels("delivered"), frames.labels("dropped")
        self._buffered = frames.labels("buffered")
        self._bad = self.m_refused.labels("bad_request")
        self._not_found = self.m_refused.labels("not_found")
        self._unavailable = self.m_refused.labels("unavailable")

    @property
    def topic(self) -> str:
        """This node's relay topic."""
        return NODE_TOPIC + self.node_id

    @property
    def topic_ready(self) -> bool:
        """The relay topic is subscribed."""
        return self._sub is not None

    async def start(self) -> None:
        """Subscribe to this node's relay topic; raises BrokerError."""
        self._sub = await self.broker.subscribe(self.topic, self._on_node)

    async def close(self) -> None:
        """Unsubscribe and forget every view."""
        if self._sub is not None:
            await self.broker.unsubscribe(self._sub)
            self._sub = None
        for view in self.views.values():
            for timer in view.timers.values():
                timer.cancel()
        self.views.clear()
        self._by_peer.clear()

    # -- the map -----------------------------------------------------------------------------
    def view(self, cid: str) -> CallView | None:
        """This node's view of call ``cid``."""
        return self.views.get(cid.encode("ascii"))

    def add_view(self, view: CallView) -> CallView:
        """Keep ``view`` (or return the one already kept for that call)."""
        return self.views.setdefault(view.key, view)

    def set_party(self, view: CallView, role: int, party: Party) -> None:
        """``role`` is now ``party``: forward what waited for it when it is live."""
        old = view.parties[role]
        if old is not None and old.peer is not None and old.peer is not party.peer:
            self._unindex(old.peer, view.key)
        view.parties[role] = party
        if party.peer is not None:
            self._by_peer.setdefault(party.peer, set()).add(view.key)
        self.flush(view, role)

    def party_away(self, view: CallView, role: int) -> None:
        """``role``'s socket dropped: frames for it wait from now on."""
        p = view.parties[role]
        if p is not None:
            p.live = False
            if p.peer is not None:
                self._unindex(p.peer, view.key)
                p.peer = None

    def drop(self, view: CallView) -> None:
        """Forget a call (ended): its timers, buffers and socket index."""
        if self.views.get(view.key) is view:
            del self.views[view.key]
        for timer in view.timers.values():
            timer.cancel()
        view.timers.clear()
        for p in view.parties:
            if p is not None and p.peer is not None:
                self._unindex(p.peer, view.key)

    def calls_of(self, peer: Peer) -> list[CallView]:
        """The calls ``peer`` is a party socket of."""
        return [v for k in self._by_peer.get(peer, ()) if (v := self.views.get(k)) is not None]

    def _unindex(self, peer: Peer, key: bytes) -> None:
        mine = self._by_peer.get(peer)
        if mine is not None:
            mine.discard(key)
            if not mine:
                del self._by_peer[peer]

    # -- relaying ------------------------------------------------------------------------------
    def relay(self, peer: Peer, payload: memoryview) -> None:
        """Forward a ``call`` stream frame's payload from ``peer`` to the other party.

        Raises HandlerError: ``bad_request`` (cut short, unknown kind, malformed
        SDP or candidate), ``not_found`` (no such call, or ``peer`` is not a
        party socket of it: nothing is revealed), ``unavailable`` (the other
        party has been unreachable for ``buffer_max`` frames).
        """
        if len(payload) < SIGNAL_HEADER_BYTES:
            self._bad.inc()
            raise HandlerError(ErrorCode.BAD_REQUEST, "call frame shorter than its header")
        view = self.views.get(bytes(payload[1:SIGNAL_HEADER_BYTES]))
        role = None if view is None else view.role_of(peer)
        if view is None or role is None:
            self._not_found.inc()
            raise HandlerError(ErrorCode.NOT_FOUND, "no such call")
        problem = check_signal(payload[0], payload[SIGNAL_HEADER_BYTES:])
        if problem is not None:
            self._bad.inc()
            raise HandlerError(ErrorCode.BAD_REQUEST, problem)
        self.send(view, 1 - role, CALL_FRAME_PREFIX + payload)

    def send(self, view: CallView, role: int, frame: bytes) -> None:
        """Deliver a whole frame to ``role``: its socket, its node, or the call's buffer."""
        target = view.parties[role]
        pending = view.pending[role]
        if target is not None and target.live and not pending:
            self._forward(role, target, frame)
            return
        if len(pending) >= self.buffer_max:
            self._unavailable.inc()
            raise HandlerError(
                ErrorCode.UNAVAILABLE, "the other party is not reachable now", retry_after_s=1.0
            )
        pending.append(frame)
        self._buffered.inc()
        self.flush(view, role)  # (reachable again: keeps the order)

    def flush(self, view: CallView, role: int) -> None:
        """Forward, in order, the frames waiting for ``role`` if it is reachable now."""
        target = view.parties[role]
        pending = view.pending[role]
        while pending and target is not None and target.live:
            self._forward(role, target, pending.popleft())

    def _forward(self, role: int, target: Party, frame: bytes) -> None:
        if target.peer is not None:
            if target.peer.send_frame(frame, "call"):
                self._local.inc()
            else:
                self._dropped.inc()
            return
        if target.node == self.node_id:  # its socket here is gone: resume will come
            self._dropped.inc()
            return
        self.channels.publish_raw(NODE_TOPIC + target.node, bytes((role,)) + frame)
        self._remote.inc()

    def _on_node(self, topic: str, payload: bytes) -> None:
        """A frame from another node for a party socket here (broker handler)."""
        if len(payload) < 1 + _ID_AT + SIGNAL_HEADER_BYTES - 1:
            return
        role = payload[0]
        view = self.views.get(payload[1 + _ID_AT : 1 + _ID_AT + SIGNAL_HEADER_BYTES - 1])
        target = None if view is None or role > 1 else view.parties[role]
        if target is None or target.peer is None:
            self._dropped.inc()
            return
        if target.peer.send_frame(payload[1:], "call"):
            self._delivered.inc()
        else:
            self._dropped.inc()
