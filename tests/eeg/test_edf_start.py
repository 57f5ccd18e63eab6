"""An export's start keeps its sub-second part and every onset reads back exactly,
whatever the start's microseconds (pyedflib alone gets both wrong for most starts)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from media.eeg.edf import EdfExport, read_edf
from media.eeg.synth import SyntheticEeg

RATE = 128
ONSETS = [1.953125, 3.4921875, 583.5703125 - 580]  # whole samples at 128 Hz


@pytest.mark.parametrize("us", [0, 900, 2208, 98418, 99999, 100000, 123456, 999999])
def test_start_subsecond_and_onsets_round_trip(tmp_path: Path, us: int) -> None:
    synth = SyntheticEeg(2, RATE, "int16", seed=1)
    start = datetime(2026, 12, 1, 10, 20, 30, us, tzinfo=UTC)
    out = EdfExport(tmp_path / "x.edf", synth.meta, start)
    out.write(synth.read(5 * RATE))
    for i, onset in enumerate(ONSETS):
        out.annotate(onset, 0.5, f"note {i}")
    out.close()

    back = read_edf(tmp_path / "x.edf")
    assert back.start == start.replace(tzinfo=None, microsecond=us // 100 * 100)
    assert [round(a.onset_s, 4) for a in back.annotations] == [round(o, 4) for o in ONSETS]
    assert [a.text for a in back.annotations] == ["note 0", "note 1", "note 2"]
    assert np.allclose([a.duration_s for a in back.annotations], 0.5)
