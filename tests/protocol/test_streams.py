"""Stream frames and one-way messages in the sans-I/O session (no event loop)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from protocol.codec import Codec, JsonCodec, MsgpackCodec
from protocol.errors import CloseCode, ErrorCode
from protocol.messages import OneWay, client_message
from protocol.session import Deliver, DeliverStream, Reject, Session, SessionLimits
from protocol.streams import (
    STREAM_KINDS,
    STREAM_MAGIC,
    StreamKind,
    encode_stream,
    is_stream_frame,
    parse_stream,
    stream_kind,
)

T0 = 1000.0
HELLO = {"type": "hello", "id": "h1", "auth": {"method": "token", "token": "t" * 20}}


def _kind(code: int, name: str, max_bytes: int) -> StreamKind:
    return STREAM_KINDS.get(code) or stream_kind(code, name, max_bytes)


PROBE = _kind(251, "probe", 64)


@client_message
class Nudge(OneWay, tag="test.nudge", frozen=True):
    """A one-way message of the tests."""

    n: int
    max_bytes: ClassVar[int] = 128


@pytest.fixture(params=[JsonCodec, MsgpackCodec], ids=["json", "msgpack"])
def codec(request: pytest.FixtureRequest) -> Codec:
    cls: type[Codec] = request.param
    return cls()


def opened(codec: Codec, limits: SessionLimits | None = None) -> Session:
    s = Session(codec, limits or SessionLimits(), T0)
    assert isinstance(s.receive(codec.encode_raw(HELLO), T0), Deliver)
    s.open()
    return s


def error_of(out: Any) -> Reject:
    assert isinstance(out, Reject), out
    return out


def test_stream_frames_are_binary_on_both_subprotocols(codec: Codec) -> None:
    s = opened(codec)
    out = s.receive(encode_stream(PROBE, b"abc"), T0 + 1)
    assert isinstance(out, DeliverStream)
    assert out.kind is PROBE
    assert bytes(out.payload) == b"abc"


def test_a_msgpack_message_is_never_mistaken_for_a_stream_frame() -> None:
    codec = MsgpackCodec()
    frame = codec.encode_raw({"type": "ping", "id": 1})
    assert not is_stream_frame(frame)
    assert frame[0] != STREAM_MAGIC
    assert not is_stream_frame("\u00c1 text")


def test_unknown_kind_too_large_and_truncated_frames_get_errors(codec: Codec) -> None:
    s = opened(codec)
    out = error_of(s.receive(bytes((STREAM_MAGIC, 199, 1, 2)), T0 + 1))
    assert (out.error.code, out.error.ref, out.error.id) == ("unknown_type", "stream:199", None)
    out = error_of(s.receive(encode_stream(PROBE, b"") + b"x" * 100, T0 + 1))
    assert (out.error.code, out.error.ref) == ("too_large", "stream:probe")
    out = error_of(s.receive(bytes((STREAM_MAGIC,)), T0 + 1))
    assert out.error.code == "bad_frame"
    assert out.close is None  # the socket survives each of them


def test_stream_frames_before_welcome_are_refused(codec: Codec) -> None:
    s = Session(codec, SessionLimits(), T0)
    out = error_of(s.receive(encode_stream(PROBE, b"x"), T0))
    assert (out.error.code, out.error.ref) == ("handshake_required", "stream:probe")


def test_streams_and_messages_have_separate_rate_budgets(codec: Codec) -> None:
    limits = SessionLimits(rate_per_s=1.0, rate_burst=3, stream_rate_per_s=1.0, stream_rate_burst=2)
    s = opened(codec, limits)  # the hello took one message token
    t = T0 + 0.001
    for _ in range(2):
        assert isinstance(s.receive(encode_stream(PROBE, b"x"), t), DeliverStream)
    limited = error_of(s.receive(encode_stream(PROBE, b"x"), t))
    assert (limited.error.code, limited.error.ref) == ("rate_limited", "stream:probe")
    assert limited.error.retry_after_s is not None
    # the stream budget is spent, yet messages still flow on theirs
    ping = codec.encode_raw({"type": "ping", "id": 7})
    assert isinstance(s.receive(ping, t), Deliver)
    assert isinstance(s.receive(ping, t), Deliver)
    assert error_of(s.receive(ping, t)).error.code == "rate_limited"


def test_stream_errors_count_toward_the_abuse_budget(codec: Codec) -> None:
    s = opened(codec, SessionLimits(abuse_max_errors=2, abuse_window_s=10.0))
    bad = bytes((STREAM_MAGIC, 198))
    assert error_of(s.receive(bad, T0 + 1)).close is None
    assert error_of(s.receive(bad, T0 + 1)).close is None
    assert error_of(s.receive(bad, T0 + 1)).close is CloseCode.ABUSIVE


def test_one_way_messages_are_delivered_and_their_errors_name_them(codec: Codec) -> None:
    s = opened(codec)
    out = s.receive(codec.encode_raw({"type": "test.nudge", "n": 3}), T0 + 1)
    assert isinstance(out, Deliver)
    assert out.message == Nudge(n=3)
    bad = error_of(s.receive(codec.encode_raw({"type": "test.nudge", "n": "x"}), T0 + 1))
    assert (bad.error.code, bad.error.ref, bad.error.id) == ("bad_request", "test.nudge", None)
    before = Session(codec, SessionLimits(), T0)
    early = error_of(before.receive(codec.encode_raw({"type": "test.nudge", "n": 1}), T0))
    assert (early.error.code, early.error.ref) == (ErrorCode.HANDSHAKE_REQUIRED, "test.nudge")


def test_an_unknown_type_without_id_is_named_in_the_error(codec: Codec) -> None:
    s = opened(codec)
    out = error_of(s.receive(codec.encode_raw({"type": "no.such"}), T0 + 1))
    assert (out.error.code, out.error.ref) == ("unknown_type", "no.such")


def test_kind_registry_refuses_duplicates_and_bad_sizes() -> None:
    with pytest.raises(ValueError, match="already registered"):
        stream_kind(PROBE.code, "again", 64)
    with pytest.raises(ValueError, match=r"1\.\.255"):
        stream_kind(0, "zero", 64)
    with pytest.raises(ValueError, match="max_bytes"):
        stream_kind(252, "huge", 10**9)
    with pytest.raises(ValueError, match="probe payload over"):
        encode_stream(PROBE, b"x" * 100)
    kind, payload = parse_stream(encode_stream(PROBE, b"\x00\x01"))
    assert kind is PROBE
    assert bytes(payload) == b"\x00\x01"
