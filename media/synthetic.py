"""Synthetic media for call peers: a stamped test-pattern video track and a tone.

The video frames carry a **stamp**: the frame's number, as 16 blocks of
16x16 pixels along the top (white: 1, black: 0), which survives lossy
encoding. A peer that sends stamped frames and receives them back (through
the echo service) reads the stamp of each echoed frame (:func:`read_stamp`)
and knows how long that frame took to come back.

Built on PyAV frames (no numpy); aiortc paces the tracks (30 frames/s,
20 ms audio packets).
"""

from __future__ import annotations

import array
import fractions
import math
import time

import av
from aiortc import AudioStreamTrack, VideoStreamTrack

#: Bits of the frame number in a stamp.
STAMP_BITS = 16
#: Side of one stamp block (pixels).
BLOCK = 16
_WHITE, _BLACK, _GREY = 235, 16, 128


class StampedVideoTrack(VideoStreamTrack):
    """A moving-bar test pattern, each frame stamped with its number (see the module doc).

    ``sent`` maps recent frame numbers to their send time (``time.monotonic()``),
    for round-trip measurements.
    """

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        if width < STAMP_BITS * BLOCK or height < 2 * BLOCK or width % 2 or height % 2:
            raise ValueError(
                f"frames must be even-sized, at least {STAMP_BITS * BLOCK}x{2 * BLOCK}"
            )
        self.width, self.height = width, height
        self.count = 0
        self.sent: dict[int, float] = {}
        chroma = bytes([128]) * ((width // 2) * (height // 2))
        self._chroma = chroma

    async def recv(self) -> av.VideoFrame:
        """The next frame (paced at 30 frames/s by aiortc)."""
        pts, time_base = await self.next_timestamp()
        n = self.count
        self.count += 1
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        _fill(frame.planes[0], self._luma(n))
        _fill(frame.planes[1], self._chroma)
        _fill(frame.planes[2], self._chroma)
        frame.pts, frame.time_base = pts, time_base
        stamp = n % (1 << STAMP_BITS)
        self.sent[stamp] = time.monotonic()
        self.sent.pop((stamp - 600) % (1 << STAMP_BITS), None)  # keep about 20 s
        return frame

    def _luma(self, n: int) -> bytes:
        w, h = self.width, self.height
        bar = (n * 4) % w
        row = bytearray([_GREY]) * w
        row[bar : bar + 8] = bytes([_WHITE]) * len(row[bar : bar + 8])
        stamp_row = bytearray(row)
        value = n % (1 << STAMP_BITS)
        for bit in range(STAMP_BITS):
            on = (value >> (STAMP_BITS - 1 - bit)) & 1
            stamp_row[bit * BLOCK : (bit + 1) * BLOCK] = bytes([_WHITE if on else _BLACK]) * BLOCK
        return bytes(stamp_row) * BLOCK + bytes(row) * (h - BLOCK)


def _fill(plane: av.video.plane.VideoPlane, data: bytes) -> None:
    """Copy ``data`` (rows of the plane's width) into ``plane`` (rows of its line size)."""
    width = plane.width
    if plane.line_size == width:
        plane.update(data)
        return
    padded = bytearray(plane.line_size * plane.height)
    for y in range(plane.height):
        padded[y * plane.line_size : y * plane.line_size + width] = data[
            y * width : (y + 1) * width
        ]
    plane.update(bytes(padded))


def read_stamp(frame: av.VideoFrame) -> int | None:
    """The stamp of a received frame, or None when it carries none (not ours, or too small)."""
    if frame.width < STAMP_BITS * BLOCK or frame.height < BLOCK:
        return None
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    plane = frame.planes[0]
    luma = bytes(plane)
    line = plane.line_size
    y = BLOCK // 2
    value = 0
    for bit in range(STAMP_BITS):
        sample = luma[y * line + bit * BLOCK + BLOCK // 2]
        if _BLACK + 40 < sample < _WHITE - 40:
            return None  # not a stamp block
        value = (value << 1) | (1 if sample >= _GREY else 0)
    return value


class ToneAudioTrack(AudioStreamTrack):
    """A 440 Hz sine tone, 48 kHz mono, in 20 ms frames."""

    RATE = 48000
    SAMPLES = 960

    def __init__(self, frequency_hz: float = 440.0) -> None:
        super().__init__()
        period = array.array(
            "h",
            (
                int(8000 * math.sin(2 * math.pi * frequency_hz * i / self.RATE))
                for i in range(self.RATE)
            ),
        )
        self._second = period.tobytes()
        self._offset = 0
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        """The next 20 ms of tone (paced in real time)."""
        if self._start is None:
            self._start = time.monotonic()
        target = self._start + self._pts / self.RATE
        wait = target - time.monotonic()
        if wait > 0:
            import asyncio

            await asyncio.sleep(wait)
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.SAMPLES)
        size = self.SAMPLES * 2
        chunk = self._second[self._offset : self._offset + size]
        if len(chunk) < size:
            chunk += self._second[: size - len(chunk)]
        self._offset = (self._offset + size) % len(self._second)
        frame.planes[0].update(chunk)
        frame.sample_rate = self.RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self.RATE)
        self._pts += self.SAMPLES
        return frame
