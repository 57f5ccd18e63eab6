"""Closing revoked sessions' sockets on every node, through the broker.

A revocation is published on the topic :data:`TOPIC` as msgpack
``{"s": [session ids]}`` or ``{"u": user id}``; every node's subscription
closes the matching sockets of its hub with close code 4010
(``SESSION_REVOKED``). The publishing node receives its own message too, so
there is one path for local and remote sockets.
"""

from __future__ import annotations

import logging
from typing import Protocol

import msgpack

from protocol.errors import CloseCode
from server.broker.base import Broker, BrokerError, Subscription

log = logging.getLogger(__name__)

TOPIC = "accounts.revoked"


class SocketCloser(Protocol):
    """What revocation needs of the hub."""

    def close_session(self, session_id: str, code: int, reason: str) -> int:
        """Close the sockets of a session."""
        ...

    def close_user(self, user_id: str, code: int, reason: str) -> int:
        """Close the sockets of a user."""
        ...


class Revocations:
    """Publishes revocations and applies them to the local hub (when one is attached)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._hub: SocketCloser | None = None
        self._sub: Subscription | None = None

    async def start(self, hub: SocketCloser | None) -> None:
        """Subscribe; sockets of ``hub`` are closed on every revocation."""
        self._hub = hub
        if hub is not None and self._sub is None:
            self._sub = await self._broker.subscribe(TOPIC, self._on_message)

    async def close(self) -> None:
        """Unsubscribe (idempotent)."""
        sub, self._sub = self._sub, None
        if sub is not None:
            await self._broker.unsubscribe(sub)

    async def sessions_revoked(self, session_ids: list[str]) -> None:
        """Tell every node to close these sessions' sockets.

        A broker failure is logged, not raised: the sessions are already
        revoked in the database, and their sockets fail their next check.
        """
        if session_ids:
            await self._publish({"s": session_ids})

    async def user_changed(self, user_id: str) -> None:
        """Tell every node to close the user's sockets (rights changed)."""
        await self._publish({"u": user_id})

    async def _publish(self, message: dict[str, object]) -> None:
        try:
            await self._broker.publish(TOPIC, msgpack.packb(message))
        except BrokerError:
            log.exception("could not publish a revocation")

    def _on_message(self, topic: str, payload: bytes) -> None:
        hub = self._hub
        if hub is None:
            return
        data = msgpack.unpackb(payload)
        code = int(CloseCode.SESSION_REVOKED)
        for sid in data.get("s", ()):
            hub.close_session(str(sid), code, "session revoked")
        if "u" in data:
            hub.close_user(str(data["u"]), code, "rights changed")
