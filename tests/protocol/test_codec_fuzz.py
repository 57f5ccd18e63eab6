"""Fuzzing both codecs: whatever the peer sends, only ProtocolError escapes.

``decode_raw`` + ``parse_message`` is the whole path from an untrusted frame
to a typed message; every test here feeds it garbage of a different shape.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from protocol.codec import (
    JSON_MAX_DEPTH,
    Codec,
    JsonCodec,
    MsgpackCodec,
    decode_server_message,
    frame_size,
    json_too_deep,
    parse_message,
)
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import CLIENT_TYPES, SERVER_TYPES, ClientMessage, Request

MSGPACK = MsgpackCodec()
JSON = JsonCodec()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKEN = "t" * 20
VALID = [
    {"type": "hello", "id": 1, "auth": {"method": "token", "token": TOKEN}},
    {
        "type": "hello",
        "id": "h",
        "auth": {"method": "cookie"},
        "client": "x",
        "resume": {"channels": {"chat:1": 3}},
    },
    {"type": "ping", "id": 7},
    {"type": "ping", "id": "p-1"},
    {"type": "heartbeat"},
]
MSGPACK_FRAMES = [MSGPACK.encode_raw(v) for v in VALID]
JSON_FRAMES = [JSON.encode_raw(v) for v in VALID]


def outcome(codec: Codec, frame: Any) -> ClientMessage | ProtocolError:
    """Feed one frame; fail the test on anything but a message or a ProtocolError."""
    try:
        raw = codec.decode_raw(frame)
        size = frame_size(frame)
        return parse_message(raw, size)
    except ProtocolError as exc:
        error = exc
    assert isinstance(error.code, ErrorCode)
    assert error.request_id is None or isinstance(error.request_id, str | int)
    return error


def check_valid(message: ClientMessage | ProtocolError) -> None:
    """A message that got through satisfies the documented envelope rules."""
    if isinstance(message, ProtocolError):
        return
    assert type(message) in CLIENT_TYPES.values()
    if isinstance(message, Request):
        rid = message.id
        if isinstance(rid, str):
            assert 1 <= len(rid) <= 64
        else:
            assert isinstance(rid, int)
            assert not isinstance(rid, bool)
            assert 0 <= rid < 2**53


# -- arbitrary input -------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_msgpack(data: bytes) -> None:
    check_valid(outcome(MSGPACK, data))


@FUZZ
@given(st.binary(max_size=256))
def test_arbitrary_bytes_json_are_refused_as_wrong_frame_kind(data: bytes) -> None:
    result = outcome(JSON, data)
    assert isinstance(result, ProtocolError)
    assert result.code is ErrorCode.BAD_FRAME


@FUZZ
@given(st.text(max_size=2048))
def test_arbitrary_text_json(text: str) -> None:
    check_valid(outcome(JSON, text))


@FUZZ
@given(st.text(max_size=256))
def test_arbitrary_text_msgpack_is_refused_as_wrong_frame_kind(text: str) -> None:
    result = outcome(MSGPACK, text)
    assert isinstance(result, ProtocolError)
    assert result.code is ErrorCode.BAD_FRAME


@FUZZ
@given(st.text(alphabet=st.sampled_from('{}[]",:0123456789.-+eEtrufalsn\\ ud8'), max_size=512))
def test_json_like_text(text: str) -> None:
    check_valid(outcome(JSON, text))


@FUZZ
@given(st.binary(max_size=1024))
def test_arbitrary_bytes_as_server_frames(data: bytes) -> None:
    """The client side (decode_server_message) is just as robust."""
    with contextlib.suppress(ProtocolError):
        decode_server_message(MSGPACK, data)


# -- mutated valid frames -----------------------------------------------------------------
@st.composite
def mutated(draw: st.DrawFn, frames: list[Any]) -> Any:
    frame = draw(st.sampled_from(frames))
    is_text = isinstance(frame, str)
    buf = bytearray(frame.encode() if is_text else frame)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "replace"]))
        if op == "flip" and buf:
            i = draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del buf[draw(st.integers(0, len(buf))) :]
        elif op == "insert":
            i = draw(st.integers(0, len(buf)))
            buf[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and buf:
            i = draw(st.integers(0, len(buf) - 1))
            del buf[i : i + draw(st.integers(1, 4))]
        elif op == "replace" and buf:
            i = draw(st.integers(0, len(buf) - 1))
            buf[i] = draw(st.integers(0, 255))
    if is_text:
        return bytes(buf).decode("utf-8", "replace")
    return bytes(buf)


@FUZZ
@given(mutated(MSGPACK_FRAMES))
def test_mutated_msgpack_frames(frame: bytes) -> None:
    check_valid(outcome(MSGPACK, frame))


@FUZZ
@given(mutated(JSON_FRAMES))
def test_mutated_json_frames(frame: str) -> None:
    check_valid(outcome(JSON, frame))


def test_valid_frames_parse() -> None:
    """The seeds of the mutation tests are themselves valid."""
    for frame in MSGPACK_FRAMES:
        assert not isinstance(outcome(MSGPACK, frame), ProtocolError)
    for text in JSON_FRAMES:
        assert not isinstance(outcome(JSON, text), ProtocolError)


# -- deep nesting ------------------------------------------------------------------------------
DEPTHS = [100, 1_000, 2_000, 10_000, 100_000, sys.getrecursionlimit() * 4]


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("opener", [b"\x91", b"\x81\xa1k"], ids=["array", "map"])
def test_deep_msgpack_is_bad_frame_or_refused(depth: int, opener: bytes) -> None:
    """msgpack's StackError (depth > 1024) surfaces as bad_frame."""
    frame = b"\x83\xa4type\xa5hello\xa2id\x01\xa1x" + opener * depth + b"\xc0"
    result = outcome(MSGPACK, frame)
    assert isinstance(result, ProtocolError)
    if depth > 1024:
        assert result.code is ErrorCode.BAD_FRAME
    elif len(frame) <= 16384:
        assert result.code is ErrorCode.BAD_REQUEST  # decodable; "x" is an unknown field
        assert result.request_id == 1


def test_msgpack_stack_error_is_mapped() -> None:
    frame = b"\x91" * 5000 + b"\xc0"
    with pytest.raises(msgpack.StackError):
        msgpack.unpackb(frame)
    with pytest.raises(ProtocolError) as info:
        MSGPACK.decode_raw(frame)
    assert info.value.code is ErrorCode.BAD_FRAME


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("kind", ["array", "object"])
def test_deep_json_is_bad_frame_or_refused(depth: int, kind: str) -> None:
    """msgspec's RecursionError on deep JSON surfaces as bad_frame."""
    inner = "[" * depth + "]" * depth if kind == "array" else '{"k":' * depth + "0" + "}" * depth
    frame = '{"type":"hello","id":1,"x":' + inner + "}"
    result = outcome(JSON, frame)
    assert isinstance(result, ProtocolError)
    # Decodable: unknown field (or over hello's max_bytes); too deep: bad_frame.
    assert result.code in (ErrorCode.BAD_FRAME, ErrorCode.BAD_REQUEST, ErrorCode.TOO_LARGE)
    if depth < JSON_MAX_DEPTH:
        assert result.code is ErrorCode.BAD_REQUEST
    else:  # refused before decoding, so the decoder never recurses that deep
        assert result.code is ErrorCode.BAD_FRAME


def test_json_too_deep_is_refused_before_decoding() -> None:
    frame = "[" * 200_000 + "]" * 200_000
    with pytest.raises(ProtocolError) as info:
        JSON.decode_raw(frame)
    assert info.value.code is ErrorCode.BAD_FRAME
    assert "deeper" in info.value.message


def test_json_depth_guard_ignores_brackets_in_strings() -> None:
    text = r'{"type":"ping","id":1,"x":"\"' + "[{" * 500 + r'\\"}'
    assert not json_too_deep(text)
    assert json_too_deep("[" * (JSON_MAX_DEPTH + 1) + "]" * (JSON_MAX_DEPTH + 1))
    assert not json_too_deep("[" * JSON_MAX_DEPTH + "]" * JSON_MAX_DEPTH)


def test_deep_value_inside_a_valid_field_is_refused() -> None:
    """Depth in a typed field (resume.channels) is refused by validation, not a crash."""
    deep: Any = 0
    for _ in range(JSON_MAX_DEPTH - 4):
        deep = {"k": deep}
    raw = {"type": "hello", "id": 1, "auth": {"method": "cookie"}, "resume": {"channels": deep}}
    for codec in (MSGPACK, JSON):
        frame = codec.encode_raw(raw)
        result = outcome(codec, frame)
        assert isinstance(result, ProtocolError)
        assert result.code is ErrorCode.BAD_REQUEST
        assert result.request_id == 1


# -- structured random data -----------------------------------------------------------------
TYPE_NAMES = sorted(set(CLIENT_TYPES) | set(SERVER_TYPES) | {"", "HELLO", "unknown"})
KEYS = st.sampled_from(
    ["type", "id", "auth", "method", "token", "client", "resume", "channels", "extra"]
) | st.text(max_size=8)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80)
    | st.sampled_from(TYPE_NAMES)
    | st.sampled_from(["ticket", "token", "cookie", TOKEN])
)
JSONISH = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=12,
)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    data = draw(st.dictionaries(KEYS, JSONISH, max_size=6))
    if draw(st.booleans()):
        data["type"] = draw(st.sampled_from(TYPE_NAMES))
    if draw(st.booleans()):
        data["id"] = draw(st.integers(-5, 2**53 + 5) | st.text(max_size=70) | JSONISH)
    if draw(st.booleans()):
        data["auth"] = draw(
            st.fixed_dictionaries(
                {"method": st.sampled_from(["ticket", "token", "cookie", "x"])},
                optional={"token": st.sampled_from([TOKEN, "short"]) | JSONISH},
            )
            | JSONISH
        )
    return data


@FUZZ
@given(messages())
def test_structured_random_dicts(data: dict[str, Any]) -> None:
    for codec in (MSGPACK, JSON):
        result = outcome(codec, codec.encode_raw(data))
        check_valid(result)
        if isinstance(result, ProtocolError):
            rid = data.get("id")
            # An error carries the request id exactly when it is a valid one.
            readable = (isinstance(rid, str) and 0 < len(rid) <= 64) or (
                type(rid) is int and 0 <= rid < 2**53
            )
            assert result.request_id == (rid if readable else None)
        else:
            assert data["type"] in CLIENT_TYPES


@FUZZ
@given(JSONISH)
def test_arbitrary_plain_data(data: Any) -> None:
    for codec in (MSGPACK, JSON):
        check_valid(outcome(codec, codec.encode_raw(data)))


@FUZZ
@given(
    st.sampled_from(VALID),
    st.sampled_from(["type", "id", "auth", "client", "resume"]),
    JSONISH,
)
def test_one_field_replaced(base: dict[str, Any], key: str, value: Any) -> None:
    data = {**base, key: value}
    for codec in (MSGPACK, JSON):
        check_valid(outcome(codec, codec.encode_raw(data)))


def test_structured_strategy_reaches_valid_messages() -> None:
    """The random dicts are not all trivially refused: some parse into messages."""

    def parses(data: dict[str, Any]) -> bool:
        return not isinstance(outcome(JSON, JSON.encode_raw(data)), ProtocolError)

    quick = settings(max_examples=2000, database=None, phases=[Phase.generate])
    found = find(messages(), parses, settings=quick)
    assert found["type"] in CLIENT_TYPES


def test_json_depth_guard_on_hostile_quotes() -> None:
    """Escaped quotes that never close a string do not confuse the guard."""
    assert json_too_deep("[" * 65 + '"' + '\\"' * 30000)
    assert not json_too_deep('["' + '\\"' * 30000 + '",' + "[]" * 40 + "]")
    assert json_too_deep('["\\\\",' + "[" * 65 + "]" * 65 + "]")  # an escaped backslash
    assert not json_too_deep('{"a":"' + "[" * 100 + '"}')  # brackets inside a string
