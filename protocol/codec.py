"""The two v1 codecs: ``medhub.v1.msgpack`` (binary frames) and ``medhub.v1.json`` (text).

Decoding is two steps, so that an error can name the request it answers:

1. :meth:`Codec.decode_raw` turns a frame into plain data (maps, lists,
   strings, numbers). msgpack is read with strict limits: no ext types, string
   or bytes map keys only, bounded lengths and depth.
2. :func:`parse_message` looks up the ``type``, checks the frame size against
   that type's ``max_bytes``, and validates the fields into its Struct.

Nothing here raises anything but :class:`~protocol.errors.ProtocolError`.
Encoding server messages is one call per codec; fan-out encodes once per
codec and sends the same bytes to every recipient.
"""

from __future__ import annotations

import abc
import re
from typing import Any, Final

import msgpack
import msgspec

from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import CLIENT_TYPES, SERVER_TYPES, ClientMessage, OneWay, ServerMessage

SUBPROTOCOL_MSGPACK: Final = "medhub.v1.msgpack"
SUBPROTOCOL_JSON: Final = "medhub.v1.json"

#: Bounds applied while reading msgpack (each in items or bytes of one value).
MSGPACK_MAX_STR_BYTES: Final = 65536
MSGPACK_MAX_BIN_BYTES: Final = 65536
MSGPACK_MAX_ARRAY_ITEMS: Final = 4096
MSGPACK_MAX_MAP_ITEMS: Final = 1024
#: Deepest nesting of arrays and maps accepted in a JSON frame (levels).
JSON_MAX_DEPTH: Final = 64

_JSON_ESCAPE = re.compile(r"\\.", re.DOTALL)
_JSON_STRING = re.compile(r'"[^"]*"')
_JSON_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_TO_PARENS = str.maketrans("[{]}", "(())")


def json_too_deep(text: str, limit: int = JSON_MAX_DEPTH) -> bool:
    """True when ``text`` nests arrays/maps deeper than ``limit`` levels.

    Checked before decoding, so that a hostile frame never drives the decoder
    into a RecursionError (which CPython 3.11 does not always recover from
    cleanly). Ordinary frames skip it (it runs only when the frame holds more
    opening brackets than ``limit``). Otherwise every step is a C-level pass:
    drop escaped characters, then strings (no escape is left, so each string
    match ends at the next quote: linear), keep only the brackets, and peel
    innermost pairs ``limit`` times; an opening bracket left means too deep
    (or unbalanced, which the decoder would refuse anyway).
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _JSON_STRING.sub("", _JSON_ESCAPE.sub("", text))
    brackets = _JSON_NOT_BRACKET.sub("", brackets).translate(_TO_PARENS)
    if "(" * (limit + 1) in brackets:
        return True
    for _ in range(limit):
        if "()" not in brackets:
            break
        brackets = brackets.replace("()", "")
    return "(" in brackets


Frame = bytes | str


class Codec(abc.ABC):
    """Turns frames into plain data and server messages into frames."""

    name: str
    #: True when this codec's frames are binary WebSocket frames.
    binary: bool

    @abc.abstractmethod
    def decode_raw(self, frame: Frame) -> Any:
        """Plain data of ``frame``; raises ProtocolError(bad_frame)."""

    @abc.abstractmethod
    def encode(self, message: ServerMessage) -> Frame:
        """The frame carrying ``message`` (bytes for binary codecs, str for text)."""

    @abc.abstractmethod
    def encode_raw(self, data: Any) -> Frame:
        """The frame carrying plain ``data`` (used by clients and test vectors)."""


def _refuse_ext(code: int, data: bytes) -> Any:
    # max_ext_len=0 still lets a zero-length ext (ext 8 with length 0) through.
    raise ValueError(f"msgpack ext type {code} is not allowed")


class MsgpackCodec(Codec):
    """``medhub.v1.msgpack``: one msgpack map per binary frame."""

    name = SUBPROTOCOL_MSGPACK
    binary = True

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()

    def decode_raw(self, frame: Frame) -> Any:
        if not isinstance(frame, bytes | bytearray | memoryview):
            raise ProtocolError(ErrorCode.BAD_FRAME, "msgpack subprotocol expects binary frames")
        try:
            return msgpack.unpackb(
                frame,
                raw=False,
                strict_map_key=True,
                use_list=True,
                max_str_len=MSGPACK_MAX_STR_BYTES,
                max_bin_len=MSGPACK_MAX_BIN_BYTES,
                max_array_len=MSGPACK_MAX_ARRAY_ITEMS,
                max_map_len=MSGPACK_MAX_MAP_ITEMS,
                max_ext_len=0,
                ext_hook=_refuse_ext,
            )
        except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
            msg = f"undecodable msgpack: {type(exc).__name__}"
            raise ProtocolError(ErrorCode.BAD_FRAME, msg) from exc

    def encode(self, message: ServerMessage) -> bytes:
        return self._encoder.encode(message)

    def encode_raw(self, data: Any) -> bytes:
        return self._encoder.encode(data)


class JsonCodec(Codec):
    """``medhub.v1.json``: one JSON object per text frame (UTF-8)."""

    name = SUBPROTOCOL_JSON
    binary = False

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()

    def decode_raw(self, frame: Frame) -> Any:
        if not isinstance(frame, str):
            raise ProtocolError(ErrorCode.BAD_FRAME, "json subprotocol expects text frames")
        if json_too_deep(frame):
            raise ProtocolError(ErrorCode.BAD_FRAME, f"JSON nested deeper than {JSON_MAX_DEPTH}")
        try:
            return msgspec.json.decode(frame)
        except (msgspec.DecodeError, RecursionError, ValueError) as exc:
            msg = f"undecodable JSON: {type(exc).__name__}"
            raise ProtocolError(ErrorCode.BAD_FRAME, msg) from exc

    def encode(self, message: ServerMessage) -> str:
        return self._encoder.encode(message).decode()

    def encode_raw(self, data: Any) -> str:
        return self._encoder.encode(data).decode()


CODECS: Final[dict[str, type[Codec]]] = {
    SUBPROTOCOL_MSGPACK: MsgpackCodec,
    SUBPROTOCOL_JSON: JsonCodec,
}


def request_id_of(raw: dict[Any, Any]) -> str | int | None:
    """The request id of plain message ``raw`` when it is a valid one, else None."""
    rid = raw.get("id")
    if isinstance(rid, str) and 0 < len(rid) <= 64:
        return rid
    if isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid < 2**53:
        return rid
    return None


def parse_message(raw: Any, frame_size: int) -> ClientMessage:
    """Validate plain data ``raw`` (from a frame of ``frame_size`` bytes) into a message.

    Raises ProtocolError with ``bad_request`` (not a map, missing or invalid
    field, unknown field), ``unknown_type`` or ``too_large``; the error carries
    the request id whenever ``raw`` has a readable one.
    """
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a message must be a map")
    rid = request_id_of(raw)
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "missing string field 'type'", request_id=rid)
    cls = CLIENT_TYPES.get(kind)
    if cls is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            "unknown message type",
            request_id=rid,
            ref=kind[:64] if rid is None else None,  # a reply-less message: say which
        )
    ref = kind if issubclass(cls, OneWay) else None
    if frame_size > cls.max_bytes:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"{kind} frames are limited to {cls.max_bytes} bytes",
            request_id=rid,
            ref=ref,
        )
    try:
        return msgspec.convert(raw, cls)
    except msgspec.ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, str(exc), request_id=rid, ref=ref) from exc


def decode_server_message(codec: Codec, frame: Frame) -> ServerMessage:
    """Decode a server frame (for clients and tests); raises ProtocolError."""
    raw = codec.decode_raw(frame)
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a server message must be a typed map")
    cls = SERVER_TYPES.get(raw["type"])
    if cls is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "unknown server message type")
    try:
        return msgspec.convert(raw, cls)
    except msgspec.ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, str(exc)) from exc


def frame_size(frame: Frame) -> int:
    """Size of ``frame`` in bytes on the wire (UTF-8 length for text frames)."""
    if isinstance(frame, str):
        return len(frame) if frame.isascii() else len(frame.encode("utf-8", "surrogatepass"))
    return len(frame)
