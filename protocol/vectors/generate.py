"""Regenerate the golden frames: ``python -m protocol.vectors.generate``.

The committed ``*.json`` files are the source of truth that the tests (and the
browser client) check; this script only makes them reproducible. :func:`build`
is pure: it returns ``{file name: file text}``. Running the module writes the
files next to it; ``--check`` writes nothing and exits 1 when a file differs.

- Server vectors are produced by encoding the Struct with each codec, so the
  encoder must reproduce them byte for byte.
- Valid client vectors are the canonical encodings of their ``meaning``
  (compact JSON, msgpack as msgspec writes it); any encoding of the same data
  is equally valid on the wire.
- Invalid client vectors are hand-made frames, each with the error code the
  server answers; a frame that only exists in one codec has ``null`` for the
  other.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from protocol.codec import JsonCodec, MsgpackCodec, frame_size, parse_message, request_id_of
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import (
    Error,
    Event,
    GoingAway,
    Identity,
    Limits,
    Result,
    ServerHeartbeat,
    ServerMessage,
    Welcome,
)

HERE = Path(__file__).resolve().parent

_MSGPACK = MsgpackCodec()
_JSON = JsonCodec()

TOKEN = "tok_4f9c2a7e51b84d0c9e3a6b1f"  # noqa: S105 (a sample; tokens are 16 to 512 chars)
TICKET = "tkt_0123456789abcdef0123"


def _case(
    name: str,
    direction: str,
    meaning: Any,
    json_frame: str | None,
    msgpack_frame: bytes | None,
    expect: str | dict[str, Any],
    note: str | None = None,
) -> dict[str, Any]:
    case: dict[str, Any] = {"name": name, "direction": direction}
    if note:
        case["note"] = note
    case["meaning"] = meaning
    case["json"] = json_frame
    case["msgpack_hex"] = None if msgpack_frame is None else msgpack_frame.hex()
    case["expect"] = expect
    return case


def _client_ok(name: str, meaning: dict[str, Any], note: str | None = None) -> dict[str, Any]:
    return _case(
        name, "client", meaning, _JSON.encode_raw(meaning), _MSGPACK.encode_raw(meaning), "ok", note
    )


def _server(name: str, message: ServerMessage, note: str | None = None) -> dict[str, Any]:
    meaning = msgspec.to_builtins(message)
    return _case(
        name, "server", meaning, _JSON.encode(message), _MSGPACK.encode(message), "ok", note
    )


def _error(code: ErrorCode, request_id: str | int | None) -> dict[str, Any]:
    return {"error": code.value, "id": request_id}


def _client_bad(
    name: str,
    meaning: Any,
    code: ErrorCode,
    request_id: str | int | None,
    *,
    json_frame: str | None = None,
    msgpack_frame: bytes | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """An invalid client frame; frames default to the canonical encodings of ``meaning``."""
    if json_frame is None and msgpack_frame is None:
        json_frame = _JSON.encode_raw(meaning)
        msgpack_frame = _MSGPACK.encode_raw(meaning)
    return _case(name, "client", meaning, json_frame, msgpack_frame, _error(code, request_id), note)


def core_cases() -> list[dict[str, Any]]:
    """Valid messages in both directions."""
    welcome = Welcome(
        id=1,
        session="3f2a9c0d4b1e8a77",
        node="hub-a-4242",
        protocol=1,
        heartbeat_s=25.0,
        idle_timeout_s=60.0,
        limits=Limits(
            max_frame_bytes=65536, rate_per_s=50.0, rate_burst=200, send_queue_max_messages=1024
        ),
        identity=Identity(user="u_7Hq2", role="doctor", org="o_19"),
    )
    return [
        # -- client -> server ------------------------------------------------------
        _client_ok(
            "hello_ticket",
            {"type": "hello", "id": 1, "auth": {"method": "ticket", "token": TICKET}},
            "browser: single-use ticket from the accounts API",
        ),
        _client_ok(
            "hello_token",
            {
                "type": "hello",
                "id": "h-1",
                "auth": {"method": "token", "token": TOKEN},
                "client": "medhub-py/0.1",
            },
            "API client: bearer session token; string request id",
        ),
        _client_ok(
            "hello_cookie",
            {"type": "hello", "id": 1, "auth": {"method": "cookie"}, "client": "médhub-web/1.0"},
            "browser: cookie sent with the upgrade request; no token; non-ASCII text",
        ),
        _client_ok(
            "hello_resume",
            {
                "type": "hello",
                "id": 2,
                "auth": {"method": "token", "token": TOKEN},
                "resume": {"channels": {"chat:c_81": 41, "presence:o_19": 7, "eeg:s_3": 0}},
            },
            "reconnect: last sequence number seen per channel",
        ),
        _client_ok("ping", {"type": "ping", "id": 7}),
        _client_ok("ping_string_id", {"type": "ping", "id": "a" * 64}, "longest string id"),
        _client_ok("ping_max_int_id", {"type": "ping", "id": 2**53 - 1}, "largest integer id"),
        _client_ok("heartbeat_client", {"type": "heartbeat"}, "no id, never answered"),
        # -- server -> client --------------------------------------------------------
        _server("welcome", welcome),
        _server(
            "welcome_acting_for",
            msgspec.structs.replace(
                welcome,
                id="h-1",
                identity=Identity(user="u_s3c", role="secretary", org="o_19", acting_for="u_7Hq2"),
            ),
            "a secretary acting by delegation",
        ),
        _server("result_ping", Result(id=7, data={"time": 1767225600.25})),
        _server("result_no_data", Result(id="r-9"), "data omitted means null"),
        _server(
            "error_with_id",
            Error(code="unknown_type", message="unknown message type", id=3),
        ),
        _server(
            "error_without_id",
            Error(code="bad_frame", message="undecodable JSON: DecodeError"),
            "the request id could not be read",
        ),
        _server(
            "error_rate_limited",
            Error(code="rate_limited", message="slow down", id=12, retry_after_s=0.02),
        ),
        _server(
            "event",
            Event(
                ch="chat:c_81",
                seq=42,
                kind="message",
                data={"from": "u_7Hq2", "text": "Bonjour"},
                epoch="e1a2",
            ),
        ),
        _server(
            "event_no_epoch",
            Event(
                ch="presence:o_19", seq=8, kind="state", data={"user": "u_7Hq2", "state": "away"}
            ),
        ),
        _server("heartbeat_server", ServerHeartbeat()),
        _server("going_away", GoingAway(retry_after_s=2.0), "reason omitted means shutdown"),
        _server("going_away_reason", GoingAway(retry_after_s=5.5, reason="maintenance")),
    ]


def invalid_cases() -> list[dict[str, Any]]:
    """Invalid client frames and the error the server answers with."""
    ping = {"type": "ping", "id": 5}
    ping_mp = _MSGPACK.encode_raw(ping)
    return [
        _client_bad("unknown_type", {"type": "teleport", "id": 4}, ErrorCode.UNKNOWN_TYPE, 4),
        _client_bad("missing_type", {"id": 4}, ErrorCode.BAD_REQUEST, 4),
        _client_bad("type_not_string", {"type": 1, "id": 4}, ErrorCode.BAD_REQUEST, 4),
        _client_bad(
            "extra_field", {"type": "ping", "id": 4, "extra": True}, ErrorCode.BAD_REQUEST, 4
        ),
        _client_bad(
            "extra_field_nested",
            {"type": "hello", "id": 4, "auth": {"method": "cookie", "user": "x"}},
            ErrorCode.BAD_REQUEST,
            4,
        ),
        _client_bad("missing_id", {"type": "ping"}, ErrorCode.BAD_REQUEST, None),
        _client_bad("hello_missing_auth", {"type": "hello", "id": 4}, ErrorCode.BAD_REQUEST, 4),
        _client_bad(
            "wrong_field_type",
            {"type": "hello", "id": 4, "auth": {"method": "token", "token": 12345}},
            ErrorCode.BAD_REQUEST,
            4,
        ),
        _client_bad(
            "bad_auth_method",
            {"type": "hello", "id": 4, "auth": {"method": "password", "token": TOKEN}},
            ErrorCode.BAD_REQUEST,
            4,
        ),
        _client_bad(
            "token_too_short",
            {"type": "hello", "id": 4, "auth": {"method": "token", "token": "short"}},
            ErrorCode.BAD_REQUEST,
            4,
        ),
        _client_bad(
            "resume_negative_seq",
            {
                "type": "hello",
                "id": 4,
                "auth": {"method": "cookie"},
                "resume": {"channels": {"a": -1}},
            },
            ErrorCode.BAD_REQUEST,
            4,
        ),
        _client_bad(
            "id_too_long",
            {"type": "ping", "id": "x" * 65},
            ErrorCode.BAD_REQUEST,
            None,
            note="an unreadable id is not echoed",
        ),
        _client_bad("id_empty", {"type": "ping", "id": ""}, ErrorCode.BAD_REQUEST, None),
        _client_bad("id_negative", {"type": "ping", "id": -1}, ErrorCode.BAD_REQUEST, None),
        _client_bad("id_too_big", {"type": "ping", "id": 2**53}, ErrorCode.BAD_REQUEST, None),
        _client_bad("id_float", {"type": "ping", "id": 1.5}, ErrorCode.BAD_REQUEST, None),
        _client_bad("id_bool", {"type": "ping", "id": True}, ErrorCode.BAD_REQUEST, None),
        _client_bad("not_a_map_array", ["ping", 5], ErrorCode.BAD_REQUEST, None),
        _client_bad("not_a_map_string", "ping", ErrorCode.BAD_REQUEST, None),
        _client_bad("not_a_map_null", None, ErrorCode.BAD_REQUEST, None),
        _client_bad(
            "too_large_ping",
            {"type": "ping", "id": 6, "pad": "x" * 256},
            ErrorCode.TOO_LARGE,
            6,
            note="ping frames are limited to 256 bytes; size is checked before fields",
        ),
        _client_bad(
            "too_large_heartbeat",
            {"type": "heartbeat", "pad": "x" * 64},
            ErrorCode.TOO_LARGE,
            None,
            note="heartbeat frames are limited to 64 bytes",
        ),
        # -- msgpack only --------------------------------------------------------------
        _client_bad(
            "msgpack_truncated",
            None,
            ErrorCode.BAD_FRAME,
            None,
            msgpack_frame=ping_mp[:-1],
            note="a ping map missing its last byte",
        ),
        _client_bad(
            "msgpack_trailing_bytes",
            None,
            ErrorCode.BAD_FRAME,
            None,
            msgpack_frame=ping_mp + b"\xc0",
            note="one frame carries exactly one value",
        ),
        _client_bad(
            "msgpack_empty",
            None,
            ErrorCode.BAD_FRAME,
            None,
            msgpack_frame=b"",
        ),
        _client_bad(
            "msgpack_ext_type",
            None,
            ErrorCode.BAD_FRAME,
            None,
            msgpack_frame=b"\x82\xa4type\xa4ping\xa2id\xd4\x05\x00",
            note="id is a fixext 1 (type 5): ext types are refused",
        ),
        _client_bad(
            "msgpack_ext_empty",
            None,
            ErrorCode.BAD_FRAME,
            None,
            msgpack_frame=b"\x82\xa4type\xa4ping\xa2id\xc7\x00\x05",
            note="ext 8 of length 0 is refused too",
        ),
        _client_bad(
            "msgpack_timestamp",
            None,
            ErrorCode.BAD_FRAME,
            None,
            msgpack_frame=b"\x82\xa4type\xa4ping\xa2id\xd6\xff\x00\x00\x00\x00",
            note="the timestamp ext type (-1) is an ext type",
        ),
        _client_bad(
            "msgpack_int_map_key",
            None,
            ErrorCode.BAD_FRAME,
            None,
            msgpack_frame=b"\x82\xa4type\xa4ping\x01\x05",
            note="map keys must be strings",
        ),
        _client_bad(
            "msgpack_bin_string",
            None,
            ErrorCode.BAD_REQUEST,
            5,
            msgpack_frame=b"\x82\xa4type\xc4\x04ping\xa2id\x05",
            note="type is bin, not str: strings must be msgpack str",
        ),
        _client_bad(
            "msgpack_nan_id",
            None,
            ErrorCode.BAD_REQUEST,
            None,
            msgpack_frame=b"\x82\xa4type\xa4ping\xa2id\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00",
            note="id is a float64 NaN",
        ),
        _client_bad(
            "msgpack_invalid_utf8",
            None,
            ErrorCode.BAD_FRAME,
            None,
            msgpack_frame=b"\x82\xa4type\xa4p\xffng\xa2id\x05",
            note="str must be UTF-8",
        ),
        # -- JSON only ---------------------------------------------------------------------
        _client_bad(
            "json_invalid",
            None,
            ErrorCode.BAD_FRAME,
            None,
            json_frame='{"type":"ping","id":5',
            note="truncated JSON",
        ),
        _client_bad("json_empty", None, ErrorCode.BAD_FRAME, None, json_frame=""),
        _client_bad(
            "json_trailing",
            None,
            ErrorCode.BAD_FRAME,
            None,
            json_frame='{"type":"ping","id":5} {}',
            note="one frame carries exactly one value",
        ),
        _client_bad(
            "json_nan",
            None,
            ErrorCode.BAD_FRAME,
            None,
            json_frame='{"type":"ping","id":NaN}',
            note="NaN and Infinity are not JSON",
        ),
        _client_bad(
            "json_single_quotes",
            None,
            ErrorCode.BAD_FRAME,
            None,
            json_frame="{'type':'ping','id':5}",
        ),
        _client_bad(
            "json_lone_surrogate",
            None,
            ErrorCode.BAD_FRAME,
            None,
            json_frame='{"type":"ping","id":"\\ud800"}',
            note="an escaped lone surrogate is not a Unicode string",
        ),
    ]


def _check(cases: list[dict[str, Any]]) -> None:
    """Refuse to write a vector the codecs disagree with (a generator bug)."""
    for case in cases:
        if case["direction"] != "client":
            continue
        frames: list[tuple[Any, str | bytes]] = []
        if case["json"] is not None:
            frames.append((_JSON, case["json"]))
        if case["msgpack_hex"] is not None:
            frames.append((_MSGPACK, bytes.fromhex(case["msgpack_hex"])))
        for codec, frame in frames:
            try:
                raw = codec.decode_raw(frame)
                parse_message(raw, frame_size(frame))
            except ProtocolError as exc:
                got: Any = {"error": exc.code.value, "id": exc.request_id}
            else:
                got = "ok"
                assert isinstance(raw, dict)
                assert request_id_of(raw) == raw.get("id")
            if got != case["expect"]:
                raise AssertionError(f"{case['name']} ({codec.name}): {got} != {case['expect']}")


def _dump(cases: list[dict[str, Any]]) -> str:
    _check(cases)
    return json.dumps(cases, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def build() -> dict[str, str]:
    """The text of every vector file of this directory, by file name."""
    from protocol.vectors.eeg_cases import message_cases

    return {
        "core.json": _dump(core_cases()),
        "invalid.json": _dump(invalid_cases()),
        "eeg.json": _dump(message_cases()),
    }


def build_frames() -> dict[str, str]:
    """The binary stream frame vectors (subdirectories; see eeg_cases.py)."""
    from protocol.vectors.eeg_cases import frame_cases

    return {"eeg/frames.json": json.dumps(frame_cases(), indent=2, allow_nan=False) + "\n"}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, text in {**build(), **build_frames()}.items():
        path = HERE / name
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print("stale vector files: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
