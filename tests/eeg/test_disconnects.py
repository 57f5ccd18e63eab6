"""Random disconnects on the recorder's and the viewer's side: the viewer ends with exactly
the samples the recorder sent (a hash of the integer payload), none twice."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from clients.eeg import Recorder
from clients.eeg_view import Viewer
from media.eeg.synth import synthetic_meta
from tests.eeg.helpers import EXAM, WAIT_S, auth, digest, eeg_hub, source

RATE = 256
FRAME = 32  # 1/8 s


def metric(hub: object, name: str, labels: str = "") -> float:
    text = hub.components.metrics.render().decode()  # type: ignore[attr-defined]
    for line in text.splitlines():
        if line.startswith(name + labels + " "):
            return float(line.split()[-1])
    return 0.0


async def test_random_disconnects_on_both_sides_lose_and_duplicate_nothing(
    tmp_path: Path,
) -> None:
    rng = random.Random(6)
    data = source(45)
    async with eeg_hub(tmp_path, eeg_persist_interval_s=0.1) as hub:
        rec = Recorder(hub.url, auth("u-tech"), EXAM, synthetic_meta(21, RATE), frame_samples=FRAME)
        sid = await rec.start()
        view = Viewer(hub.url, auth("u-int1"), sid, backfill_s=600)
        await rec.write(data[: 2 * RATE])
        await view.start()
        kills = {"recorder": 0, "viewer": 0}
        for k in range(2 * RATE, len(data), FRAME):
            await rec.write(data[k : k + FRAME])
            roll = rng.random()
            if roll < 0.04:
                rec.kill_socket()
                kills["recorder"] += 1
            elif roll < 0.08:
                view.kill_socket()
                kills["viewer"] += 1
            await asyncio.sleep(0.002)
        await rec.wait_acked(timeout_s=WAIT_S)
        await view.wait_until(len(data), timeout_s=WAIT_S)

        assert kills["recorder"] > 3
        assert kills["viewer"] > 3
        assert rec.reconnects >= 3
        assert view.reconnects >= 3
        assert view.cov.intervals() == [(0, len(data))]
        assert digest(view.data(0, len(data))) == digest(data)
        assert view.duplicates == 0
        # the hub saw resent frames and dropped them (else the digest would differ)
        assert metric(hub, "medhub_eeg_samples_total", '{result="duplicate"}') > 0
        assert metric(hub, "medhub_eeg_samples_total", '{result="gap"}') == 0
        assert await rec.close(timeout_s=WAIT_S) == len(data)
        await view.stop()


async def test_a_long_disconnect_is_resent_merged_and_within_the_stream_budget(
    tmp_path: Path,
) -> None:
    data = source(40)
    budget = {"ws_stream_rate_per_s": 20.0, "ws_stream_rate_burst": 10}
    async with eeg_hub(tmp_path, **budget) as hub:
        rec = Recorder(hub.url, auth("u-tech"), EXAM, synthetic_meta(21, RATE), frame_samples=FRAME)
        sid = await rec.start()
        await rec.write(data[:RATE])
        url, rec.url = rec.url, "ws://127.0.0.1:9/ws"  # the network is gone for a while
        rec.kill_socket()
        await rec.write(data[RATE:])  # 39 s buffered: 312 frames, beyond the budget's burst
        rec.url = url
        await rec.wait_acked(timeout_s=WAIT_S)
        assert rec.errors == []  # nothing refused (rate_limited) on the way back
        view = Viewer(hub.url, auth("u-int1"), sid)
        await view.start()
        await view.wait_until(len(data), timeout_s=WAIT_S)
        assert view.cov.intervals() == [(0, len(data))]
        assert digest(view.data(0, len(data))) == digest(data)
        await view.stop()
        await rec.stop()
