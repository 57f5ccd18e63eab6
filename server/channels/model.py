"""The pieces of a node channel: its class, this node's view of it, an attachment.

See :mod:`server.channels.service` for how they are used.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from protocol.codec import JsonCodec, MsgpackCodec
from protocol.messages import Event, ServerMessage
from server.broker.base import Subscription
from server.peer import Peer
from server.sendqueue import Delivery
from server.transport import wire_batch

_MSGPACK = MsgpackCodec()
_JSON = JsonCodec()
_EVENT = msgspec.msgpack.Decoder(Event)

#: Builds the gap marker of a LOSSY channel: (channel, frames skipped) -> event.
GapMarker = Callable[[str, int], ServerMessage]


def to_json(frame: bytes) -> str:
    """The JSON frame of a msgpack-encoded server event."""
    return _JSON.encode(_EVENT.decode(frame))


def encode_event(channel: str, seq: int, kind: str, data: Any) -> bytes:
    """The msgpack frame of an ``event`` on ``channel`` (what the channels carry)."""
    return _MSGPACK.encode(Event(ch=channel, seq=seq, kind=kind, data=data))


class Recovery(Protocol):
    """Where a RELIABLE channel class reads what its followers missed."""

    async def read_range(self, channel: str, after: int, until: int) -> list[tuple[int, bytes]]:
        """Committed events of ``channel`` with ``after < seq < until``, ascending.

        Each as ``(seq, msgpack event frame)``. Raise any exception on failure.
        """
        ...

    async def last_seqs(self, channels: Sequence[str]) -> dict[str, int]:
        """The last committed seq of each existing channel among ``channels``."""
        ...


@dataclass(frozen=True, slots=True)
class ChannelClass:
    """How the channels named ``<prefix>:...`` are delivered.

    ``recovery`` is required for RELIABLE channels (where missed events are
    read). ``observer`` (optional) sees every unsequenced frame of the class
    that arrives from the broker, before delivery. ``gap_marker`` is required
    for LOSSY channels. ``local`` channels are node-local: attaching subscribes
    to no broker topic, and frames reach them only through
    :meth:`~server.channels.service.ChannelService.deliver` (views a
    capability derives on each node from a stream it receives once).
    """

    prefix: str
    delivery: Delivery
    recovery: Recovery | None = None
    observer: Callable[[str, bytes], None] | None = None
    gap_marker: GapMarker | None = None
    local: bool = False


def send_events(peer: Peer, entries: Sequence[tuple[int, bytes]]) -> bool:
    """Queue sequenced msgpack event frames to one socket, as one pre-framed batch."""
    frames = [f for _, f in entries] if peer.codec.binary else [to_json(f) for _, f in entries]
    return peer.send_batch(wire_batch(frames, "event"))


class Attachment:
    """One socket following one channel."""

    __slots__ = ("buffer", "dropped", "last_sent", "peer")

    def __init__(self, peer: Peer, buffering: bool) -> None:
        self.peer = peer
        self.last_sent = 0
        self.dropped = 0  # LOSSY frames skipped since the last gap marker
        #: RELIABLE handover: live events wait here while the caller replays history.
        self.buffer: list[tuple[int, bytes]] | None = [] if buffering else None

    def go_live(self, last_replayed: int) -> None:
        """End the handover: send the buffered events newer than ``last_replayed``."""
        self.last_sent = max(self.last_sent, last_replayed)
        buffered, self.buffer = self.buffer or [], None
        fresh = [(s, f) for s, f in buffered if s > self.last_sent]
        if fresh:
            send_events(self.peer, fresh)
            self.last_sent = fresh[-1][0]


class ReliableState:
    """Order state of one RELIABLE channel on this node."""

    __slots__ = ("filling", "last", "outbox", "pending", "seen_last")

    def __init__(self, last: int) -> None:
        self.last = last  # last seq delivered here
        self.pending: dict[int, bytes] = {}
        self.filling = False
        self.seen_last = last  # the channel's last seq read at the previous check
        #: runs being delivered to many followers over several loop steps, in order
        self.outbox: deque[Any] = deque()


class Channel:
    """This node's view of one channel: its attachments and, if RELIABLE, its order."""

    __slots__ = ("attached", "cls", "name", "ready", "reliable", "subscription")

    def __init__(self, name: str, cls: ChannelClass) -> None:
        self.name = name
        self.cls = cls
        self.attached: dict[Peer, Attachment] = {}
        self.subscription: Subscription | None = None
        self.ready = asyncio.Event()  # set once subscribed (or failed and dropped)
        self.reliable: ReliableState | None = None
