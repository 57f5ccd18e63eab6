"""A late viewer gets the last 10 minutes from the ring, contiguous with the live frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clients.eeg import Recorder
from clients.eeg_view import Viewer
from media.eeg.ring import Ring
from media.eeg.synth import synthetic_meta
from media.eeg.views import DecimateView, EnvelopeView
from tests.eeg.helpers import EXAM, WAIT_S, auth, digest, eeg_hub, source

RATE = 256


async def test_late_viewer_gets_ten_minutes_of_backfill_contiguous_with_live(
    tmp_path: Path,
) -> None:
    data = source(600 + 20)
    ten_min = 600 * RATE
    async with eeg_hub(tmp_path) as hub:
        rec = Recorder(hub.url, auth("u-tech"), EXAM, synthetic_meta(21, RATE), frame_samples=RATE)
        sid = await rec.start()
        await rec.write(data[:ten_min])  # ten minutes recorded before anyone watches
        await rec.wait_acked(timeout_s=WAIT_S)
        late = Viewer(hub.url, auth("u-int1"), sid, backfill_s=600)
        await late.start()
        live_from = late.live_end
        assert late.floor == 0
        assert live_from == ten_min
        for k in range(ten_min, len(data), 32):  # then live, frame by frame
            await rec.write(data[k : k + 32])
        await late.wait_until(len(data), timeout_s=WAIT_S)
        # complete and contiguous: every sample once, equal to what the recorder sent
        assert late.cov.intervals() == [(0, len(data))]
        assert digest(late.data(0, len(data))) == digest(data)
        assert late.duplicates == 0
        assert late.backfill_frames > 0
        assert late.live_frames > 0
        # the live frames start exactly where the backfill ends: no seam
        assert late.cov.missing(0, live_from) == []
        await late.stop()
        await rec.stop()


async def test_decimated_and_envelope_views_join_backfill_and_live_without_a_seam(
    tmp_path: Path,
) -> None:
    data = source(60)
    async with eeg_hub(tmp_path) as hub:
        rec = Recorder(hub.url, auth("u-tech"), EXAM, synthetic_meta(21, RATE), frame_samples=32)
        sid = await rec.start()
        await rec.write(data[: 30 * RATE])
        dec = Viewer(hub.url, auth("u-int1"), sid, view="decimate", rate=60.0)
        # the JSON subprotocol gets the same binary frames (never samples as JSON numbers)
        env = Viewer(hub.url, auth("u-doc"), sid, view="envelope", rate=100.0, binary=False)
        await dec.start()
        await env.start()
        assert (dec.factor, env.factor) == (4, 2)
        await rec.write(data[30 * RATE :])
        await rec.wait_acked(timeout_s=WAIT_S)
        # what the views are, computed offline over the whole source
        ring = Ring(21, np.int16, len(data))
        ring.append(0, data)
        d_view, e_view = DecimateView(4), EnvelopeView(2)
        d_top = (len(data) - 1 - d_view.delay) // 4 + 1
        await dec.wait_until(d_top, timeout_s=WAIT_S)
        await env.wait_until(len(data) // 2, timeout_s=WAIT_S)
        ((j, expect_d),) = d_view.compute(ring, 0, d_top)
        assert j == 0
        assert dec.cov.intervals()[0] == (0, d_top)
        np.testing.assert_allclose(dec.data(0, d_top), expect_d, rtol=0, atol=1e-3)
        ((j, expect_e),) = e_view.compute(ring, 0, len(data) // 2)
        assert np.array_equal(env.data(0, len(data) // 2), expect_e)  # exact: min/max
        assert dec.duplicates == env.duplicates == 0
        assert dec.live_frames > 0
        assert dec.backfill_frames > 0
        await dec.stop()
        await env.stop()
        await rec.stop()
