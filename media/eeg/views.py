"""What a viewer is sent of a stream: raw samples, decimated samples, or min/max envelopes.

A view turns source samples (a :class:`Source`, e.g. :class:`media.eeg.ring.Ring`)
into *outputs* numbered on their own grid: output ``j`` of a view of factor ``q``
stands for source index ``j * q``. Views keep no state of their own: output
``j`` is a pure function of the source samples around it, so the live frames of
a view and a backfill page computed later from the ring (or the store) agree
value for value, and a late viewer's backfill joins the live stream without a
seam.

- :class:`RawView`: the samples as recorded (factor 1), in the stream's format.
- :class:`DecimateView`: a linear-phase FIR low-pass designed with
  :func:`scipy.signal.kaiserord` / :func:`scipy.signal.firwin` (60 dB stop
  band from the output Nyquist frequency, pass band to 80 % of it), applied at
  the output rate with :func:`scipy.signal.upfirdn` (polyphase), its delay
  compensated, so output ``j`` is the filtered signal *at* source index
  ``j * q``; float32.
- :class:`EnvelopeView`: the minimum and maximum of each channel over each
  display column of ``w`` source samples (column ``j`` covers
  ``[j * w, (j + 1) * w)``), in the stream's format: what a trace drawn at one
  column per ``w`` samples shows, without aliasing.

Gaps (:meth:`Source.segments`) are never filled: a decimated output whose
time falls in a gap is not produced; the filter is fed the nearest real value
(edge padding) beyond a gap or the start; an envelope column with no sample is
not produced.
"""

from __future__ import annotations

import functools
import math
from typing import Protocol

import numpy as np
import numpy.typing as npt
import scipy.signal

#: Runs of outputs: (index of the first output, array of outputs), ascending.
Runs = list[tuple[int, npt.NDArray[np.generic]]]

#: Stop-band attenuation of the anti-alias filter (dB) and its pass band (fraction of the
#: output Nyquist frequency).
STOPBAND_DB = 60.0
PASSBAND = 0.8


class Source(Protocol):
    """Samples by absolute index (a :class:`~media.eeg.ring.Ring` is one)."""

    start: int
    end: int
    channels: int

    def read(self, a: int, b: int) -> npt.NDArray[np.generic]:
        """Samples ``[a, b)`` clipped to what is held (rows x channels)."""
        ...

    def segments(self, a: int, b: int) -> list[tuple[int, int]]:
        """Runs of real samples within ``[a, b)``."""
        ...

    def ends_with_gap(self) -> bool:
        """True when the newest index belongs to a gap."""
        ...


class View(Protocol):
    """A view of a stream; see the module docstring."""

    mode: str
    factor: int

    def output_format(self, source_format: str) -> str:
        """The sample format of its outputs (``int16``, ``int32``, ``float32``)."""
        ...

    def ready(self, src: Source) -> int:
        """Outputs ``j < ready(src)`` can be computed now (no later sample changes them)."""
        ...

    def first(self, src: Source) -> int:
        """The first output ``src`` can still give."""
        ...

    def compute(self, src: Source, j0: int, j1: int) -> Runs:
        """Outputs ``j0 <= j < j1`` that exist (gaps leave runs apart)."""
        ...

    def width(self, channels: int, itemsize: int) -> int:
        """Bytes of one output."""
        ...


class RawView:
    """The samples as recorded."""

    mode = "raw"
    factor = 1

    def output_format(self, source_format: str) -> str:
        return source_format

    def ready(self, src: Source) -> int:
        return src.end

    def first(self, src: Source) -> int:
        return src.start

    def compute(self, src: Source, j0: int, j1: int) -> Runs:
        return [(a, src.read(a, b)) for a, b in src.segments(j0, j1)]

    def width(self, channels: int, itemsize: int) -> int:
        return channels * itemsize


@functools.lru_cache(maxsize=32)
def decimation_filter(q: int) -> tuple[npt.NDArray[np.float64], int]:
    """The anti-alias FIR for decimation by ``q`` and L, its taps being ``L * q + 1``.

    Designed with a Kaiser window (:func:`scipy.signal.kaiserord`) for
    :data:`STOPBAND_DB` of attenuation from the output Nyquist frequency, the
    transition starting at :data:`PASSBAND` of it; L is even so that the delay
    ``L * q / 2`` is a whole number of samples.
    """
    if q < 2:
        raise ValueError("decimation factor must be >= 2")
    nyq_out = 1.0 / q  # the output Nyquist, as a fraction of the input Nyquist
    numtaps, beta = scipy.signal.kaiserord(STOPBAND_DB, (1 - PASSBAND) * nyq_out)
    half = math.ceil((numtaps - 1) / q / 2)
    taps = 2 * half * q + 1
    h = scipy.signal.firwin(taps, (1 + PASSBAND) / 2 * nyq_out, window=("kaiser", beta))
    return h, 2 * half


class DecimateView:
    """Anti-alias filtered and decimated by ``factor`` (float32)."""

    mode = "decimate"

    def __init__(self, factor: int) -> None:
        self.factor = factor
        self.h, self.taps_per_output = decimation_filter(factor)
        self.delay = self.taps_per_output * factor // 2

    def output_format(self, source_format: str) -> str:
        return "float32"

    def ready(self, src: Source) -> int:
        q = self.factor
        if src.ends_with_gap():
            return -(-src.end // q)
        return max(0, (src.end - 1 - self.delay) // q + 1)

    def first(self, src: Source) -> int:
        return -(-src.start // self.factor)

    def compute(self, src: Source, j0: int, j1: int) -> Runs:
        q, d, n_taps = self.factor, self.delay, len(self.h)
        out: Runs = []
        for a, b in src.segments(j0 * q, j1 * q):
            ja, jb = -(-a // q), -(-b // q)  # outputs whose time lies in [a, b)
            if jb <= ja:
                continue
            seg_a, seg_b = _segment_around(src, a, b)
            lo = ja * q + d - (n_taps - 1)
            hi = (jb - 1) * q + d + 1
            data = src.read(max(lo, seg_a), min(hi, seg_b)).astype(np.float64)
            left, right = max(lo, seg_a) - lo, hi - min(hi, seg_b)
            x = np.pad(data, ((left, right), (0, 0)), mode="edge") if left or right else data
            y = scipy.signal.upfirdn(self.h, x, down=q, axis=0)
            m0 = self.taps_per_output
            out.append((ja, y[m0 : m0 + jb - ja].astype(np.float32)))
        return out

    def width(self, channels: int, itemsize: int) -> int:
        return channels * 4


def _segment_around(src: Source, a: int, b: int) -> tuple[int, int]:
    """The whole data run of ``src`` that holds ``[a, b)`` (it may extend beyond)."""
    for sa, sb in src.segments(src.start, src.end):
        if sa <= a < sb:
            return sa, sb
    return a, b


class EnvelopeView:
    """Minimum and maximum per channel over columns of ``factor`` samples."""

    mode = "envelope"

    def __init__(self, factor: int) -> None:
        if factor < 2:
            raise ValueError("an envelope column needs at least 2 samples")
        self.factor = factor

    def output_format(self, source_format: str) -> str:
        return source_format

    def ready(self, src: Source) -> int:
        w = self.factor
        return -(-src.end // w) if src.ends_with_gap() else src.end // w

    def first(self, src: Source) -> int:
        return src.start // self.factor

    def compute(self, src: Source, j0: int, j1: int) -> Runs:
        w = self.factor
        segs = src.segments(j0 * w, j1 * w)
        if not segs:
            return []
        ja, jb = segs[0][0] // w, -(-segs[-1][1] // w)
        a, ncols = ja * w, jb - ja
        dtype = src.read(segs[0][0], segs[0][0] + 1).dtype
        big: float = np.inf
        small: float = -np.inf
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)  # type: ignore[type-var]
            big, small = info.max, info.min
        lows = np.full((ncols * w, src.channels), big, dtype=dtype)
        highs = np.full((ncols * w, src.channels), small, dtype=dtype)
        has = np.zeros(ncols, dtype=bool)
        for sa, sb in segs:
            chunk = src.read(sa, sb)
            lows[sa - a : sb - a] = chunk
            highs[sa - a : sb - a] = chunk
            has[(sa - a) // w : -(-(sb - a) // w)] = True
        env = np.stack(
            (
                lows.reshape(ncols, w, -1).min(axis=1),
                highs.reshape(ncols, w, -1).max(axis=1),
            ),
            axis=2,
        )
        out: Runs = []
        j = 0
        while j < ncols:
            if not has[j]:
                j += 1
                continue
            k = j
            while k < ncols and has[k]:
                k += 1
            out.append((ja + j, env[j:k]))
            j = k
        return out

    def width(self, channels: int, itemsize: int) -> int:
        return channels * itemsize * 2


def make_view(mode: str, factor: int) -> View:
    """The view ``mode`` with ``factor`` (ValueError for a factor the mode cannot take)."""
    if mode == "raw":
        return RawView()
    if mode == "decimate":
        return DecimateView(factor)
    if mode == "envelope":
        return EnvelopeView(factor)
    raise ValueError(f"unknown view mode {mode}")


def factor_for(mode: str, rate: int, wanted: float | None) -> int:
    """The factor serving ``wanted`` outputs per second of a ``rate`` Hz stream.

    The largest power of two ``q`` (at most :data:`MAX_FACTOR`) with
    ``rate / q >= wanted``: at least the rate asked, and at most a dozen distinct
    views per stream. Raw: 1. Decimate and envelope need ``q >= 2``; when the
    wanted rate is too close to the stream's, raises ValueError (ask for raw).
    """
    if mode == "raw":
        return 1
    if wanted is None or wanted <= 0:
        raise ValueError("decimate and envelope views need a rate")
    q = 1
    while q * 2 <= MAX_FACTOR and rate / (q * 2) >= wanted:
        q *= 2
    if q < 2:
        raise ValueError("the wanted rate is too close to the stream's rate: watch raw")
    return q


#: Largest decimation factor or envelope column width.
MAX_FACTOR = 4096
