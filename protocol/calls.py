"""v1 call signalling: lifecycle requests, call events, and the ``call`` stream frames.

The hub never carries media: it makes two peers meet. A call belongs to a
conversation (a consultation, or a staff conversation) or is a test call with
an echo service, and has exactly two parties: the caller's device that
invited, and the callee's device that answered first.

Lifecycle (requests, each answered by one ``result`` or ``error``)::

    call.invite  (offer + lifetime)  ->  ringing on every device of the callee
    call.accept  (answer; the first device wins)   -> connected
    call.reject | call.cancel | ring timeout | busy -> ended
    call.hangup  (a reason from HANGUP_REASONS)    -> ended
    call.resume  (a new socket of a party, within the grace period)

Events arrive on channel ``call:<id>`` with ``seq`` 0 (never replayed): kinds
:data:`EVENT_KINDS`.

**Stream frames** (``protocol/streams.py``, kind :data:`CALL_STREAM`) carry
the opaque signalling the hub relays between the two parties without decoding
it: trickled ICE candidates and renegotiation offers and answers. Payload::

    byte 0        payload kind (:class:`Signal`)
    bytes 1..16   the call id (16 ASCII characters, lower-case hex)
    bytes 17..    the opaque payload (UTF-8 text; layout per kind below)

The other party receives the very same frame. Kinds:

- ``CANDIDATE`` (1): the JSON text of an ``RTCIceCandidateInit``
  (``{"candidate": "candidate:...", "sdpMid": "0", "sdpMLineIndex": 0}``),
  at most :data:`MAX_CANDIDATE_BYTES`;
- ``END_OF_CANDIDATES`` (2): empty;
- ``OFFER`` (3) / ``ANSWER`` (4): a renegotiation's SDP text (screen share,
  ICE restart), at most :data:`MAX_SDP_BYTES`.

Pure: no I/O. :func:`check_signal` says what is wrong with a payload (the
hub's cheap structural checks; peers must still validate what they apply).
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Annotated, ClassVar, Final

import msgspec

from protocol.messages import Id64, OneWay, Request, client_message
from protocol.streams import HEADER_BYTES, STREAM_KINDS, StreamKind, stream_kind

#: Characters of a call id (lower-case hex, chosen by the hub).
CALL_ID_CHARS: Final = 16
CALL_ID_PATTERN: Final = r"^[0-9a-f]{16}$"
#: Bytes before the opaque part of a ``call`` stream payload: the kind and the call id.
SIGNAL_HEADER_BYTES: Final = 1 + CALL_ID_CHARS
#: Largest SDP accepted (bytes, UTF-8), in ``call.invite`` / ``call.accept`` and in frames.
MAX_SDP_BYTES: Final = 32768
#: Largest ICE candidate payload (bytes).
MAX_CANDIDATE_BYTES: Final = 1024
#: Stream kind code of call signalling frames.
CALL_STREAM_CODE: Final = 2
CALL_STREAM: StreamKind = STREAM_KINDS.get(CALL_STREAM_CODE) or stream_kind(
    CALL_STREAM_CODE, "call", HEADER_BYTES + SIGNAL_HEADER_BYTES + MAX_SDP_BYTES
)

#: Ring lifetime bounds (milliseconds) a ``call.invite`` may ask for.
MIN_LIFETIME_MS: Final = 5_000
MAX_LIFETIME_MS: Final = 300_000

#: Reasons a party may give in ``call.hangup``.
HANGUP_REASONS: Final = ("user_hangup", "ice_failed", "media_failed", "error")
#: Every reason a call ends with (``ended`` events, the call record).
END_REASONS: Final = (
    *HANGUP_REASONS,
    "cancelled",  # the caller gave up before an answer
    "rejected",  # a callee device declined
    "busy",  # the callee was in another call
    "timeout",  # no answer within the lifetime, or a party gone past the grace period
    "forbidden",  # a party lost the right to take part (rights changed)
)
#: Kinds of the events on ``call:<id>`` (seq 0).
EVENT_KINDS: Final = (
    "ring",  # to every device of the callee: data = Ring
    "answered_elsewhere",  # to the callee's other devices
    "accepted",  # to both parties: {"call", "party", "answer"}
    "reconnecting",  # a party's socket dropped: {"call", "role"}
    "resumed",  # it came back: {"call", "role"}
    "ended",  # {"call", "reason", "by"?}
)
#: The two roles of a call's parties.
ROLES: Final = ("caller", "callee")

CallId = Annotated[str, msgspec.Meta(pattern=CALL_ID_PATTERN)]
#: A party (device) id chosen by the client, random per call and device.
PartyId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
Sdp = Annotated[str, msgspec.Meta(min_length=3, max_length=MAX_SDP_BYTES)]
Media = Annotated[str, msgspec.Meta(pattern="^(audio|video)$")]
HangupReason = Annotated[str, msgspec.Meta(pattern=f"^({'|'.join(HANGUP_REASONS)})$")]


class Signal(IntEnum):
    """The payload kind of a ``call`` stream frame (byte 0 of the payload)."""

    CANDIDATE = 1
    END_OF_CANDIDATES = 2
    OFFER = 3
    ANSWER = 4


# -- requests -------------------------------------------------------------------------------
@client_message
class CallIceServers(Request, tag="call.ice_servers", frozen=True):
    """STUN/TURN servers with my TURN credentials: ``{"ice_servers": [...], "ttl_s"}``."""

    max_bytes: ClassVar[int] = 256


@client_message
class CallInvite(Request, tag="call.invite", frozen=True):
    """Call a member of ``conv`` (``to``: needed when it has more than two members),
    or, with ``echo``, the test-call echo service (no ``conv``).

    Result: ``{"call", "state": "ringing", "callee", "lifetime_ms"}``;
    ``{"call", "state": "ended", "reason": "busy"}`` when the callee is in
    another call; ``{"call": <theirs>, "state": "glare", "caller"}`` when the
    callee is already calling me in this conversation (accept that call).
    """

    party: PartyId
    offer: Sdp
    conv: Id64 | None = None
    to: Id64 | None = None
    echo: bool = False
    media: Media = "video"
    lifetime_ms: Annotated[int, msgspec.Meta(ge=MIN_LIFETIME_MS, le=MAX_LIFETIME_MS)] | None = None
    max_bytes: ClassVar[int] = MAX_SDP_BYTES + 1024


@client_message
class CallAccept(Request, tag="call.accept", frozen=True):
    """Answer a ringing call from this device; the first device wins.

    Result ``{"call", "state": "connected"}``; ``conflict`` when answered
    elsewhere or already ended.
    """

    call: CallId
    party: PartyId
    answer: Sdp
    max_bytes: ClassVar[int] = MAX_SDP_BYTES + 512


@client_message
class CallReject(Request, tag="call.reject", frozen=True):
    """Decline a ringing call (the callee, before an answer): it ends on every device."""

    call: CallId
    max_bytes: ClassVar[int] = 256


@client_message
class CallCancel(Request, tag="call.cancel", frozen=True):
    """Give up calling (the caller, before an answer)."""

    call: CallId
    max_bytes: ClassVar[int] = 256


@client_message
class CallHangup(Request, tag="call.hangup", frozen=True):
    """End a call I am a party of, with a reason (before an answer: cancel / reject)."""

    call: CallId
    reason: HangupReason = "user_hangup"
    max_bytes: ClassVar[int] = 256


@client_message
class CallResume(Request, tag="call.resume", frozen=True):
    """Take my place in a call again from a new socket (same user and party id),
    within the grace period after my previous socket dropped.

    Result ``{"call", "state", "role", "conv", "peer"}``.
    """

    call: CallId
    party: PartyId
    max_bytes: ClassVar[int] = 256


@client_message
class CallPending(Request, tag="call.pending", frozen=True):
    """The call ringing for me now, if any (a device that connected after the ring):
    ``{"calls": [Ring, ...]}``."""

    max_bytes: ClassVar[int] = 128


@client_message
class CallQuality(OneWay, tag="call.quality", frozen=True):
    """A party's periodic media summary (one-way), kept with the call for support."""

    call: CallId
    rtt_ms: Annotated[float, msgspec.Meta(ge=0, le=600_000)] | None = None
    loss: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    bitrate_kbps: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    jitter_ms: Annotated[float, msgspec.Meta(ge=0, le=600_000)] | None = None
    frames_per_s: Annotated[float, msgspec.Meta(ge=0, le=1000)] | None = None
    max_bytes: ClassVar[int] = 512


# -- server data --------------------------------------------------------------------------
class Ring(msgspec.Struct, frozen=True, omit_defaults=True):
    """The ``data`` of a ``ring`` event (and of ``call.pending`` entries)."""

    call: str
    caller: str
    offer: str
    media: str
    lifetime_ms: int
    invited_ms: int
    conv: str | None = None
    echo: bool = False


class Quality(msgspec.Struct, frozen=True, omit_defaults=True, array_like=True):
    """One stored quality report: time (unix ms) and the figures given."""

    at_ms: int
    rtt_ms: float | None = None
    loss: float | None = None
    bitrate_kbps: float | None = None
    jitter_ms: float | None = None
    frames_per_s: float | None = None


# -- stream frames --------------------------------------------------------------------------
#: The stream header every ``call`` frame starts with.
CALL_FRAME_PREFIX: Final = bytes((0xC1, CALL_STREAM_CODE))
_SDP_LINES = re.compile(rb"(?:[a-z]=[^\r\n]*\r?\n)+")


def signal_frame(kind: Signal, call_id: str, payload: bytes) -> bytes:
    """The whole ``call`` stream frame carrying ``payload`` (for senders).

    Raises ValueError for a malformed call id or a payload too large for ``kind``.
    """
    cid = call_id.encode("ascii")
    if len(cid) != CALL_ID_CHARS:
        raise ValueError("a call id has 16 characters")
    if len(payload) > _limit(kind):
        raise ValueError(f"{kind.name} payload over {_limit(kind)} bytes")
    return CALL_FRAME_PREFIX + bytes((kind,)) + cid + payload


def parse_signal(frame: bytes) -> tuple[Signal, str, bytes]:
    """``(kind, call id, payload)`` of a whole ``call`` stream frame (for receivers).

    Raises ValueError when it is not a well-formed call frame.
    """
    if len(frame) < len(CALL_FRAME_PREFIX) + SIGNAL_HEADER_BYTES or not frame.startswith(
        CALL_FRAME_PREFIX
    ):
        raise ValueError("not a call frame")
    body = frame[len(CALL_FRAME_PREFIX) :]
    return Signal(body[0]), body[1:SIGNAL_HEADER_BYTES].decode("ascii"), body[SIGNAL_HEADER_BYTES:]


def _limit(kind: Signal) -> int:
    if kind is Signal.CANDIDATE:
        return MAX_CANDIDATE_BYTES
    if kind is Signal.END_OF_CANDIDATES:
        return 0
    return MAX_SDP_BYTES


def check_sdp(sdp: bytes) -> str | None:
    """Why ``sdp`` is not plausible SDP text (None when it is): UTF-8, ``v=0`` first,
    every line ``<letter>=...``, at least one ``m=`` line."""
    try:
        sdp.decode("utf-8")
    except UnicodeDecodeError:
        return "SDP is not UTF-8"
    if not sdp.startswith(b"v=0"):
        return "SDP must start with v=0"
    if not sdp.endswith(b"\n"):
        sdp += b"\r\n"
    if _SDP_LINES.fullmatch(sdp) is None:
        return "SDP lines must be <letter>=<value>"
    if b"\nm=" not in sdp:
        return "SDP has no media section"
    return None


def check_signal(kind: int, payload: bytes | memoryview) -> str | None:
    """Why the opaque part of a ``call`` frame of ``kind`` is refused (None: relay it).

    Cheap structural checks only: the kind is known, the size fits, an SDP
    passes :func:`check_sdp`, a candidate is a UTF-8 JSON object naming
    ``candidate``, END_OF_CANDIDATES is empty. (On the relay's hot path: plain
    integer tests, no enum lookups.)
    """
    limit = _LIMITS.get(kind)
    if limit is None:
        return f"unknown signal kind {kind}"
    size = len(payload)
    if size > limit:
        return f"{Signal(kind).name} payload over {limit} bytes"
    if kind == _END:
        return None
    data = bytes(payload)
    if kind == _CANDIDATE:
        if size < 2 or data[0] != 0x7B or data[-1] != 0x7D or b'"candidate"' not in data:
            return 'a candidate is a JSON object with "candidate"'
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return "candidate is not UTF-8"
        return None
    return check_sdp(data)


_CANDIDATE, _END = int(Signal.CANDIDATE), int(Signal.END_OF_CANDIDATES)
_LIMITS: dict[int, int] = {int(k): _limit(k) for k in Signal}


def check_sdp_text(sdp: str) -> str | None:
    """:func:`check_sdp` for an SDP received as a string (``call.invite``, ``call.accept``)."""
    return check_sdp(sdp.encode("utf-8"))


__all__ = [
    "CALL_FRAME_PREFIX",
    "CALL_ID_CHARS",
    "CALL_STREAM",
    "END_REASONS",
    "EVENT_KINDS",
    "HANGUP_REASONS",
    "MAX_CANDIDATE_BYTES",
    "MAX_SDP_BYTES",
    "ROLES",
    "SIGNAL_HEADER_BYTES",
    "CallAccept",
    "CallCancel",
    "CallHangup",
    "CallIceServers",
    "CallInvite",
    "CallPending",
    "CallQuality",
    "CallReject",
    "CallResume",
    "Quality",
    "Ring",
    "Signal",
    "check_sdp",
    "check_sdp_text",
    "check_signal",
    "parse_signal",
    "signal_frame",
]
