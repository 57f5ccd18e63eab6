"""The numpy pieces: ring buffer, views (anti-alias decimation, envelopes), synthetic EEG."""

from __future__ import annotations

import numpy as np
import pytest

from media.eeg.edf import edf_number
from media.eeg.ring import Ring
from media.eeg.synth import SyntheticEeg
from media.eeg.views import DecimateView, EnvelopeView, RawView, decimation_filter, factor_for


def test_ring_keeps_the_newest_samples_by_index_and_its_gaps() -> None:
    ring = Ring(2, np.int16, 10)
    block = np.arange(24, dtype=np.int16).reshape(12, 2)
    ring.append(0, block[:7])
    ring.gap(9)  # samples 7 and 8 never come
    ring.append(9, block[9:12])
    assert (ring.start, ring.end) == (2, 12)  # capacity 10: 0 and 1 evicted
    assert ring.segments(0, 12) == [(2, 7), (9, 12)]
    assert ring.gaps_in(0, 12) == [(7, 9)]
    assert np.array_equal(ring.read(9, 12), block[9:12])  # across the wrap
    assert np.array_equal(ring.read(2, 5), block[2:5])
    ring.append(12, np.zeros((10, 2), dtype=np.int16))  # the gap leaves with its samples
    assert ring.gaps == []
    assert ring.start == 12
    with pytest.raises(ValueError, match="expected 22"):
        ring.append(30, block[:1])  # a hole must be a declared gap


def _tones(rate: int, seconds: float, freqs: tuple[float, ...]) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([1000 * np.sin(2 * np.pi * f * t) for f in freqs], axis=1)


def test_decimation_filters_what_would_alias_and_keeps_the_pass_band() -> None:
    rate, q = 512, 4  # output 128 Hz, Nyquist 64 Hz
    x = _tones(rate, 20, (10.0, 40.0, 90.0, 200.0)).astype(np.float32)
    ring = Ring(4, np.float32, len(x))
    ring.append(0, x)
    view = DecimateView(q)
    ((j, y),) = view.compute(ring, 0, view.ready(ring))
    assert j == 0
    steady = y[200:-200]
    assert np.abs(steady[:, 0]).max() == pytest.approx(1000, rel=0.01)  # 10 Hz: passes
    assert np.abs(steady[:, 1]).max() == pytest.approx(1000, rel=0.01)  # 40 Hz: passes
    assert np.abs(steady[:, 2]).max() < 1.0  # 90 Hz would alias to 38 Hz: -60 dB
    assert np.abs(steady[:, 3]).max() < 1.0
    # delay compensated: output j is the signal at source index j * q
    t = np.arange(len(steady)) + 200
    expected = 1000 * np.sin(2 * np.pi * 10.0 * t * q / rate)
    assert np.abs(steady[:, 0] - expected).max() < 15
    h, taps_per_output = decimation_filter(q)
    assert len(h) == taps_per_output * q + 1
    assert taps_per_output % 2 == 0


def test_views_computed_frame_by_frame_equal_the_whole_at_once() -> None:
    x = SyntheticEeg(5, 256, seed=2).read(256 * 10)
    ring = Ring(5, np.int16, len(x))
    for view in (RawView(), DecimateView(8), EnvelopeView(16)):
        ring.reset(0)
        parts, nxt = [], 0
        for k in range(0, len(x), 32):
            ring.append(k, x[k : k + 32])
            ready = view.ready(ring)
            if ready > nxt:
                parts += [a for _, a in view.compute(ring, nxt, ready)]
                nxt = ready
        ((_, whole),) = view.compute(ring, 0, nxt)
        assert np.array_equal(np.concatenate(parts), whole), view.mode


def test_envelopes_are_the_exact_min_and_max_per_column() -> None:
    x = SyntheticEeg(3, 256, seed=4).read(256)
    ring = Ring(3, np.int16, 512)
    ring.append(0, x[:100])
    ring.gap(132)  # a gap inside columns 6..8
    ring.append(132, x[132:])
    ((j0, a), (j1, _b)) = EnvelopeView(16).compute(ring, 0, 16)
    assert (j0, len(a), j1) == (0, 7, 8)  # column 7 (112..128) lies in the gap: skipped
    assert np.array_equal(a[2, :, 0], x[32:48].min(axis=0))
    assert np.array_equal(a[2, :, 1], x[32:48].max(axis=0))
    assert np.array_equal(a[6, :, 1], x[96:100].max(axis=0))  # only the real samples


def test_view_factors_are_powers_of_two_at_least_the_rate_asked() -> None:
    assert factor_for("decimate", 256, 100) == 2
    assert factor_for("decimate", 2048, 100) == 16
    assert factor_for("envelope", 2048, 1000) == 2
    assert factor_for("raw", 2048, None) == 1
    with pytest.raises(ValueError, match="too close"):
        factor_for("decimate", 256, 200)  # too close to the stream's rate: watch raw


def test_synthetic_eeg_is_deterministic_and_physiological() -> None:
    a = SyntheticEeg(21, 256, seed=7)
    x = np.concatenate([a.read(32) for _ in range(8 * 40)])
    b = SyntheticEeg(21, 256, seed=7)
    assert np.array_equal(x, np.concatenate([b.read(1000) for _ in range(10)] + [b.read(240)]))
    assert a.events
    assert a.events == b.events
    # alpha (10 Hz) is stronger over O1 than over Fp1 while the eyes are closed
    closed_at, _ = next(e for e in a.events if e[1] == "eyes_closed")
    seg = x[closed_at : closed_at + 4 * 256].astype(float)
    spectrum = np.abs(np.fft.rfft(seg - seg.mean(axis=0), axis=0))
    freqs = np.fft.rfftfreq(len(seg), 1 / 256)
    alpha = spectrum[(freqs > 9) & (freqs < 11)].mean(axis=0)
    assert alpha[17] > 2 * alpha[0]  # O1 vs Fp1


def test_header_numbers_fit_eight_characters() -> None:
    assert edf_number(3276.7000000000003) == 3276.7
    assert edf_number(-838860.8) == -838861
    assert edf_number(0.000123456) == 0.000123
