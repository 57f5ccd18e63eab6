"""A Lab Streaming Layer inlet as a recorder source (optional: ``pip install medhub[lsl]``).

:class:`LslSource` resolves an LSL outlet by stream type or name, reads its
description (channel count and labels, nominal rate, channel format) into
:class:`~protocol.eeg.StreamMeta`, and gives its samples block by block, in
the same shape as :class:`media.eeg.synth.SyntheticEeg` (``read(count)``
returns ``count x channels`` digital values), so ``medhub-eeg record --lsl``
streams it like any other source. LSL float samples are taken as microvolts
and quantised at 0.1 µV per step into int32 (24-bit range).

pylsl is imported when a source is opened; without it :func:`open_lsl` raises
``RuntimeError`` naming the extra to install.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.eeg import DIGITAL_LIMITS, ChannelMeta, StreamMeta

UV_PER_STEP = 0.1


class LslSource:
    """Samples from one resolved LSL inlet (use :func:`open_lsl`)."""

    def __init__(self, inlet: Any, meta: StreamMeta, integer: bool) -> None:
        self.inlet = inlet
        self.meta = meta
        self.rate = meta.rate
        self.channels = len(meta.channels)
        self._integer = integer
        self._buffer = np.zeros((0, self.channels), dtype=np.int32)
        self.index = 0

    def read(self, count: int, timeout_s: float = 5.0) -> npt.NDArray[np.int32]:
        """The next ``count`` samples (waits for the outlet; raises TimeoutError)."""
        while self._buffer.shape[0] < count:
            chunk, _stamps = self.inlet.pull_chunk(timeout=timeout_s, max_samples=count * 4)
            if not chunk:
                raise TimeoutError("no sample from the LSL outlet")
            values = np.asarray(chunk, dtype=np.float64)
            if not self._integer:
                lo, hi = DIGITAL_LIMITS["int32"]
                values = np.clip(np.rint(values / UV_PER_STEP), lo, hi)
            self._buffer = np.concatenate((self._buffer, values.astype(np.int32)))
        out, self._buffer = self._buffer[:count], self._buffer[count:]
        self.index += count
        return out


def open_lsl(
    stream_type: str = "EEG", name: str | None = None, timeout_s: float = 10.0
) -> LslSource:
    """Resolve an outlet (by ``name`` if given, else by type) and open an inlet on it.

    Raises RuntimeError without pylsl, TimeoutError when no outlet answers.
    """
    try:
        import pylsl  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise RuntimeError("LSL needs pylsl: pip install 'medhub[lsl]'") from exc
    prop, value = ("name", name) if name else ("type", stream_type)
    found = pylsl.resolve_byprop(prop, value, timeout=timeout_s)
    if not found:
        raise TimeoutError(f"no LSL stream with {prop} {value!r}")
    info = found[0]
    inlet = pylsl.StreamInlet(info)
    full = inlet.info(timeout=timeout_s)
    n = full.channel_count()
    labels: list[str] = []
    ch = full.desc().child("channels").child("channel")
    for _ in range(n):
        labels.append((ch.child_value("label") or "").strip()[:16])
        ch = ch.next_sibling()
    labels = [lab or f"L{i + 1}" for i, lab in enumerate(labels)]
    integer = full.channel_format() in (pylsl.cf_int16, pylsl.cf_int32)
    lo, hi = DIGITAL_LIMITS["int32"]
    scale = 1.0 if integer else UV_PER_STEP
    meta = StreamMeta(
        rate=max(1, round(full.nominal_srate())),
        format="int32",
        channels=[
            ChannelMeta(
                label=lab,
                physical_min=lo * scale,
                physical_max=hi * scale,
                digital_min=lo,
                digital_max=hi,
            )
            for lab in labels
        ],
        device=f"lsl:{full.name()}"[:64],
    )
    return LslSource(inlet, meta, integer)
