"""EEG on the wire: the binary sample frames and the ``eeg.*`` messages (SPEC.md, 15.5).

Two binary stream kinds (:mod:`protocol.streams`), little-endian, sample-major
(all channels of sample 0, then all channels of sample 1, ...):

**``eeg`` (0x45), recorder -> hub**, header :data:`SAMPLES_HEADER_BYTES` (20) bytes::

    off size field
    0   1    0xC1            stream frame magic
    1   1    0x45            kind ``eeg``
    2   4    stream  u32     the stream's number (its id is ``t-<8 hex digits>``)
    6   2    seq     u16     the recorder's frame counter, +1 per frame, wraps to 0
    8   6    first   u48     absolute index of the frame's first sample (from 0)
    14  2    count   u16     samples per channel in the frame (>= 1)
    16  4    device  u32     recorder clock at the first sample, microseconds, mod 2**32
    20  ...  samples         count x channels values of the stream's format

The header is 20 bytes: 0.98 % of a 32-channel int16 frame of 1/8 s at 256 Hz
(2,048 bytes of samples), 0.49 % in int32 or float32.

**``eeg.view`` (0x46), hub -> viewer**, header :data:`VIEW_HEADER_BYTES` (24) bytes::

    0   1    0xC1
    1   1    0x46            kind ``eeg.view``
    2   4    stream  u32
    6   1    mode    u8      0 raw, 1 decimated, 2 envelope (min/max per column)
    7   1    format  u8      1 int16, 2 int32, 3 float32 (decimated frames: float32)
    8   2    factor  u16     source samples per output sample or column (raw: 1)
    10  2    flags   u16     bit 0: part of a backfill page (not live)
    12  6    first   u48     index of the first output sample or column (source index / factor)
    18  2    count   u16     output samples or columns
    20  4    device  u32     device clock of the newest source frame used, as above
    24  ...  data            raw/decimated: count x channels; envelope: count x channels x
                             (min, max)

Pure: no I/O, no numpy (samples stay bytes). Raises :class:`ValueError` for a
frame that cannot be built and :class:`FrameError` for one that cannot be read.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Annotated, ClassVar, Final

import msgspec

from protocol.messages import Id64, Request, client_message
from protocol.streams import HEADER_BYTES, STREAM_MAGIC, StreamKind, stream_kind

# -- stream kinds and sizes ----------------------------------------------------------
#: Largest ``eeg`` frame (bytes, stream header included): 256 channels x 2048 Hz x int32
#: for 1/4 s fits (524,288 bytes), and it stays under the broker's 1 MiB message bound.
MAX_SAMPLES_FRAME_BYTES: Final = 512 * 1024
SAMPLES_KIND: Final[StreamKind] = stream_kind(0x45, "eeg", MAX_SAMPLES_FRAME_BYTES)
#: Frames to viewers: a live raw frame is at most 4 bytes longer than the recorder's.
VIEW_KIND: Final[StreamKind] = stream_kind(0x46, "eeg.view", MAX_SAMPLES_FRAME_BYTES + 64)

_SAMPLES = struct.Struct("<IHIHHI")  # stream, seq, first (lo u32, hi u16), count, device
_VIEW = struct.Struct("<IBBHHIHHI")  # stream, mode, format, factor, flags, first, count, device
SAMPLES_HEADER_BYTES: Final = HEADER_BYTES + _SAMPLES.size  # 20
VIEW_HEADER_BYTES: Final = HEADER_BYTES + _VIEW.size  # 24

MAX_INDEX: Final = 2**48 - 1
MAX_COUNT: Final = 2**16 - 1

# -- sample formats and view modes ------------------------------------------------------
#: format name -> (code in view frames, bytes per value, numpy dtype string)
FORMATS: Final[dict[str, tuple[int, int, str]]] = {
    "int16": (1, 2, "<i2"),
    "int32": (2, 4, "<i4"),
    "float32": (3, 4, "<f4"),
}
FORMAT_BY_CODE: Final = {code: name for name, (code, _, _) in FORMATS.items()}
#: Digital range a format can carry (int32 streams are at most 24-bit: BDF+).
DIGITAL_LIMITS: Final[dict[str, tuple[int, int]]] = {
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**23), 2**23 - 1),
    "float32": (-(2**23), 2**23 - 1),
}
MODES: Final = {"raw": 0, "decimate": 1, "envelope": 2}
MODE_BY_CODE: Final = {code: name for name, code in MODES.items()}
FLAG_BACKFILL: Final = 1

STREAM_ID_PATTERN = r"^t-[0-9a-f]{8}$"
ANNOTATION_ID_PATTERN = r"^a-[0-9a-f]{16}$"
_STREAM_ID = re.compile(STREAM_ID_PATTERN)


def stream_id(number: int) -> str:
    """The id (``t-0000abcd``) of stream ``number`` (0 < number < 2**32)."""
    if not 0 < number < 2**32:
        raise ValueError("stream numbers are 1..2**32-1")
    return f"t-{number:08x}"


def stream_number(sid: str) -> int:
    """The number of stream id ``sid``; ValueError when it is not a stream id."""
    if not _STREAM_ID.fullmatch(sid):
        raise ValueError("not a stream id")
    return int(sid[2:], 16)


class FrameError(ValueError):
    """A binary EEG frame that cannot be read: cut short, or not of its kind."""


@dataclass(frozen=True, slots=True)
class SampleFrame:
    """A decoded ``eeg`` frame; ``samples`` is the payload after the header (bytes-like)."""

    stream: int
    seq: int
    first: int
    count: int
    device_us: int
    samples: memoryview


@dataclass(frozen=True, slots=True)
class ViewFrame:
    """A decoded ``eeg.view`` frame."""

    stream: int
    mode: str
    format: str
    factor: int
    flags: int
    first: int
    count: int
    device_us: int
    data: memoryview

    @property
    def backfill(self) -> bool:
        """Part of a backfill page (``eeg.backfill``), not a live frame."""
        return bool(self.flags & FLAG_BACKFILL)


def _check_header(stream: int, first: int, count: int, device_us: int) -> None:
    if not 0 < stream < 2**32:
        raise ValueError("stream number out of range")
    if not 0 <= first <= MAX_INDEX or not 0 < count <= MAX_COUNT:
        raise ValueError("first must be in 0..2**48-1 and count in 1..65535")
    if device_us < 0:
        raise ValueError("device time is an unsigned clock")


def encode_samples(
    stream: int, seq: int, first: int, count: int, device_us: int, samples: bytes | memoryview
) -> bytes:
    """The ``eeg`` stream frame (magic and kind included); ``device_us`` is taken mod 2**32."""
    _check_header(stream, first, count, device_us)
    head = _SAMPLES.pack(
        stream, seq & 0xFFFF, first & 0xFFFFFFFF, first >> 32, count, device_us & 0xFFFFFFFF
    )
    return b"".join((bytes((STREAM_MAGIC, SAMPLES_KIND.code)), head, samples))


def decode_samples(payload: bytes | bytearray | memoryview) -> SampleFrame:
    """Read the payload of an ``eeg`` frame (after the 2-byte stream header).

    Raises :class:`FrameError` when the header is cut short or ``count`` is 0.
    The caller checks the payload length against the stream's channels and format.
    """
    view = memoryview(payload)
    if len(view) < _SAMPLES.size:
        raise FrameError("eeg frame shorter than its header")
    stream, seq, lo, hi, count, device = _SAMPLES.unpack_from(view)
    if count == 0:
        raise FrameError("eeg frame with no sample")
    return SampleFrame(stream, seq, lo | hi << 32, count, device, view[_SAMPLES.size :])


def encode_view(
    stream: int,
    mode: str,
    fmt: str,
    factor: int,
    flags: int,
    first: int,
    count: int,
    device_us: int,
    data: bytes | memoryview,
) -> bytes:
    """The ``eeg.view`` stream frame (raises ValueError for a field out of range)."""
    _check_header(stream, first, count, device_us)
    if not 1 <= factor <= 0xFFFF:
        raise ValueError("factor must be in 1..65535")
    head = _VIEW.pack(
        stream,
        MODES[mode],
        FORMATS[fmt][0],
        factor,
        flags,
        first & 0xFFFFFFFF,
        first >> 32,
        count,
        device_us & 0xFFFFFFFF,
    )
    return b"".join((bytes((STREAM_MAGIC, VIEW_KIND.code)), head, data))


def view_header(
    stream: int,
    mode: str,
    fmt: str,
    factor: int,
    flags: int,
    first: int,
    count: int,
    device_us: int,
) -> bytes:
    """The 24 header bytes of an ``eeg.view`` frame (its data follows)."""
    return encode_view(stream, mode, fmt, factor, flags, first, count, device_us, b"")


def decode_view(frame: bytes | bytearray | memoryview) -> ViewFrame:
    """Read a whole ``eeg.view`` frame (magic and kind included); raises FrameError."""
    view = memoryview(frame)
    if len(view) < VIEW_HEADER_BYTES or view[0] != STREAM_MAGIC or view[1] != VIEW_KIND.code:
        raise FrameError("not an eeg.view frame")
    stream, mode, fmt, factor, flags, lo, hi, count, device = _VIEW.unpack_from(view, 2)
    if mode not in MODE_BY_CODE or fmt not in FORMAT_BY_CODE:
        raise FrameError("unknown view mode or format")
    return ViewFrame(
        stream,
        MODE_BY_CODE[mode],
        FORMAT_BY_CODE[fmt],
        factor,
        flags,
        lo | hi << 32,
        count,
        device,
        view[VIEW_HEADER_BYTES:],
    )


def unwrap_device_us(device_u32: int, expected_us: int) -> int:
    """The full recorder time of a frame's 32-bit ``device`` field, nearest ``expected_us``.

    ``expected_us`` is any full value within 35 minutes of it (e.g. the time at
    sample 0 plus ``first / rate``), as RTP timestamps are unwrapped.
    """
    delta = (device_u32 - expected_us) & 0xFFFFFFFF
    if delta >= 2**31:
        delta -= 2**32
    return expected_us + delta


# -- messages ------------------------------------------------------------------------------
StreamId = Annotated[str, msgspec.Meta(pattern=STREAM_ID_PATTERN)]
AnnotationId = Annotated[str, msgspec.Meta(pattern=ANNOTATION_ID_PATTERN)]
#: EDF labels are printable ASCII of at most 16 characters.
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=16, pattern=r"^[ -~]+$")]
SignalType = Annotated[str, msgspec.Meta(pattern=r"^(EEG|ECG|EOG|EMG|RESP|SAO2|MISC|TRIG)$")]
Ascii8 = Annotated[str, msgspec.Meta(max_length=8, pattern=r"^[ -~]*$")]
Ascii64 = Annotated[str, msgspec.Meta(max_length=64, pattern=r"^[ -~]*$")]
Ascii80 = Annotated[str, msgspec.Meta(max_length=80, pattern=r"^[ -~]*$")]
Format = Annotated[str, msgspec.Meta(pattern=r"^(int16|int32|float32)$")]
Mode = Annotated[str, msgspec.Meta(pattern=r"^(raw|decimate|envelope)$")]
Physical = Annotated[float, msgspec.Meta(ge=-1e12, le=1e12)]
Digital = Annotated[int, msgspec.Meta(ge=-(2**31), lt=2**31)]
Index = Annotated[int, msgspec.Meta(ge=0, le=MAX_INDEX)]
Micros = Annotated[int, msgspec.Meta(ge=0, le=2**62)]
ClientId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
AnnotationKind = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
AnnotationText = Annotated[str, msgspec.Meta(max_length=512)]
#: A stimulation frequency (photic stimulation), Hz.
StimulusHz = Annotated[float, msgspec.Meta(gt=0, le=1000)]
#: Channels of a stream, at most.
MAX_CHANNELS: Final = 512


class ChannelMeta(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One channel: its 10-20 label, signal type, unit, ranges and prefilter.

    A digital value ``d`` means the physical value
    ``physical_min + (d - digital_min) * (physical_max - physical_min) / (digital_max -
    digital_min)`` (EDF's rule; ``physical_max < physical_min`` inverts the trace).
    """

    label: Label
    type: SignalType = "EEG"
    unit: Ascii8 = "uV"
    physical_min: Physical
    physical_max: Physical
    digital_min: Digital
    digital_max: Digital
    prefilter: Ascii80 = ""


class StreamMeta(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """What a stream carries: rate (Hz), sample format, channels, reference, device id."""

    rate: Annotated[int, msgspec.Meta(ge=1, le=65536)]
    format: Format
    channels: Annotated[list[ChannelMeta], msgspec.Meta(min_length=1, max_length=MAX_CHANNELS)]
    reference: Ascii64 = ""
    device: Ascii64 = ""

    def shape(self) -> tuple[int, str, tuple[tuple[int, int], ...]]:
        """What may not change between versions: rate, format and digital ranges."""
        return (
            self.rate,
            self.format,
            tuple((c.digital_min, c.digital_max) for c in self.channels),
        )


def check_meta(meta: StreamMeta) -> str | None:
    """Why ``meta`` cannot be recorded, or None (ranges against the format, labels)."""
    lo, hi = DIGITAL_LIMITS[meta.format]
    for c in meta.channels:
        if not lo <= c.digital_min < c.digital_max <= hi:
            return f"channel {c.label}: digital range must be within {lo}..{hi}, min < max"
        if c.physical_min == c.physical_max:
            return f"channel {c.label}: physical_min equals physical_max"
    labels = [c.label.strip() for c in meta.channels]
    if len(set(labels)) != len(labels):
        return "channel labels must be unique"
    return None


def frame_bytes(meta: StreamMeta, count: int) -> int:
    """Bytes of the samples of a frame of ``count`` samples of a stream of ``meta``."""
    return count * len(meta.channels) * FORMATS[meta.format][1]


class ClockSample(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One finished clock round: recorder send time, the hub's answer, recorder receive time."""

    t0: Micros
    hub_us: Micros
    t1: Micros


@client_message
class EegOpen(Request, tag="eeg.open", frozen=True):
    """Start a stream for ``exam`` (the exam's technician), or resume ``stream``."""

    exam: Id64
    meta: StreamMeta
    stream: StreamId | None = None
    max_bytes: ClassVar[int] = 65536


@client_message
class EegClose(Request, tag="eeg.close", frozen=True):
    """End a stream (the recording is finished)."""

    stream: StreamId
    max_bytes: ClassVar[int] = 256


@client_message
class EegClock(Request, tag="eeg.clock", frozen=True):
    """A clock round: ``t0`` is the recorder clock (µs) now; ``last`` the previous round."""

    stream: StreamId
    t0: Micros
    last: ClockSample | None = None
    max_bytes: ClassVar[int] = 512


@client_message
class EegWatch(Request, tag="eeg.watch", frozen=True):
    """Follow a stream live, as ``view`` at about ``rate`` per second (decimate, envelope)."""

    stream: StreamId
    view: Mode = "raw"
    rate: Annotated[float, msgspec.Meta(gt=0, le=65536)] | None = None
    max_bytes: ClassVar[int] = 512


@client_message
class EegUnwatch(Request, tag="eeg.unwatch", frozen=True):
    """Stop following a stream on this socket (every view of it)."""

    stream: StreamId
    max_bytes: ClassVar[int] = 256


@client_message
class EegBackfill(Request, tag="eeg.backfill", frozen=True):
    """A page of stored or buffered data: output indices ``first`` to ``end`` (exclusive)."""

    stream: StreamId
    first: Index
    end: Index
    view: Mode = "raw"
    factor: Annotated[int, msgspec.Meta(ge=1, le=0xFFFF)] = 1
    max_bytes: ClassVar[int] = 512


@client_message
class EegAnnotate(Request, tag="eeg.annotate", frozen=True):
    """Add an annotation at sample ``onset`` lasting ``duration`` samples (idempotent)."""

    stream: StreamId
    client_id: ClientId
    onset: Index
    text: AnnotationText
    duration: Index = 0
    kind: AnnotationKind = "note"
    frequency_hz: StimulusHz | None = None
    max_bytes: ClassVar[int] = 2048


@client_message
class EegAnnotationEdit(Request, tag="eeg.annotation_edit", frozen=True):
    """Replace an annotation's fields (a new version; the old one is kept)."""

    stream: StreamId
    annotation: AnnotationId
    onset: Index
    text: AnnotationText
    duration: Index = 0
    kind: AnnotationKind = "note"
    frequency_hz: StimulusHz | None = None
    max_bytes: ClassVar[int] = 2048


@client_message
class EegAnnotationDelete(Request, tag="eeg.annotation_delete", frozen=True):
    """Delete an annotation (its versions are kept)."""

    stream: StreamId
    annotation: AnnotationId
    max_bytes: ClassVar[int] = 256


@client_message
class EegAnnotations(Request, tag="eeg.annotations", frozen=True):
    """The stream's live annotations and the channel position (``ann_seq``)."""

    stream: StreamId
    max_bytes: ClassVar[int] = 256


EEG_TYPES: tuple[type[Request], ...] = (
    EegOpen,
    EegClose,
    EegClock,
    EegWatch,
    EegUnwatch,
    EegBackfill,
    EegAnnotate,
    EegAnnotationEdit,
    EegAnnotationDelete,
    EegAnnotations,
)

#: Bytes of samples one ``eeg.backfill`` page carries at most (frames of one page).
BACKFILL_PAGE_BYTES: Final = 256 * 1024
#: Backfill requests a viewer should keep in flight at most (pages wait in its send queue).
BACKFILL_IN_FLIGHT: Final = 4


def control_channel(sid: str) -> str:
    """The RELIABLE channel of a stream: annotations (sequenced), state and acks (seq 0)."""
    return f"eeg:{sid}"


def view_channel(sid: str, mode: str, factor: int) -> str:
    """The LOSSY channel of one view of a stream (node-local)."""
    return f"eegv:{sid}.{mode}.{factor}"
