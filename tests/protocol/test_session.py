"""The Session state machine, driven with explicit times (no event loop, no clock)."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.codec import Codec, JsonCodec, MsgpackCodec
from protocol.errors import CloseCode, ErrorCode
from protocol.messages import Hello, Ping
from protocol.session import (
    IGNORE,
    SEND_HEARTBEAT,
    Close,
    Deliver,
    Reject,
    Session,
    SessionLimits,
    State,
    TokenBucket,
)

T0 = 1000.0
TOKEN = "t" * 20
HELLO = {"type": "hello", "id": "h1", "auth": {"method": "token", "token": TOKEN}}
LIMITS = SessionLimits(
    handshake_timeout_s=5.0,
    heartbeat_interval_s=25.0,
    idle_timeout_s=60.0,
    max_frame_bytes=65536,
    rate_per_s=1000.0,
    rate_burst=1000,
    abuse_max_errors=100,
    abuse_window_s=10.0,
)


@pytest.fixture(params=[JsonCodec, MsgpackCodec], ids=["json", "msgpack"])
def codec(request: pytest.FixtureRequest) -> Codec:
    cls: type[Codec] = request.param
    return cls()


def frame(codec: Codec, data: Any) -> bytes | str:
    return codec.encode_raw(data)


def ping(codec: Codec, rid: int | str = 1) -> bytes | str:
    return frame(codec, {"type": "ping", "id": rid})


def rejected(outcome: object, code: ErrorCode, rid: Any = None) -> Reject:
    assert isinstance(outcome, Reject), outcome
    assert outcome.error.code == code.value
    assert outcome.error.id == rid
    return outcome


def opened(codec: Codec, limits: SessionLimits = LIMITS, now: float = T0) -> Session:
    session = Session(codec, limits, now)
    assert isinstance(session.receive(frame(codec, HELLO), now), Deliver)
    session.open()
    return session


# -- handshake ------------------------------------------------------------------------
def test_hello_is_required_first(codec: Codec) -> None:
    s = Session(codec, LIMITS, T0)
    out = rejected(s.receive(ping(codec, 7), T0), ErrorCode.HANDSHAKE_REQUIRED, 7)
    assert out.close is None
    assert s.state is State.AWAITING_HELLO
    out2 = s.receive(frame(codec, HELLO), T0 + 1)
    assert isinstance(out2, Deliver)
    assert isinstance(out2.message, Hello)
    assert out2.message.id == "h1"
    assert s.state is State.AUTHENTICATING


def test_requests_before_open_are_refused(codec: Codec) -> None:
    s = Session(codec, LIMITS, T0)
    s.receive(frame(codec, HELLO), T0)
    rejected(s.receive(ping(codec, "p"), T0 + 0.1), ErrorCode.HANDSHAKE_REQUIRED, "p")
    s.open()
    assert s.state is State.OPEN
    out = s.receive(ping(codec, "p"), T0 + 0.2)
    assert isinstance(out, Deliver)
    assert out.message == Ping(id="p")


def test_second_hello_is_already_authenticated(codec: Codec) -> None:
    s = Session(codec, LIMITS, T0)
    s.receive(frame(codec, HELLO), T0)
    # while the first one is being checked ...
    rejected(s.receive(frame(codec, {**HELLO, "id": 2}), T0), ErrorCode.ALREADY_AUTHENTICATED, 2)
    s.open()
    # ... and after it was accepted
    out = rejected(
        s.receive(frame(codec, {**HELLO, "id": 3}), T0), ErrorCode.ALREADY_AUTHENTICATED, 3
    )
    assert out.close is None
    assert s.state is State.OPEN


def test_open_only_after_hello(codec: Codec) -> None:
    s = Session(codec, LIMITS, T0)
    with pytest.raises(RuntimeError):
        s.open()
    s.receive(frame(codec, HELLO), T0)
    s.open()
    with pytest.raises(RuntimeError):
        s.open()


def test_heartbeat_is_ignored_in_every_state(codec: Codec) -> None:
    s = Session(codec, LIMITS, T0)
    hb = frame(codec, {"type": "heartbeat"})
    assert s.receive(hb, T0) is IGNORE
    assert s.state is State.AWAITING_HELLO
    s.receive(frame(codec, HELLO), T0)
    assert s.receive(hb, T0) is IGNORE
    s.open()
    assert s.receive(hb, T0 + 1) is IGNORE
    assert s.last_received == T0 + 1


def test_bad_frames_are_answered_and_the_session_survives(codec: Codec) -> None:
    s = opened(codec)
    out = rejected(
        s.receive(frame(codec, {"type": "nope", "id": 4}), T0), ErrorCode.UNKNOWN_TYPE, 4
    )
    assert out.close is None
    bad = "{" if isinstance(frame(codec, {}), str) else b"\xc1"
    rejected(s.receive(bad, T0), ErrorCode.BAD_FRAME, None)
    assert isinstance(s.receive(ping(codec), T0), Deliver)


# -- deadlines ----------------------------------------------------------------------------
def test_handshake_timeout_exactly_at_deadline(codec: Codec) -> None:
    s = Session(codec, LIMITS, T0)
    assert s.poll(T0) is None
    assert s.poll(T0 + 4.999) is None
    # a heartbeat or a bad frame does not extend the handshake deadline
    s.receive(frame(codec, {"type": "heartbeat"}), T0 + 4.5)
    s.receive(ping(codec), T0 + 4.6)
    assert s.poll(T0 + 4.999) is None
    assert s.poll(T0 + 5.0) == Close(CloseCode.HANDSHAKE_TIMEOUT, "handshake timeout")


def test_a_slow_credential_check_does_not_count_against_the_client(codec: Codec) -> None:
    # The hello arrived in time: the handshake deadline no longer applies; the
    # server's own credential check has auth_timeout_s from the hello's arrival.
    limits = SessionLimits(handshake_timeout_s=5.0, auth_timeout_s=30.0)
    s = Session(codec, limits, T0)
    s.receive(frame(codec, HELLO), T0 + 4)
    assert s.poll(T0 + 5.0) is None
    assert s.poll(T0 + 33.9) is None
    out = s.poll(T0 + 34.0)
    assert out == Close(CloseCode.TRY_AGAIN_LATER, "authentication timed out")


def test_no_handshake_timeout_once_open(codec: Codec) -> None:
    s = opened(codec, now=T0)
    s.sent(T0 + 5)
    assert s.poll(T0 + 5.0) is None
    assert s.poll(T0 + 20.0) is None


def test_idle_timeout(codec: Codec) -> None:
    s = opened(codec, now=T0)
    s.receive(ping(codec), T0 + 10)
    s.sent(T0 + 50)  # keep the heartbeat timer quiet
    assert s.poll(T0 + 69.999) is None
    out = s.poll(T0 + 70.0)
    assert out == Close(CloseCode.IDLE_TIMEOUT, "idle timeout")


def test_any_inbound_frame_resets_idle(codec: Codec) -> None:
    s = opened(codec, now=T0)
    s.receive(frame(codec, {"type": "heartbeat"}), T0 + 55)
    s.sent(T0 + 100)
    assert s.poll(T0 + 114) is None
    s.receive(b"\xc1" if isinstance(ping(codec), bytes) else "x", T0 + 114)  # even a bad one
    s.sent(T0 + 150)
    assert s.poll(T0 + 173.9) is None
    assert isinstance(s.poll(T0 + 174), Close)


def test_heartbeat_due_after_interval_and_reset_by_sent(codec: Codec) -> None:
    s = opened(codec, now=T0)
    assert s.poll(T0 + 24.9) is None
    assert s.poll(T0 + 25.0) is SEND_HEARTBEAT
    assert s.poll(T0 + 25.1) is None  # not again until another interval passes
    assert s.poll(T0 + 49.9) is None
    s.sent(T0 + 40)  # a frame written meanwhile pushes it back
    s.receive(frame(codec, {"type": "heartbeat"}), T0 + 40)
    assert s.poll(T0 + 64.9) is None
    assert s.poll(T0 + 65.0) is SEND_HEARTBEAT


def test_no_heartbeat_before_open(codec: Codec) -> None:
    limits = SessionLimits(handshake_timeout_s=100.0, heartbeat_interval_s=1.0)
    s = Session(codec, limits, T0)
    assert s.poll(T0 + 50) is None


def test_closed_session_polls_nothing(codec: Codec) -> None:
    s = opened(codec)
    s.closed()
    assert s.state is State.CLOSED
    assert s.poll(T0 + 10_000) is None


# -- rate limiting -------------------------------------------------------------------------
# Times and rates are powers of two so that the arithmetic is exact.
RATED = SessionLimits(rate_per_s=8.0, rate_burst=5, abuse_max_errors=1000)


def test_burst_then_rate_limited_then_refills(codec: Codec) -> None:
    s = opened(codec, RATED, now=T0)  # the hello took one token
    t = T0 + 24.0  # long after: the bucket is full again, but never above its size
    for i in range(5):
        assert isinstance(s.receive(ping(codec, i), t), Deliver)
    out = rejected(s.receive(ping(codec, 99), t), ErrorCode.RATE_LIMITED, 99)
    assert out.close is None
    assert out.error.retry_after_s == 0.125  # one token at 8 per second
    # halfway to the next token: still limited, with a shorter wait
    out = rejected(s.receive(ping(codec, 100), t + 0.0625), ErrorCode.RATE_LIMITED, 100)
    assert out.error.retry_after_s == 0.063  # 0.0625 rounded up to the millisecond
    # after retry_after_s: accepted again, once
    assert isinstance(s.receive(ping(codec, 101), t + 0.125), Deliver)
    rejected(s.receive(ping(codec, 102), t + 0.125), ErrorCode.RATE_LIMITED, 102)
    # a full refill takes burst / rate = 0.625 s
    t2 = t + 0.125 + 0.625
    for i in range(5):
        assert isinstance(s.receive(ping(codec, i), t2), Deliver)
    rejected(s.receive(ping(codec, 6), t2), ErrorCode.RATE_LIMITED, 6)


def test_rate_limit_counts_every_frame_kind(codec: Codec) -> None:
    s = Session(codec, SessionLimits(rate_per_s=1.0, rate_burst=2), T0)
    hb = frame(codec, {"type": "heartbeat"})
    assert s.receive(hb, T0) is IGNORE
    assert s.receive(hb, T0) is IGNORE
    out = rejected(s.receive(hb, T0), ErrorCode.RATE_LIMITED, None)
    assert out.error.retry_after_s == pytest.approx(1.0)


def test_retry_after_is_rounded_up_and_sufficient(codec: Codec) -> None:
    s = opened(codec, SessionLimits(rate_per_s=3.0, rate_burst=1), now=T0)
    out = rejected(s.receive(ping(codec, 1), T0), ErrorCode.RATE_LIMITED, 1)
    wait = out.error.retry_after_s
    assert wait is not None
    assert wait == 0.334
    assert isinstance(s.receive(ping(codec, 2), T0 + wait), Deliver)


def test_retry_after_is_never_zero(codec: Codec) -> None:
    s = opened(codec, SessionLimits(rate_per_s=1.0, rate_burst=1), now=T0)
    out = rejected(s.receive(ping(codec, 1), T0 + 0.9999999), ErrorCode.RATE_LIMITED, 1)
    assert out.error.retry_after_s == 0.001


def test_rate_limited_frame_over_the_frame_limit_has_no_id(codec: Codec) -> None:
    s = opened(codec, SessionLimits(rate_per_s=1.0, rate_burst=1, max_frame_bytes=100), now=T0)
    big = frame(codec, {"type": "ping", "id": 5, "pad": "x" * 200})
    rejected(s.receive(big, T0), ErrorCode.RATE_LIMITED, None)


def test_large_rate_limited_frame_is_not_decoded_for_its_id(codec: Codec) -> None:
    s = opened(codec, SessionLimits(rate_per_s=1.0, rate_burst=1), now=T0)
    big = frame(codec, {"type": "ping", "id": 5, "pad": "x" * 5000})
    rejected(s.receive(big, T0), ErrorCode.RATE_LIMITED, None)


def test_before_hello_nothing_larger_than_a_hello_is_decoded(codec: Codec) -> None:
    s = Session(codec, SessionLimits(), T0)
    big = frame(codec, {"type": "hello", "id": 1, "auth": {"method": "cookie"}, "x": "y" * 17000})
    rejected(s.receive(big, T0), ErrorCode.TOO_LARGE, None)


def test_token_bucket() -> None:
    b = TokenBucket(2.0, 3, now=0.0)
    assert [b.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take(0.0) == pytest.approx(0.5)
    assert b.take(0.25) == pytest.approx(0.25)
    assert b.take(0.5) == 0.0
    assert b.take(100.0) == 0.0  # refilled to 3, not to 200
    assert b.take(100.0) == 0.0
    assert b.take(100.0) == 0.0
    assert b.take(100.0) > 0.0


# -- abuse budget ----------------------------------------------------------------------------
ABUSE = SessionLimits(abuse_max_errors=3, abuse_window_s=10.0)


def bad(codec: Codec, rid: int) -> bytes | str:
    return frame(codec, {"type": "nope", "id": rid})


def test_abuse_budget_closes_4029(codec: Codec) -> None:
    s = opened(codec, ABUSE, now=T0)
    for i in range(3):
        assert rejected(s.receive(bad(codec, i), T0 + i), ErrorCode.UNKNOWN_TYPE, i).close is None
    out = rejected(s.receive(bad(codec, 3), T0 + 9.9), ErrorCode.UNKNOWN_TYPE, 3)
    assert out.close is CloseCode.ABUSIVE


def test_errors_spread_over_more_than_the_window_are_tolerated(codec: Codec) -> None:
    s = opened(codec, ABUSE, now=T0)
    for i in range(20):
        out = rejected(s.receive(bad(codec, i), T0 + i * 3.4), ErrorCode.UNKNOWN_TYPE, i)
        assert out.close is None, i  # never more than 3 within any 10 s


def test_abuse_window_slides(codec: Codec) -> None:
    s = opened(codec, ABUSE, now=T0)
    for i in range(3):
        s.receive(bad(codec, i), T0 + i)
    # the first error (at T0) leaves the window just after T0 + 10
    assert rejected(s.receive(bad(codec, 3), T0 + 10.001), ErrorCode.UNKNOWN_TYPE, 3).close is None
    # now errors at T0+1, T0+2, T0+10.001, and one more is the fourth within 10 s
    out = rejected(s.receive(bad(codec, 4), T0 + 10.5), ErrorCode.UNKNOWN_TYPE, 4)
    assert out.close is CloseCode.ABUSIVE


def test_rate_limiting_counts_toward_abuse(codec: Codec) -> None:
    limits = SessionLimits(rate_per_s=1.0, rate_burst=2, abuse_max_errors=3, abuse_window_s=10.0)
    s = opened(codec, limits, now=T0)
    assert isinstance(s.receive(ping(codec, 0), T0), Deliver)
    closes = [
        rejected(s.receive(ping(codec, i), T0), ErrorCode.RATE_LIMITED, i).close
        for i in range(1, 5)
    ]
    assert closes == [None, None, None, CloseCode.ABUSIVE]


def test_handshake_errors_count_toward_abuse(codec: Codec) -> None:
    s = Session(codec, ABUSE, T0)
    closes = [s.receive(ping(codec, i), T0) for i in range(4)]
    assert [rejected(c, ErrorCode.HANDSHAKE_REQUIRED, i).close for i, c in enumerate(closes)] == [
        None,
        None,
        None,
        CloseCode.ABUSIVE,
    ]


# -- size limits ------------------------------------------------------------------------------
def test_too_large_by_max_frame_bytes(codec: Codec) -> None:
    limits = SessionLimits(max_frame_bytes=100)
    s = Session(codec, limits, T0)
    hello = frame(codec, {**HELLO, "client": "c" * 60})
    assert 100 < len(hello) < Hello.max_bytes
    out = rejected(s.receive(hello, T0), ErrorCode.TOO_LARGE, None)  # not even decoded
    assert out.close is None
    assert s.state is State.AWAITING_HELLO
    small = frame(codec, HELLO)
    assert len(small) <= 100
    assert isinstance(s.receive(small, T0), Deliver)


def test_too_large_by_max_frame_bytes_counts_utf8_bytes() -> None:
    codec = JsonCodec()
    text = codec.encode_raw({**HELLO, "client": "é" * 30})
    limits = SessionLimits(max_frame_bytes=len(text) + 10)  # chars fit, UTF-8 bytes do not
    s = Session(codec, limits, T0)
    assert len(text.encode()) > limits.max_frame_bytes
    rejected(s.receive(text, T0), ErrorCode.TOO_LARGE, None)


def test_too_large_by_type_max_bytes(codec: Codec) -> None:
    s = opened(codec)
    big = frame(codec, {"type": "ping", "id": 8, "pad": "x" * 300})
    assert Ping.max_bytes < len(big) < LIMITS.max_frame_bytes
    out = rejected(s.receive(big, T0), ErrorCode.TOO_LARGE, 8)  # type-level: id is known
    assert out.close is None
    hb = frame(codec, {"type": "heartbeat", "pad": "x" * 64})
    rejected(s.receive(hb, T0), ErrorCode.TOO_LARGE, None)
