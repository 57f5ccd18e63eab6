"""A real recording streamed through the hub and exported: the same digital values and
annotations, read back by pyedflib and by MNE; BDF+ when 16 bits cannot hold the range;
annotations edited and deleted live, every version kept."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from typing import Any

import mne
import numpy as np
import pyedflib
import sqlalchemy as sa

from clients.eeg import Recorder
from clients.eeg_view import Viewer
from media.eeg.edf import onset_samples, read_edf
from media.eeg.synth import SyntheticEeg
from server.eeg.export import export_stream
from server.eeg.tables import eeg_annotation_log
from tests.eeg.helpers import EXAM, WAIT_S, auth, eeg_hub

REAL = Path(pyedflib.__file__).parent / "tests" / "data" / "test_subsecond.edf"


def read_mne(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MNE notes the padded last record, among others
        reader = mne.io.read_raw_bdf if path.suffix == ".bdf" else mne.io.read_raw_edf
        return reader(str(path), preload=True, verbose="error")


async def test_a_real_recording_streamed_and_exported_comes_back_the_same(tmp_path: Path) -> None:
    real = read_edf(REAL)  # one real channel (Fp1, 128 Hz, inverted physical range), 4 notes
    rate, n = real.meta.rate, real.samples.shape[0]
    async with eeg_hub(tmp_path) as hub:
        rec = Recorder(hub.url, auth("u-tech"), EXAM, real.meta, frame_samples=rate)
        sid = await rec.start()
        view = Viewer(hub.url, auth("u-int1"), sid, backfill_s=5)
        await view.start()
        seen: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        on_event = view.sock.on_event
        view.sock.on_event = lambda e: (on_event(e), seen.put_nowait(e))

        await rec.write(real.samples)
        ids = [
            await rec.annotate(onset_samples(a.onset_s, rate), a.text, client_id=f"n{i}")
            for i, a in enumerate(real.annotations)
        ]
        # idempotent: the same client id again is the same annotation
        assert await rec.annotate(0, "again", client_id="n0") == ids[0]
        # an interpreter edits and deletes, live
        interp = view.sock
        edited = await interp.request(
            "eeg.annotation_edit",
            stream=sid,
            annotation=ids[1],
            onset=448,
            text="Clip Note",
            duration=64,
        )
        assert edited["version"] == 2
        extra = await interp.request(
            "eeg.annotate",
            stream=sid,
            client_id="x",
            onset=10 * rate,
            text="14 Hz",
            kind="photic",
            frequency_hz=14.0,
        )
        await interp.request("eeg.annotation_delete", stream=sid, annotation=extra["id"])
        actions = []
        while len(actions) < 7:  # 4 creates, the edit, the create and the delete
            e = await asyncio.wait_for(seen.get(), WAIT_S)
            if e["kind"] == "annotation":
                actions.append((e["seq"], e["data"]["action"]))
        assert actions == [
            (i + 1, a) for i, a in enumerate(["create"] * 4 + ["update", "create", "delete"])
        ]
        await rec.close(timeout_s=WAIT_S)
        await view.stop()

        out = tmp_path / "export.edf"
        keys = hub.components.capabilities.get("eeg").keys  # type: ignore[attr-defined]
        done = await export_stream(hub.components.database, keys, sid, out)
        assert not done.bdf
        assert done.samples == n
        assert done.annotations == 4
        async with hub.components.database.begin(readonly=True) as conn:
            log = (
                await conn.execute(sa.select(sa.func.count()).select_from(eeg_annotation_log))
            ).scalar()
        assert log == 7  # every version kept

    f = pyedflib.EdfReader(str(out))
    try:
        assert f.getSignalLabels() == ["Fp1"]
        assert f.getSampleFrequencies()[0] == rate
        back = f.readSignal(0, digital=True)
        assert np.array_equal(back[:n], real.samples[:, 0])  # the digital values sent
        assert f.getSignalHeader(0)["physical_max"] == real.meta.channels[0].physical_max
        onsets, _durations, texts = f.readAnnotations()
    finally:
        f.close()
    expected = [(round(onset_samples(a.onset_s, rate) / rate, 4), a.text) for a in real.annotations]
    expected[1] = (448 / rate, "Clip Note")
    assert sorted(zip(np.round(onsets, 4), texts, strict=True)) == sorted(expected)
    for a, got in zip(real.annotations, sorted(onsets), strict=True):  # within half a sample
        assert abs(got - a.onset_s) <= 0.5 / rate + 1e-4 or abs(got - 448 / rate) < 1e-4

    raw = read_mne(out)
    assert raw.ch_names == ["Fp1"]
    assert raw.info["sfreq"] == rate
    assert raw.n_times >= n
    assert sorted(raw.annotations.description) == sorted(t for _, t in expected)
    np.testing.assert_allclose(
        sorted(raw.annotations.onset), sorted(o for o, _ in expected), atol=1e-4
    )
    # MNE's physical values (volts) are the digital values through the inverted range
    ch = real.meta.channels[0]
    scale = (ch.physical_max - ch.physical_min) / (ch.digital_max - ch.digital_min)
    micro = ch.physical_min + (real.samples[:1000, 0].astype(float) - ch.digital_min) * scale
    np.testing.assert_allclose(raw.get_data()[0, :1000] * 1e6, micro, rtol=1e-4, atol=0.5)


async def test_24_bit_streams_export_as_bdf(tmp_path: Path) -> None:
    synth = SyntheticEeg(8, 512, "int32", seed=3)
    data = synth.read(512 * 4)
    data[100, 3] = 2**23 - 1  # the whole 24-bit range is used
    async with eeg_hub(tmp_path) as hub:
        rec = Recorder(hub.url, auth("u-tech"), EXAM, synth.meta)
        sid = await rec.start()
        await rec.write(data)
        await rec.annotate(1024, "hyperventilation start", kind="hyperventilation")
        await rec.close(timeout_s=WAIT_S)
        out = tmp_path / "export.bdf"
        keys = hub.components.capabilities.get("eeg").keys  # type: ignore[attr-defined]
        done = await export_stream(hub.components.database, keys, sid, out)
    assert done.bdf
    f = pyedflib.EdfReader(str(out))
    try:
        back = np.stack([f.readSignal(i, digital=True) for i in range(8)], axis=1)
        assert np.array_equal(back[: len(data)], data)
        assert list(f.readAnnotations()[2]) == ["hyperventilation: hyperventilation start"]
    finally:
        f.close()
    raw = read_mne(out)
    assert raw.ch_names[:2] == ["Fp1", "Fp2"]
    assert raw.info["sfreq"] == 512
    assert list(raw.annotations.description) == ["hyperventilation: hyperventilation start"]
