"""A ring buffer of one stream's samples, addressed by absolute sample index.

The sample index is the key, never time (LSL, Timeflux): the ring holds the
newest ``capacity`` samples, ``start <= index < end``, in one preallocated
``(capacity, channels)`` array of the stream's dtype. A hole that will never be
filled is an explicit *gap*: it advances ``end`` like data, and
:meth:`Ring.segments` leaves it out, so readers never mistake it for samples.

Not thread-safe; every method is O(samples copied) and allocates only the
arrays it returns.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


class Ring:
    """The newest ``capacity`` samples (rows) of ``channels`` values of ``dtype``.

    Raises ValueError for a capacity or channel count below 1.
    """

    __slots__ = ("_buf", "capacity", "channels", "end", "gaps", "start")

    def __init__(self, channels: int, dtype: npt.DTypeLike, capacity: int, at: int = 0) -> None:
        if capacity < 1 or channels < 1:
            raise ValueError("a ring needs at least one sample and one channel")
        self.capacity = capacity
        self.channels = channels
        self._buf = np.zeros((capacity, channels), dtype=dtype)
        self.start = at
        self.end = at
        #: Gaps ``[a, b)`` inside ``[start, end)``, ascending, never adjacent.
        self.gaps: list[tuple[int, int]] = []

    @property
    def dtype(self) -> np.dtype[np.generic]:
        """The dtype of the samples held."""
        return self._buf.dtype

    def reset(self, at: int) -> None:
        """Forget everything: the ring is empty at index ``at``."""
        self.start = self.end = at
        self.gaps.clear()

    def append(self, first: int, block: npt.NDArray[np.generic]) -> None:
        """Add ``block`` (samples x channels) at index ``first``, which must be ``end``.

        A hole before ``first`` must be declared with :meth:`gap` first; raises
        ValueError otherwise, or for a block of the wrong shape.
        """
        if first != self.end:
            raise ValueError(f"ring append at {first}, expected {self.end}")
        n = block.shape[0]
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise ValueError("block shape does not match the ring's channels")
        cap = self.capacity
        if n >= cap:
            block, first, n = block[n - cap :], first + n - cap, cap
        pos = first % cap
        head = min(n, cap - pos)
        self._buf[pos : pos + head] = block[:head]
        if head < n:
            self._buf[: n - head] = block[head:]
        self.end = first + n if n else self.end
        self._trim()

    def gap(self, until: int) -> None:
        """Declare ``[end, until)`` a gap (no samples will ever come); ``end`` moves there."""
        if until <= self.end:
            return
        if self.gaps and self.gaps[-1][1] == self.end:
            self.gaps[-1] = (self.gaps[-1][0], until)
        else:
            self.gaps.append((self.end, until))
        self.end = until
        self._trim()

    def _trim(self) -> None:
        start = max(self.start, self.end - self.capacity)
        self.start = start
        while self.gaps and self.gaps[0][1] <= start:
            self.gaps.pop(0)
        if self.gaps and self.gaps[0][0] < start:
            self.gaps[0] = (start, self.gaps[0][1])

    def read(self, a: int, b: int) -> npt.NDArray[np.generic]:
        """A copy of samples ``[a, b)`` (clipped to the ring; gap rows hold stale values)."""
        a, b = max(a, self.start), min(b, self.end)
        if b <= a:
            return self._buf[:0].copy()
        cap = self.capacity
        pa, n = a % cap, b - a
        if pa + n <= cap:
            return self._buf[pa : pa + n].copy()
        return np.concatenate((self._buf[pa:], self._buf[: n - (cap - pa)]))

    def segments(self, a: int, b: int) -> list[tuple[int, int]]:
        """The runs of real samples within ``[a, b)`` (gaps and what is not held left out)."""
        a, b = max(a, self.start), min(b, self.end)
        out: list[tuple[int, int]] = []
        cur = a
        for ga, gb in self.gaps:
            if gb <= cur:
                continue
            if ga >= b:
                break
            if ga > cur:
                out.append((cur, min(ga, b)))
            cur = max(cur, gb)
        if cur < b:
            out.append((cur, b))
        return out

    def gaps_in(self, a: int, b: int) -> list[tuple[int, int]]:
        """The gaps overlapping ``[a, b)``, clipped to it."""
        return [(max(ga, a), min(gb, b)) for ga, gb in self.gaps if gb > a and ga < b]

    def ends_with_gap(self) -> bool:
        """True when the newest index is part of a gap (the last data run is closed)."""
        return bool(self.gaps) and self.gaps[-1][1] == self.end
