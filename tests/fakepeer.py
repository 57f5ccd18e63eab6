"""A socket stand-in for node services tested without a hub: records what it is sent.

It implements :class:`server.peer.Peer` with a real :class:`SendQueue`, so
delivery classes (coalescing, lossy drops, overflow) behave as on a socket
whose peer is not reading; :meth:`FakePeer.drain` then "reads" the queue.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from protocol.codec import Codec, Frame, JsonCodec, MsgpackCodec
from protocol.messages import ServerMessage
from server.auth import Principal
from server.sendqueue import Delivery, PutResult, SendQueue, WireBatch


class FakePeer:
    """A :class:`~server.peer.Peer` that queues into a real SendQueue and never writes."""

    def __init__(
        self,
        user: str = "alice",
        conn_id: str = "k1",
        *,
        binary: bool = True,
        max_messages: int = 1024,
        org: str = "org-a",
        role: str = "practitioner",
    ) -> None:
        self.conn_id = conn_id
        self.principal: Principal | None = Principal(user, org, role, f"sess-{user}")
        self.client_address: str | None = "127.0.0.1"
        self.codec: Codec = MsgpackCodec() if binary else JsonCodec()
        self.queue = SendQueue(max_messages, 1 << 24)
        self.batches: list[WireBatch] = []
        self.closed_with: tuple[int, str] | None = None
        self.received: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    @property
    def closing(self) -> bool:
        return self.closed_with is not None

    def send(
        self, message: ServerMessage, delivery: Delivery = Delivery.RELIABLE, key: str | None = None
    ) -> bool:
        return self.send_frame(self.codec.encode(message), "x", delivery, key)

    def send_frame(
        self,
        frame: Frame,
        label: str,
        delivery: Delivery = Delivery.RELIABLE,
        key: str | None = None,
    ) -> bool:
        if self.closing:
            return False
        result = self.queue.put(frame, delivery, key)
        if result is PutResult.OVERFLOW:
            self.close(4009, "slow consumer")
            return False
        self.changed.set()
        return result is not PutResult.DROPPED

    def send_batch(self, batch: WireBatch) -> bool:
        if self.closing:
            return False
        self.batches.append(batch)
        if self.queue.put_batch(batch) is PutResult.OVERFLOW:
            self.close(4009, "slow consumer")
            return False
        self.changed.set()
        return True

    def close(self, code: int, reason: str, *, flush: bool = False) -> None:
        if self.closed_with is None:
            self.closed_with = (code, reason)
            self.changed.set()

    # -- reading what was sent ---------------------------------------------------------
    def drain(self) -> list[dict[str, Any]]:
        """Every message queued since the last drain, decoded, oldest first."""
        out: list[dict[str, Any]] = []
        for item in self.queue.pop_all():
            frames = item.frames if isinstance(item, WireBatch) else (item,)
            for frame in frames:
                if isinstance(frame, str):
                    out.append(msgspec.json.decode(frame))
                else:
                    out.append(msgspec.msgpack.decode(frame))
        self.received.extend(out)
        return out

    def seqs(self) -> list[int]:
        """The seqs of every event received so far (drains the queue)."""
        self.drain()
        return [m["seq"] for m in self.received if m.get("type") == "event"]

    async def wait_for(self, check: Any, timeout: float = 3.0) -> None:
        """Wait until ``check(self)`` is true, draining as frames arrive."""
        async with asyncio.timeout(timeout):
            while True:
                self.drain()
                if check(self):
                    return
                self.changed.clear()
                await self.changed.wait()
