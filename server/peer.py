"""What capabilities and node services see of one socket: the :class:`Peer` interface.

:class:`server.connection.Connection` implements it; capabilities, the router,
the channel service and the session watch depend on this interface only, so
none of them imports the connection layer (and tests can drive them with a
small fake).

Sending never waits: every method queues and returns. ``send`` and
``send_frame`` return False when nothing was queued: the socket is closing, a
LOSSY frame was dropped, or a RELIABLE frame overflowed the queue (which
closes the socket 4009: the client resumes from its sequence numbers).
"""

from __future__ import annotations

from typing import Protocol

from protocol.codec import Codec, Frame
from protocol.messages import ServerMessage
from server.auth import Principal
from server.sendqueue import Delivery, WireBatch


class Peer(Protocol):
    """One authenticated (or authenticating) socket of this node."""

    @property
    def conn_id(self) -> str:
        """Random id of the socket (pseudonymous; used in audit and logs)."""
        ...

    @property
    def principal(self) -> Principal | None:
        """Who the socket is authenticated as; None until ``welcome``."""
        ...

    @property
    def client_address(self) -> str | None:
        """The trusted client address (audit ``source``)."""
        ...

    @property
    def codec(self) -> Codec:
        """The negotiated codec (``codec.binary``: msgpack frames, else JSON)."""
        ...

    @property
    def closing(self) -> bool:
        """True once a close was requested: later sends are not queued."""
        ...

    def send(
        self, message: ServerMessage, delivery: Delivery = Delivery.RELIABLE, key: str | None = None
    ) -> bool:
        """Encode ``message`` with this socket's codec and queue it (see the module docstring)."""
        ...

    def send_frame(
        self,
        frame: Frame,
        label: str,
        delivery: Delivery = Delivery.RELIABLE,
        key: str | None = None,
    ) -> bool:
        """Queue an already encoded frame; ``label`` is the message type for metrics."""
        ...

    def send_batch(self, batch: WireBatch) -> bool:
        """Queue (or write at once, when the socket is idle) frames framed for the wire."""
        ...

    def close(self, code: int, reason: str, *, flush: bool = False) -> None:
        """Close with ``code``; with ``flush``, after what is queued is written."""
        ...
