"""Codec details the vectors cannot express: frame kinds, sizes, registries, bounds."""

from __future__ import annotations

import msgpack
import msgspec
import pytest

from protocol.codec import (
    CODECS,
    MSGPACK_MAX_ARRAY_ITEMS,
    MSGPACK_MAX_MAP_ITEMS,
    MSGPACK_MAX_STR_BYTES,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    JsonCodec,
    MsgpackCodec,
    decode_server_message,
    frame_size,
    parse_message,
    request_id_of,
)
from protocol.errors import CloseCode, ErrorCode, ProtocolError
from protocol.messages import (
    CLIENT_TYPES,
    ClientMessage,
    Heartbeat,
    Hello,
    Ping,
    Request,
    Result,
    client_message,
)


def test_registry_of_subprotocols() -> None:
    assert set(CODECS) == {"medhub.v1.msgpack", "medhub.v1.json"}
    assert CODECS[SUBPROTOCOL_MSGPACK]().binary is True
    assert CODECS[SUBPROTOCOL_JSON]().binary is False


def test_wrong_frame_kind_is_bad_frame() -> None:
    with pytest.raises(ProtocolError) as info:
        MsgpackCodec().decode_raw('{"type":"ping","id":1}')
    assert info.value.code is ErrorCode.BAD_FRAME
    with pytest.raises(ProtocolError) as info:
        JsonCodec().decode_raw(b'{"type":"ping","id":1}')
    assert info.value.code is ErrorCode.BAD_FRAME


def test_msgpack_accepts_any_bytes_like() -> None:
    frame = msgpack.packb({"type": "ping", "id": 1})
    for kind in (bytes, bytearray, memoryview):
        assert MsgpackCodec().decode_raw(kind(frame)) == {"type": "ping", "id": 1}


def test_encoders_give_the_frame_kind_of_their_subprotocol() -> None:
    message = Result(id=1, data=[1, "a"])
    assert MsgpackCodec().encode(message) == msgpack.packb(
        {"type": "result", "id": 1, "data": [1, "a"]}
    )
    assert JsonCodec().encode(message) == '{"type":"result","id":1,"data":[1,"a"]}'


def test_frame_size_counts_utf8_bytes() -> None:
    assert frame_size(b"abc") == 3
    assert frame_size("abc") == 3
    assert frame_size("é") == 2
    assert frame_size("\U0001f600") == 4


@pytest.mark.parametrize(
    ("bound", "value"),
    [
        ("str", "x" * (MSGPACK_MAX_STR_BYTES + 1)),
        ("array", [0] * (MSGPACK_MAX_ARRAY_ITEMS + 1)),
        ("map", {str(i): 0 for i in range(MSGPACK_MAX_MAP_ITEMS + 1)}),
        ("bin", b"x" * (MSGPACK_MAX_STR_BYTES + 1)),
    ],
)
def test_msgpack_bounds(bound: str, value: object) -> None:
    codec = MsgpackCodec()
    with pytest.raises(ProtocolError) as info:
        codec.decode_raw(msgpack.packb({"type": "hello", "id": 1, "x": value}))
    assert info.value.code is ErrorCode.BAD_FRAME, bound


def test_msgpack_bounds_are_inclusive() -> None:
    codec = MsgpackCodec()
    value = {str(i): 0 for i in range(MSGPACK_MAX_MAP_ITEMS)}
    assert len(codec.decode_raw(msgpack.packb(value))) == MSGPACK_MAX_MAP_ITEMS
    assert (
        len(codec.decode_raw(msgpack.packb([0] * MSGPACK_MAX_ARRAY_ITEMS)))
        == MSGPACK_MAX_ARRAY_ITEMS
    )


def test_errors_never_close_by_themselves() -> None:
    for raw in ({}, {"type": "x", "id": 1}, {"type": "ping"}, []):
        with pytest.raises(ProtocolError) as info:
            parse_message(raw, 10)
        assert info.value.close is None
    assert CloseCode.ABUSIVE == 4029


@pytest.mark.parametrize(
    ("rid", "readable"),
    [
        (0, True),
        (2**53 - 1, True),
        ("a", True),
        ("a" * 64, True),
        (2**53, False),
        (-1, False),
        ("", False),
        ("a" * 65, False),
        (True, False),
        (1.0, False),
        (None, False),
        ([1], False),
    ],
)
def test_request_id_rules(rid: object, readable: bool) -> None:
    """The id echoed in errors and the id accepted by validation follow the same rules."""
    assert request_id_of({"id": rid}) == (rid if readable else None)
    raw = {"type": "ping", "id": rid}
    if readable:
        assert parse_message(raw, 10) == Ping(id=rid)  # type: ignore[arg-type]
    else:
        with pytest.raises(ProtocolError) as info:
            parse_message(raw, 10)
        assert info.value.code is ErrorCode.BAD_REQUEST


def test_client_types_and_size_limits() -> None:
    core = {"hello": Hello, "ping": Ping, "heartbeat": Heartbeat}
    assert {k: CLIENT_TYPES[k] for k in core} == core
    assert (Hello.max_bytes, Ping.max_bytes, Heartbeat.max_bytes) == (16384, 256, 64)
    assert issubclass(Hello, Request)
    assert not issubclass(Heartbeat, Request)


def test_type_limit_is_inclusive() -> None:
    raw = {"type": "ping", "id": 1}
    assert parse_message(raw, Ping.max_bytes) == Ping(id=1)
    with pytest.raises(ProtocolError) as info:
        parse_message(raw, Ping.max_bytes + 1)
    assert info.value.code is ErrorCode.TOO_LARGE
    assert info.value.request_id == 1


def test_duplicate_registration_is_refused() -> None:
    with pytest.raises(ValueError, match="ping"):

        @client_message
        class Ping2(ClientMessage, tag="ping", frozen=True):
            pass

    assert CLIENT_TYPES["ping"] is Ping


def test_decode_server_message_refusals() -> None:
    codec = JsonCodec()
    for frame, code in [
        ("[]", ErrorCode.BAD_REQUEST),
        ('{"type":"nope"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type":"result"}', ErrorCode.BAD_REQUEST),
        ("{", ErrorCode.BAD_FRAME),
    ]:
        with pytest.raises(ProtocolError) as info:
            decode_server_message(codec, frame)
        assert info.value.code is code, frame


def test_server_messages_tolerate_unknown_fields() -> None:
    """Clients must ignore fields added later in v1 (servers refuse them; clients do not)."""
    msg = decode_server_message(JsonCodec(), '{"type":"result","id":1,"data":null,"new":1}')
    assert msg == Result(id=1)
    assert msgspec.to_builtins(msg) == {"type": "result", "id": 1}


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "presence.get", "id": 1, "users": ["bob smith"]},
        {"type": "presence.subscribe", "id": 1, "users": ["ada@example.org"]},
        {"type": "chat.sync", "id": 1, "conv": "-x", "after_seq": 0},
        {"type": "chat.create", "id": 1, "kind": "direct", "members": ["Jean Dupont"]},
    ],
)
def test_entity_ids_are_pseudonymous_or_refused(raw: dict[str, object]) -> None:
    """Names, emails and odd ids never reach a capability (nor its audit trail)."""
    with pytest.raises(ProtocolError) as info:
        parse_message(raw, 64)
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert info.value.request_id == 1
