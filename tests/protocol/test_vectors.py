"""The committed golden frames (protocol/vectors/*.json), both directions, both codecs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from protocol.codec import (
    Codec,
    JsonCodec,
    MsgpackCodec,
    decode_server_message,
    frame_size,
    parse_message,
)
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import CLIENT_TYPES, SERVER_TYPES
from protocol.vectors import generate

VECTOR_DIR = Path(generate.__file__).resolve().parent
FILES = sorted(VECTOR_DIR.glob("*.json"))
CODECS: dict[str, Codec] = {"json": JsonCodec(), "msgpack_hex": MsgpackCodec()}


def _load() -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for path in FILES:
        for case in json.loads(path.read_text(encoding="utf-8")):
            cases.append((path.name, case))
    return cases


CASES = _load()


def _frames(case: dict[str, Any]) -> list[tuple[Codec, str | bytes]]:
    out: list[tuple[Codec, str | bytes]] = []
    if case["json"] is not None:
        out.append((CODECS["json"], case["json"]))
    if case["msgpack_hex"] is not None:
        out.append((CODECS["msgpack_hex"], bytes.fromhex(case["msgpack_hex"])))
    return out


def _params(direction: str, ok: bool | None = None) -> list[Any]:
    params = []
    for file, case in CASES:
        if case["direction"] != direction:
            continue
        if ok is not None and (case["expect"] == "ok") != ok:
            continue
        for codec, frame in _frames(case):
            params.append(
                pytest.param(case, codec, frame, id=f"{file}:{case['name']}:{codec.name}")
            )
    return params


# -- the files themselves -----------------------------------------------------------
def test_files_exist_and_are_well_formed() -> None:
    assert {p.name for p in FILES} >= {"core.json", "invalid.json"}
    keys = {"name", "direction", "meaning", "json", "msgpack_hex", "expect"}
    for path in FILES:
        cases = json.loads(path.read_text(encoding="utf-8"))
        names = [c["name"] for c in cases]
        assert len(names) == len(set(names)), f"duplicate names in {path.name}"
        for case in cases:
            assert keys <= set(case) <= keys | {"note"}, case["name"]
            assert case["direction"] in ("client", "server")
            assert case["json"] is not None or case["msgpack_hex"] is not None
            if case["expect"] != "ok":
                assert set(case["expect"]) == {"error", "id"}
                ErrorCode(case["expect"]["error"])  # a catalogued code


def test_generator_reproduces_committed_files() -> None:
    built = generate.build()
    assert sorted(built) == [p.name for p in FILES]
    for name, text in built.items():
        assert (VECTOR_DIR / name).read_text(encoding="utf-8") == text, (
            f"{name} is stale: run python -m protocol.vectors.generate"
        )


def test_coverage_of_message_types() -> None:
    """Every v1 message type has at least one valid vector in its direction."""
    seen = {
        (case["direction"], case["meaning"]["type"]) for _, case in CASES if case["expect"] == "ok"
    }
    core_client = {"hello", "ping", "heartbeat"}
    assert {("client", t) for t in core_client} <= seen
    assert {("server", t) for t in SERVER_TYPES} <= seen
    assert core_client <= set(CLIENT_TYPES)
    auth_methods = {
        case["meaning"]["auth"]["method"]
        for _, case in CASES
        if case["expect"] == "ok" and case["meaning"]["type"] == "hello"
    }
    assert auth_methods == {"ticket", "token", "cookie"}
    codes = {case["expect"]["error"] for _, case in CASES if case["expect"] != "ok"}
    assert codes == {"bad_frame", "bad_request", "unknown_type", "too_large"}


# -- server -> client -----------------------------------------------------------------
@pytest.mark.parametrize(("case", "codec", "frame"), _params("server"))
def test_server_vector_decodes_to_meaning(
    case: dict[str, Any], codec: Codec, frame: str | bytes
) -> None:
    message = decode_server_message(codec, frame)
    assert msgspec.to_builtins(message) == case["meaning"]
    assert type(message) is SERVER_TYPES[case["meaning"]["type"]]


@pytest.mark.parametrize(("case", "codec", "frame"), _params("server"))
def test_server_encoder_reproduces_vector(
    case: dict[str, Any], codec: Codec, frame: str | bytes
) -> None:
    message = msgspec.convert(case["meaning"], SERVER_TYPES[case["meaning"]["type"]])
    encoded = codec.encode(message)
    assert type(encoded) is type(frame)
    assert encoded == frame


# -- client -> server -----------------------------------------------------------------
@pytest.mark.parametrize(("case", "codec", "frame"), _params("client", ok=True))
def test_valid_client_vector_parses(case: dict[str, Any], codec: Codec, frame: str | bytes) -> None:
    meaning = case["meaning"]
    message = parse_message(codec.decode_raw(frame), frame_size(frame))
    cls = CLIENT_TYPES[meaning["type"]]
    assert type(message) is cls
    assert message == msgspec.convert(meaning, cls)
    # The frames are the canonical encodings of the meaning.
    assert codec.encode_raw(meaning) == frame


@pytest.mark.parametrize(("case", "codec", "frame"), _params("client", ok=False))
def test_invalid_client_vector_is_refused(
    case: dict[str, Any], codec: Codec, frame: str | bytes
) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_message(codec.decode_raw(frame), frame_size(frame))
    assert info.value.code.value == case["expect"]["error"]
    assert info.value.request_id == case["expect"]["id"]
    assert info.value.close is None  # the socket survives a bad frame
    if case["meaning"] is not None:
        assert codec.encode_raw(case["meaning"]) == frame


def test_invalid_vectors_cover_the_brief() -> None:
    names = {case["name"] for _, case in CASES if case["expect"] != "ok"}
    required = {
        "unknown_type",
        "missing_type",
        "extra_field",
        "wrong_field_type",
        "id_too_long",
        "not_a_map_array",
        "too_large_ping",
        "msgpack_truncated",
        "msgpack_ext_type",
        "msgpack_int_map_key",
        "json_invalid",
        "json_nan",
    }
    assert required <= names


def _spec_examples() -> list[str]:
    spec = (VECTOR_DIR.parent / "SPEC.md").read_text(encoding="utf-8")
    lines, inside = [], False
    for line in spec.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            inside = stripped == "```json"
            continue
        if inside and stripped:
            lines.append(stripped)
    return lines


def test_spec_examples_are_valid_or_vectors() -> None:
    """Every JSON example in SPEC.md is a valid message, or a frame of the invalid vectors."""
    examples = _spec_examples()
    assert len(examples) >= 15
    invalid_frames = {case["json"] for _, case in CASES if case["expect"] != "ok"}
    codec = JsonCodec()
    for text in examples:
        if text in invalid_frames:
            continue
        try:
            parse_message(codec.decode_raw(text), frame_size(text))
        except ProtocolError:
            decode_server_message(codec, text)  # raises when neither
