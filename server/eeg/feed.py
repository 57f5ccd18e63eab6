"""One stream on one node: its ring buffer and the views viewers follow there.

A :class:`Feed` exists on every node where a stream is recorded (its owner) or
watched. It holds the stream's newest samples (:class:`media.eeg.ring.Ring`,
``eeg_ring_seconds`` at most ``eeg_ring_max_bytes``) and, for each view in
use on the node (raw, decimated by q, envelope of w), the index of the next
output that view will deliver live. Each push of samples computes, for every
view, the outputs that became computable and delivers them as ``eeg.view``
frames on the view's node-local LOSSY channel (``eegv:<stream>.<mode>.<q>``):
the channel service queues them to each follower under the LOSSY policy
(a slow follower skips frames, then gets a ``gap`` event), so no viewer ever
slows the recorder or another viewer.

Because views are pure functions of the ring, a viewer attached now gets live
outputs from :attr:`ViewState.next` on, and can read every output before it
from the ring (or the store) with ``eeg.backfill``: contiguous, no seam.

How samples arrive: on the owner node the recording pushes what it accepts
(:meth:`Feed.push`) before publishing it; every other node with viewers
receives the stream's broker topic ``eegraw:<stream>`` (:func:`topic_of`),
whose messages :meth:`Feed.on_topic` applies (duplicates are dropped by
index, so the owner's own copy is harmless). Messages on that topic (internal
to the hub, node to node) are one tag byte and a body: ``F`` + an ``eeg``
stream frame (accepted samples), ``G`` + two u64 (a gap ``[a, b)``), ``E`` +
one u64 (the stream closed at that index).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from media.eeg.ring import Ring
from media.eeg.views import View, make_view
from protocol.eeg import (
    FORMATS,
    MAX_COUNT,
    MAX_SAMPLES_FRAME_BYTES,
    StreamMeta,
    decode_samples,
    encode_samples,
    encode_view,
    view_channel,
)
from protocol.streams import HEADER_BYTES
from server.channels import ChannelService

log = logging.getLogger(__name__)

_GAP = struct.Struct("<QQ")
_END = struct.Struct("<Q")


def topic_of(sid: str) -> str:
    """The broker topic carrying a stream's accepted samples between nodes."""
    return f"eegraw:{sid}"


def samples_message(frame: bytes) -> bytes:
    """The topic message of an accepted ``eeg`` frame."""
    return b"F" + frame


def gap_message(a: int, b: int) -> bytes:
    """The topic message of a gap ``[a, b)``."""
    return b"G" + _GAP.pack(a, b)


def end_message(end: int) -> bytes:
    """The topic message of a stream closed at ``end``."""
    return b"E" + _END.pack(end)


@dataclass
class ViewState:
    """One view of the feed on this node: its channel and its next live output."""

    view: View
    channel: str
    next: int
    format: str


class Feed:
    """A stream's samples and views on this node (see the module docstring)."""

    def __init__(
        self,
        sid: str,
        number: int,
        meta: StreamMeta,
        capacity: int,
        channels: ChannelService,
        *,
        on_frames: Callable[[int], None] | None = None,
    ) -> None:
        self.sid, self.number, self.meta = sid, number, meta
        self.exam_id = ""  #: the stream's exam (set by whoever creates the feed)
        self.format = meta.format
        self.dtype = np.dtype(FORMATS[meta.format][2])
        self.nch = len(meta.channels)
        self.ring = Ring(self.nch, self.dtype, capacity)
        self.channels = channels
        self.views: dict[tuple[str, int], ViewState] = {}
        self.device_us = 0  #: device time of the newest frame
        self.ready = asyncio.Event()  #: set once the ring holds what the node could get
        self.closed = False  #: the stream ended (no live sample will come)
        self.recorded_here = False  #: a recording of this node pushes into it
        self.holes = 0  #: holes seen on the topic (lost messages), each made a gap
        self._early: list[bytes] = []  #: topic messages that came before ``ready``
        self._on_frames = on_frames

    # -- samples in ------------------------------------------------------------------
    def push(self, first: int, block: npt.NDArray[np.generic], device_us: int) -> None:
        """Add samples at ``first``; earlier ones are dropped, a hole before it is a gap."""
        ring = self.ring
        n = block.shape[0]
        if first + n <= ring.end:
            return
        if first < ring.end:
            block, first = block[ring.end - first :], ring.end
        elif first > ring.end:
            ring.gap(first)
        ring.append(first, block)
        self.device_us = device_us
        self._emit()

    def push_gap(self, a: int, b: int) -> None:
        """A gap ``[a, b)`` (samples that will never come)."""
        if b > self.ring.end:
            self.ring.gap(b)
            self._emit()

    def on_topic(self, payload: bytes) -> None:
        """Apply a message of the stream's topic (buffered until :attr:`ready`)."""
        if not self.ready.is_set():
            self._early.append(payload)
            return
        self._apply(payload)

    def _apply(self, payload: bytes) -> None:
        tag, body = payload[:1], memoryview(payload)[1:]
        if tag == b"F":
            sf = decode_samples(body[HEADER_BYTES:])
            if sf.first > self.ring.end and not self.recorded_here:
                self.holes += 1  # a lost broker message: the samples are in the store
                log.warning("eeg topic hole", extra={"stream": self.sid, "at": self.ring.end})
            block = np.frombuffer(sf.samples, dtype=self.dtype).reshape(sf.count, self.nch)
            self.push(sf.first, block, sf.device_us)
        elif tag == b"G":
            a, b = _GAP.unpack(body)
            self.push_gap(a, b)
        elif tag == b"E":
            (end,) = _END.unpack(body)
            self.push_gap(self.ring.end, end)
            self.closed = True

    def filled(self, start: int) -> None:
        """The initial fill is done (the ring was reset at ``start`` and filled): apply what
        the topic brought meanwhile, and serve viewers."""
        early, self._early = self._early, []
        for payload in early:
            self._apply(payload)
        self.ready.set()

    # -- views ------------------------------------------------------------------------
    def view(self, mode: str, factor: int) -> ViewState:
        """The view ``(mode, factor)`` on this node (created on first use)."""
        key = (mode, factor)
        vs = self.views.get(key)
        if vs is None:
            view = make_view(mode, factor)
            vs = ViewState(
                view,
                view_channel(self.sid, mode, factor),
                view.ready(self.ring),
                view.output_format(self.format),
            )
            self.views[key] = vs
        return vs

    def drop_unused_views(self) -> None:
        """Forget the views nobody follows on this node any more."""
        for key, vs in list(self.views.items()):
            if self.channels.channel(vs.channel) is None:
                del self.views[key]

    def _emit(self) -> None:
        ring = self.ring
        for vs in self.views.values():
            ready = vs.view.ready(ring)
            if ready <= vs.next:
                continue
            start, vs.next = vs.next, ready
            ch = self.channels.channel(vs.channel)
            if ch is None:
                continue  # nobody follows it here (yet): its position still moves on
            runs = vs.view.compute(ring, start, ready)
            sent = 0
            for frame in self.frames(vs.view, vs.format, runs, 0):
                self.channels.deliver(ch, frame)
                sent += 1
            if self._on_frames is not None:
                self._on_frames(sent)

    def frames(
        self, view: View, fmt: str, runs: list[tuple[int, npt.NDArray[np.generic]]], flags: int
    ) -> list[bytes]:
        """``eeg.view`` frames of ``runs`` (see :func:`view_frames`)."""
        return view_frames(self.number, self.nch, self.device_us, view, fmt, runs, flags)


def view_frames(
    number: int,
    nch: int,
    device_us: int,
    view: View,
    fmt: str,
    runs: list[tuple[int, npt.NDArray[np.generic]]],
    flags: int,
) -> list[bytes]:
    """``eeg.view`` frames of ``runs``, each at most a frame's bytes and 65,535 outputs."""
    width = view.width(nch, FORMATS[fmt][1])
    per = max(1, min(MAX_COUNT, MAX_SAMPLES_FRAME_BYTES // width))
    out = []
    for j, arr in runs:
        for k in range(0, arr.shape[0], per):
            part = arr[k : k + per]
            out.append(
                encode_view(
                    number,
                    view.mode,
                    fmt,
                    view.factor,
                    flags,
                    j + k,
                    part.shape[0],
                    device_us,
                    np.ascontiguousarray(part).tobytes(),
                )
            )
    return out


def frame_of(
    number: int, seq: int, first: int, block: npt.NDArray[np.generic], device: int
) -> bytes:
    """An ``eeg`` frame of ``block`` (for the topic, after trimming duplicates)."""
    return encode_samples(number, seq, first, block.shape[0], device, block.tobytes())
