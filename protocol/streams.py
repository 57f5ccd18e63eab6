"""Binary stream frames: one-way binary payloads beside the request/reply messages.

Capabilities that move bulk data in one direction (EEG samples from a recorder,
later EEG frames to viewers) use *stream frames* instead of msgpack or JSON
messages. They travel as binary WebSocket frames on **both** subprotocols:

    byte 0      STREAM_MAGIC (0xC1)
    byte 1      kind: a code registered with :func:`stream_kind`
    bytes 2..   the payload, whose layout belongs to the kind (e.g. protocol/eeg.py)

``0xC1`` is the one byte msgpack never uses, so on ``medhub.v1.msgpack`` a
binary frame starting with it can never be a message; on ``medhub.v1.json``
every binary frame must be a stream frame. A stream frame gets no reply. When
the hub cannot take it, it answers an ``error`` with no ``id`` and ``ref``
``"stream:<kind name>"`` (``unknown_type`` for an unregistered kind,
``too_large`` past the kind's ``max_bytes``, ``rate_limited`` past the stream
budget, ``handshake_required`` before ``welcome``), and the socket survives.

Pure: no I/O. Raises only :class:`~protocol.errors.ProtocolError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from protocol.errors import ErrorCode, ProtocolError

#: First byte of every stream frame (never a valid msgpack byte).
STREAM_MAGIC: Final = 0xC1
#: Bytes before the payload: the magic and the kind.
HEADER_BYTES: Final = 2
#: Largest stream frame any kind may declare (bytes); the WebSocket hard limit also applies.
MAX_STREAM_FRAME_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StreamKind:
    """A registered kind of stream frame: its code, name and size limit (bytes, header included)."""

    code: int
    name: str
    max_bytes: int

    @property
    def ref(self) -> str:
        """The ``ref`` of errors about frames of this kind."""
        return f"stream:{self.name}"


#: code -> kind, for every stream kind of v1.
STREAM_KINDS: dict[int, StreamKind] = {}


def stream_kind(code: int, name: str, max_bytes: int) -> StreamKind:
    """Register and return a stream kind.

    Raises ``ValueError`` when ``code`` is not in 1..255, is already taken, or
    ``max_bytes`` is outside ``HEADER_BYTES..MAX_STREAM_FRAME_BYTES``.
    """
    if not 1 <= code <= 255:
        raise ValueError("stream kind codes are 1..255")
    if code in STREAM_KINDS:
        raise ValueError(f"stream kind {code} is already registered")
    if not HEADER_BYTES < max_bytes <= MAX_STREAM_FRAME_BYTES:
        raise ValueError(f"max_bytes must be in {HEADER_BYTES + 1}..{MAX_STREAM_FRAME_BYTES}")
    kind = StreamKind(code, name, max_bytes)
    STREAM_KINDS[code] = kind
    return kind


def is_stream_frame(frame: bytes | bytearray | memoryview | str) -> bool:
    """True when ``frame`` is a binary frame starting with :data:`STREAM_MAGIC`."""
    return not isinstance(frame, str) and len(frame) > 0 and frame[0] == STREAM_MAGIC


def parse_stream(frame: bytes | bytearray | memoryview) -> tuple[StreamKind, memoryview]:
    """The kind and payload of a stream frame (the caller checked :func:`is_stream_frame`).

    Raises ProtocolError: ``bad_frame`` when the header is cut short,
    ``unknown_type`` for an unregistered kind, ``too_large`` past its ``max_bytes``.
    """
    if len(frame) < HEADER_BYTES:
        raise ProtocolError(
            ErrorCode.BAD_FRAME, "stream frame shorter than its header", ref="stream:?"
        )
    kind = STREAM_KINDS.get(frame[1])
    if kind is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE, f"unknown stream kind {frame[1]}", ref=f"stream:{frame[1]}"
        )
    if len(frame) > kind.max_bytes:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"{kind.name} stream frames are limited to {kind.max_bytes} bytes",
            ref=kind.ref,
        )
    return kind, memoryview(frame)[HEADER_BYTES:]


def encode_stream(kind: StreamKind, payload: bytes | bytearray | memoryview) -> bytes:
    """The stream frame carrying ``payload`` (for senders; raises ValueError past max_bytes)."""
    if HEADER_BYTES + len(payload) > kind.max_bytes:
        raise ValueError(f"{kind.name} payload over {kind.max_bytes - HEADER_BYTES} bytes")
    return bytes((STREAM_MAGIC, kind.code)) + bytes(payload)
