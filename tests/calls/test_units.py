"""Pure pieces: the ``call`` frame layout and checks, TURN credentials, SDP trickle split."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from media.peer import split_candidates
from protocol.calls import (
    CALL_FRAME_PREFIX,
    MAX_CANDIDATE_BYTES,
    Signal,
    check_sdp,
    check_signal,
    parse_signal,
    signal_frame,
)
from server.calls.turn import ice_servers, turn_credentials
from tests.calls.helpers import OFFER, candidate

CALL = "0123456789abcdef"


def test_a_call_frame_is_the_stream_header_the_kind_the_call_id_and_the_payload() -> None:
    frame = signal_frame(Signal.CANDIDATE, CALL, candidate(1))
    assert frame[:2] == CALL_FRAME_PREFIX == b"\xc1\x02"
    assert frame[2] == 1
    assert frame[3:19] == CALL.encode()
    assert frame[19:] == candidate(1)
    assert parse_signal(frame) == (Signal.CANDIDATE, CALL, candidate(1))
    with pytest.raises(ValueError, match="16 characters"):
        signal_frame(Signal.OFFER, "short", b"")
    with pytest.raises(ValueError, match="over"):
        signal_frame(Signal.CANDIDATE, CALL, b"x" * (MAX_CANDIDATE_BYTES + 1))
    with pytest.raises(ValueError, match="not a call frame"):
        parse_signal(b"\xc1\x02\x01abc")


@pytest.mark.parametrize(
    ("kind", "payload", "problem"),
    [
        (Signal.CANDIDATE, candidate(3), None),
        (Signal.CANDIDATE, b'{"candidate":""}', None),  # an empty candidate: end of a generation
        (Signal.CANDIDATE, b"candidate:1 1 udp 1 127.0.0.1 9 typ host", "JSON object"),
        (Signal.CANDIDATE, b'{"cand":"x"}', "JSON object"),
        (Signal.CANDIDATE, b'{"candidate":"\xc3\x28"}', "UTF-8"),
        (Signal.END_OF_CANDIDATES, b"", None),
        (Signal.END_OF_CANDIDATES, b"{}", "over 0 bytes"),
        (Signal.OFFER, OFFER.encode(), None),
        (Signal.ANSWER, OFFER.encode().replace(b"\r\n", b"\n"), None),  # bare LF is tolerated
        (Signal.OFFER, b"v=0\r\ns=-\r\n", "no media section"),
        (Signal.OFFER, b"hello\r\n", "v=0"),
        (Signal.ANSWER, b"v=0\r\nm=audio 9\r\nnot a line\r\n", "lines"),
        (9, b"{}", "unknown signal kind"),
    ],
)
def test_the_hub_checks_structure_only(kind: int, payload: bytes, problem: str | None) -> None:
    found = check_signal(kind, memoryview(payload))
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found
    assert check_sdp(b"v=0\r\nm=video 9 X 96") is None  # no final newline


def test_turn_credentials_follow_coturns_shared_secret_scheme() -> None:
    username, password = turn_credentials("s3cret", "u-42", now_s=1_000.5, ttl_s=3600)
    assert username == "4600:u-42"
    expected = hmac.new(b"s3cret", b"4600:u-42", hashlib.sha1).digest()
    assert base64.b64decode(password) == expected
    with pytest.raises(ValueError, match="empty"):
        turn_credentials("", "u-42", 0, 3600)
    with pytest.raises(ValueError, match="ttl_s"):
        turn_credentials("s", "u-42", 0, 0)


def test_ice_servers_list_stun_alone_and_turn_with_one_credential() -> None:
    assert ice_servers([], [], "s", "u-1", 0, 60) == []
    got = ice_servers(["stun:a:3478"], ["turn:b:3478?transport=udp", "turn:b:443?transport=tcp"],
                      "s", "u-1", 0, 60)  # fmt: skip
    assert got[0] == {"urls": ["stun:a:3478"]}
    assert got[1]["urls"] == ["turn:b:3478?transport=udp", "turn:b:443?transport=tcp"]
    assert got[1]["username"] == "60:u-1"
    assert got[1]["credential"] == turn_credentials("s", "u-1", 0, 60)[1]


def test_split_candidates_takes_every_candidate_out_of_an_sdp_with_its_section() -> None:
    sdp = (
        "v=0\r\nm=audio 9 X 0\r\na=mid:0\r\na=candidate:1 1 udp 9 127.0.0.1 5000 typ host\r\n"
        "a=end-of-candidates\r\nm=video 9 X 96\r\na=mid:1\r\n"
        "a=candidate:2 1 udp 9 127.0.0.1 5002 typ host\r\n"
    )
    bare, found = split_candidates(sdp)
    assert "candidate" not in bare
    assert found == [
        {"candidate": "candidate:1 1 udp 9 127.0.0.1 5000 typ host", "sdpMid": "0",
         "sdpMLineIndex": 0},
        {"candidate": "candidate:2 1 udp 9 127.0.0.1 5002 typ host", "sdpMid": "1",
         "sdpMLineIndex": 1},
    ]  # fmt: skip
