"""A synthetic EEG source: background rhythms, alpha when the eyes close, noise, artefacts.

:class:`SyntheticEeg` produces any number of channels at any rate, block after
block, continuing where the previous block ended (phases, filter state and the
random generator carry over), as digital values of the stream's format. It is
deterministic for a seed, whatever the sizes of the blocks read: the tests and
the load tests replay it exactly.

What it draws, per channel (microvolts):

- 1/f background (white noise through a first-order low-pass), about 15 µV;
- theta (6 Hz) and beta (20 Hz) components of a few µV;
- posterior alpha (10 Hz, ~40 µV on O1/O2/P3/P4/Pz/T5/T6, weaker elsewhere),
  strong while the eyes are closed: they close and open every 8 to 15 s
  (:attr:`SyntheticEeg.eyes_closed`, with :attr:`SyntheticEeg.events` listing
  each change as ``(sample index, "eyes_closed" | "eyes_open")``);
- eye blinks (~150 µV, frontal, only with the eyes open), occasional
  spike-and-wave transients (~100 µV) and line noise (50 Hz, 2 µV).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from protocol.eeg import DIGITAL_LIMITS, FORMATS, ChannelMeta, StreamMeta

#: The 21 electrodes of the 10-20 system (with the ear references), in the usual order.
TEN_TWENTY = (
    "Fp1",
    "Fp2",
    "F7",
    "F3",
    "Fz",
    "F4",
    "F8",
    "T3",
    "C3",
    "Cz",
    "C4",
    "T4",
    "T5",
    "P3",
    "Pz",
    "P4",
    "T6",
    "O1",
    "O2",
    "A1",
    "A2",
)
POSTERIOR = frozenset({"O1", "O2", "P3", "P4", "Pz", "T5", "T6"})
FRONTAL = frozenset({"Fp1", "Fp2", "F7", "F8"})
#: Microvolts per digital step of the default metadata (int16: +-3276.7 µV).
UV_PER_STEP = 0.1


def labels(channels: int) -> list[str]:
    """``channels`` labels: the 10-20 names first, then ``E22``, ``E23``..."""
    names = list(TEN_TWENTY[:channels])
    names += [f"E{i + 1}" for i in range(len(names), channels)]
    return names


def synthetic_meta(
    channels: int = 21, rate: int = 256, fmt: str = "int16", device: str = "synthetic"
) -> StreamMeta:
    """Metadata of a synthetic stream: 0.1 µV per digital step, the format's full range."""
    lo, hi = DIGITAL_LIMITS[fmt]
    return StreamMeta(
        rate=rate,
        format=fmt,
        channels=[
            ChannelMeta(
                label=name,
                type="EEG",
                unit="uV",
                physical_min=round(lo * UV_PER_STEP, 3),
                physical_max=round(hi * UV_PER_STEP, 3),
                digital_min=lo,
                digital_max=hi,
                prefilter="HP:0.1Hz LP:70Hz",
            )
            for name in labels(channels)
        ],
        reference="A1+A2",
        device=device,
    )


class SyntheticEeg:
    """An endless realistic EEG recording; :meth:`read` gives the next block."""

    def __init__(
        self, channels: int = 21, rate: int = 256, fmt: str = "int16", seed: int = 0
    ) -> None:
        self.meta = synthetic_meta(channels, rate, fmt)
        self.channels, self.rate, self.format = channels, rate, fmt
        self.dtype = np.dtype(FORMATS[fmt][2])
        self.index = 0  #: absolute index of the next sample
        self.eyes_closed = False
        self.events: list[tuple[int, str]] = []
        # one generator per kind of draw, so the blocks' sizes never change the values
        seeds = np.random.SeedSequence(seed).spawn(5)
        self._rng = np.random.default_rng(seeds[0])
        self._eyes_rng, self._blink_rng, self._spike_rng = (
            np.random.default_rng(s) for s in seeds[1:4]
        )
        phase_rng = np.random.default_rng(seeds[4])
        names = labels(channels)
        self._alpha_gain = np.array([40.0 if n in POSTERIOR else 12.0 for n in names])
        self._blink_gain = np.array([150.0 if n in FRONTAL else 10.0 for n in names])
        self._phase = phase_rng.uniform(0, 2 * np.pi, (3, channels))
        self._pink = np.zeros(channels)
        #: when the eyes change, drawn ahead as far as needed (the first change closes them)
        self._toggles: list[int] = [int(rate * self._eyes_rng.uniform(8, 15))]
        self._next_blink = int(rate * self._blink_rng.uniform(1, 5))
        self._spike_at = int(rate * self._spike_rng.uniform(5, 20))
        lo, hi = DIGITAL_LIMITS[fmt]
        self._lo, self._hi = lo, hi

    def read(self, count: int) -> npt.NDArray[np.generic]:
        """The next ``count`` samples (``count x channels``) as digital values."""
        rate, n = self.rate, count
        t = (self.index + np.arange(n))[:, None] / rate
        x = np.empty((n, self.channels))
        # background: 1/f-ish noise through a one-pole low-pass, state carried over
        white = self._rng.normal(0.0, 1.0, (n, self.channels))
        a = np.exp(-2 * np.pi * 2.0 / rate)
        pink = np.empty_like(white)
        state = self._pink
        for i in range(n):  # a short loop per block; blocks are small
            state = a * state + (1 - a) * white[i] * 12.0
            pink[i] = state
        self._pink = state
        x[:] = pink * 4.0 + white * 3.0
        x += 4.0 * np.sin(2 * np.pi * 6.0 * t + self._phase[0])
        x += 3.0 * np.sin(2 * np.pi * 20.0 * t + self._phase[1])
        x += 2.0 * np.sin(2 * np.pi * 50.0 * t)
        alpha = np.sin(2 * np.pi * 10.0 * t + self._phase[2])
        closed = self._eyes(n)
        x += alpha * self._alpha_gain * np.where(closed, 1.0, 0.2)[:, None]
        x += self._artefacts(n)
        digital = np.clip(np.round(x / UV_PER_STEP), self._lo, self._hi)
        self.index += n
        return digital.astype(self.dtype)

    def _toggles_until(self, index: int) -> None:
        while self._toggles[-1] <= index:
            self._toggles.append(self._toggles[-1] + int(self.rate * self._eyes_rng.uniform(8, 15)))

    def _closed(self, index: int) -> bool:
        """Whether the eyes are closed at sample ``index`` (any index, past or future)."""
        self._toggles_until(index)
        return bool(np.searchsorted(self._toggles, index, side="right") % 2)

    def _eyes(self, n: int) -> npt.NDArray[np.bool_]:
        start = self.index
        self._toggles_until(start + n)
        idx = np.arange(start, start + n)
        closed = np.searchsorted(self._toggles, idx, side="right") % 2 == 1
        for t in self._toggles:
            if start <= t < start + n:
                self.events.append((t, "eyes_closed" if self._closed(t) else "eyes_open"))
        self.eyes_closed = bool(closed[-1]) if n else self.eyes_closed
        return closed

    def _artefacts(self, n: int) -> npt.NDArray[np.float64]:
        rate, start = self.rate, self.index
        out = np.zeros((n, self.channels))
        k = np.arange(n) + start
        width = int(0.15 * rate)
        while self._next_blink - width < start + n:  # blinks that touch this block
            at = self._next_blink
            shape = np.exp(-0.5 * ((k - at) / (width / 3)) ** 2) * (np.abs(k - at) < width)
            if not self._closed(at):
                out += shape[:, None] * self._blink_gain
            if at + width >= start + n:
                break  # it continues in the next block
            self._next_blink = at + int(rate * self._blink_rng.uniform(1, 5))
        while self._spike_at - 0.5 * rate < start + n:  # spikes that touch this block
            at = self._spike_at
            if (np.abs(k - at) < 0.5 * rate).any():
                spike = np.exp(-0.5 * ((k - at) / (0.01 * rate)) ** 2) * 100.0
                wave = -np.exp(-0.5 * ((k - at - 0.12 * rate) / (0.06 * rate)) ** 2) * 60.0
                out += (spike + wave)[:, None]
            if at + 0.5 * rate >= start + n:
                break  # it continues in the next block
            self._spike_at = at + int(rate * self._spike_rng.uniform(10, 30))
        return out
