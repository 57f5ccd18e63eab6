"""uvicorn's sans-I/O WebSocket protocol with a synchronous write path for the hub.

The ASGI ``send`` costs an ``await``, a dict, and one ``transport.write`` per
frame. Fan-out to hundreds of sockets and request/reply both pay that on every
frame. :class:`HubWebSocketProtocol` adds one ASGI scope extension,
``medhub.raw``, holding a :class:`RawSocket`: the hub asks it whether the
socket can take data now and, if so, writes a whole batch of frames in one
``transport.write`` without awaiting (as ``websockets.broadcast`` does). When
the socket cannot take data (the peer is not reading, or closing), the hub
falls back to the ASGI ``send``, which waits for the transport; nothing else
changes, and without the extension (another server) the hub only uses ASGI.
"""

from __future__ import annotations

from collections.abc import Sequence

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request

from server.sendqueue import Queued, WireBatch

RAW_EXTENSION = "medhub.raw"


class RawSocket:
    """Synchronous access to one accepted WebSocket's outgoing side."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: HubWebSocketProtocol) -> None:
        self._protocol = protocol

    def writable(self) -> bool:
        """True when frames written now go straight to the transport's buffer."""
        p = self._protocol
        return (
            p.handshake_complete
            and p.initial_response is None
            and not p.close_sent
            and not p.disconnected
            and p.writable.is_set()
            and not p.transport.is_closing()
        )

    def write(self, items: Sequence[Queued], cache: WireCache) -> None:
        """Write ``items`` (str: text, bytes: binary, batches as they are) in one write.

        The caller must have checked :meth:`writable` in the same loop step.
        Server frames are not masked and no extension is negotiated
        (permessage-deflate is off), so a frame's bytes on the wire are the
        same for every socket: ``cache`` serialises each payload once for all
        its recipients, and a :class:`~server.sendqueue.WireBatch` is already
        serialised. With an extension, websockets serialises per socket.
        """
        p = self._protocol
        if p.conn.extensions:
            conn = p.conn
            for item in items:
                for frame in item.frames if isinstance(item, WireBatch) else (item,):
                    if isinstance(frame, str):
                        conn.send_text(frame.encode())
                    else:
                        conn.send_binary(frame)
            p.transport.write(b"".join(conn.data_to_send()))
            return
        if len(items) == 1:
            item = items[0]
            p.transport.write(item.wire if isinstance(item, WireBatch) else cache.wire(item))
            return
        wire = cache.wire
        p.transport.write(
            b"".join([i.wire if isinstance(i, WireBatch) else wire(i) for i in items])
        )

    def write_batch(self, batch: WireBatch) -> None:
        """Write one batch now (fan-out's fast path; the caller checked :meth:`writable`)."""
        p = self._protocol
        if p.conn.extensions:
            self.write((batch,), _NO_CACHE)
        else:
            p.transport.write(batch.wire)


def serialize(frame: bytes | str) -> bytes:
    """The unmasked WebSocket frame carrying ``frame`` (text for str, binary for bytes)."""
    if isinstance(frame, str):
        return Frame(Opcode.TEXT, frame.encode()).serialize(mask=False)
    return Frame(Opcode.BINARY, frame).serialize(mask=False)


def wire_batch(frames: Sequence[bytes | str], label: str) -> WireBatch:
    """A :class:`~server.sendqueue.WireBatch` of ``frames``, serialised once."""
    return WireBatch(b"".join([serialize(f) for f in frames]), tuple(frames), label)


class WireCache:
    """Serialised WebSocket frames by payload, shared by every socket of a hub.

    Keyed by the payload object itself (bytes and str cache their hash), so a
    frame queued to many sockets one by one (presence states) is serialised
    once. Fan-out of sequenced events does not need it (a
    :class:`~server.sendqueue.WireBatch` is serialised once already). Bounded
    in bytes: frames over ``max_frame_bytes`` are serialised without being
    kept, and the cache is cleared when it holds ``max_bytes`` of frames
    (payload and wire copy counted).
    """

    __slots__ = ("_bytes", "_frames", "max_bytes", "max_frame_bytes")

    def __init__(self, max_bytes: int = 4 * 1024 * 1024, max_frame_bytes: int = 16384) -> None:
        self._frames: dict[bytes | str, bytes] = {}
        self._bytes = 0
        self.max_bytes = max_bytes
        self.max_frame_bytes = max_frame_bytes

    def wire(self, payload: bytes | str) -> bytes:
        """The unmasked frame carrying ``payload`` (text for str, binary for bytes)."""
        frames = self._frames
        wire = frames.get(payload)
        if wire is None:
            wire = serialize(payload)
            size = len(wire)
            if size > self.max_frame_bytes:
                return wire
            if self._bytes + 2 * size > self.max_bytes:
                frames.clear()
                self._bytes = 0
            frames[payload] = wire
            self._bytes += 2 * size
        return wire


_NO_CACHE = WireCache(max_bytes=0, max_frame_bytes=0)


class HubWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol, publishing a :class:`RawSocket`."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None and scope.get("type") == "websocket":
            # The ASGI task was created but has not run yet: it sees the extension.
            scope["extensions"][RAW_EXTENSION] = RawSocket(self)


# -- start-up check (issue 10) -------------------------------------------------------------
#: What this module uses of a ``WebSocketsSansIOProtocol`` instance (uvicorn internals, not
#: its public API): ``server.limits.check_uvicorn_internals`` refuses to start when one is
#: missing. Keep it in step with the code above.
UVICORN_WS_ATTRIBUTES = (
    "handshake_complete",
    "initial_response",
    "close_sent",
    "disconnected",
    "writable",
    "transport",
    "conn",
    "handle_connect",
)
