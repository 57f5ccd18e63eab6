"""EDF+ and BDF+ files through pyedflib: export a recording, read one to stream it.

:class:`EdfExport` writes a stream as it is read from the store, block after
block, one data record per second: EDF+ (16-bit) when every channel's digital
range fits in 16 bits, BDF+ (24-bit) otherwise. The digital values written are
the recorder's own (integer formats: read back equal; float32 streams are
rounded to the nearest integer of the digital range). Annotations are written
at :meth:`EdfExport.close`, which also pads the last data record to a whole
second with its last sample: the file may be up to one second longer than the
recording. A gap of the recording (samples that never came) holds each
channel's value nearest to zero and is marked by a ``gap`` annotation, since
EDF+C has no holes. The export runs from the stored chunks after the fact, so
no annotation lives only in a writer's memory.

The start's sub-second part is written at 100 µs resolution (the resolution of
the onsets pyedflib writes), so an annotation's onset reads back exactly. It is
written, and read, through EDFlib directly: pyedflib 0.1.42 scales it by 100
instead of 10 (its own units are 100 ns), which writes a start ten times too
late, drops any start of 0.1 s or more, and shifts every onset read back.

:func:`read_edf` reads a file (EDF, EDF+, BDF, BDF+) whose signals share one
rate into stream metadata, digital samples and annotations, for the recorder
command and the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyedflib
from pyedflib._extensions._pyedflib import set_starttime_subsecond

from protocol.eeg import DIGITAL_LIMITS, ChannelMeta, StreamMeta

#: Samples per data record = the rate (records of one second).
RECORD_S = 1


@dataclass(frozen=True)
class Annotation:
    """An EDF+ annotation: onset and duration in seconds from the start, and its text."""

    onset_s: float
    duration_s: float
    text: str


def _field(text: str, n: int) -> str:
    """A header subfield: printable ASCII, no space (EDF+ uses spaces as separators)."""
    return "".join(ch if "!" <= ch <= "~" else "_" for ch in text)[:n]


def edf_number(x: float) -> float | int:
    """``x`` as an EDF header holds it: at most 8 characters (more precision is lost);
    an int when it is whole (pyedflib writes the value as Python prints it)."""
    for digits in range(7, -1, -1):
        text = f"{x:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{x:.0f}"
        if len(text) <= 8:
            value = float(text)
            return int(value) if value.is_integer() else value
    raise ValueError(f"{x} does not fit in an EDF header")


def is_bdf(meta: StreamMeta) -> bool:
    """True when a channel's digital range needs more than 16 bits (BDF+)."""
    lo, hi = DIGITAL_LIMITS["int16"]
    return any(c.digital_min < lo or c.digital_max > hi for c in meta.channels)


class EdfExport:
    """An EDF+/BDF+ file being written from a stream's samples (see the module docstring).

    Raises ``OSError`` when the file cannot be written, ValueError for a
    metadata pyedflib refuses.
    """

    def __init__(
        self,
        path: str | Path,
        meta: StreamMeta,
        start: datetime,
        *,
        patient_code: str = "",
        recording: str = "",
        technician: str = "",
    ) -> None:
        self.meta = meta
        self.path = str(path)
        self.bdf = is_bdf(meta)
        nch = len(meta.channels)
        kind = pyedflib.FILETYPE_BDFPLUS if self.bdf else pyedflib.FILETYPE_EDFPLUS
        self._writer = pyedflib.EdfWriter(self.path, nch, file_type=kind)
        headers: list[dict[str, Any]] = [
            {
                "label": c.label,
                "dimension": c.unit,
                "sample_frequency": meta.rate,
                "physical_min": edf_number(c.physical_min),
                "physical_max": edf_number(c.physical_max),
                "digital_min": c.digital_min,
                "digital_max": c.digital_max,
                "prefilter": c.prefilter,
                "transducer": c.type,
            }
            for c in meta.channels
        ]
        self._writer.setSignalHeaders(headers)
        self._writer.setStartdatetime(start.replace(tzinfo=None, microsecond=0))
        if patient_code:
            self._writer.setPatientCode(_field(patient_code, 80))
        if recording:
            self._writer.setRecordingAdditional(_field(recording, 80))
        if technician:
            self._writer.setTechnician(_field(technician, 40))
        if meta.device:
            self._writer.setEquipment(_field(meta.device, 40))
        self._lo = np.array([c.digital_min for c in meta.channels])
        self._hi = np.array([c.digital_max for c in meta.channels])
        self._zero = np.clip(0, self._lo, self._hi).astype(np.int32)
        self._pending: list[npt.NDArray[np.int32]] = []
        self._pending_n = 0
        self.samples = 0  #: samples written so far (gaps included)
        self._annotations: list[Annotation] = []
        self._closed = False
        # after every header setter: units of 100 ns, floored to 100 µs (see module doc)
        if set_starttime_subsecond(self._writer.handle, start.microsecond // 100 * 1000):
            raise ValueError(f"EDFlib refused the start's sub-second part {start.microsecond} µs")

    def write(self, block: npt.NDArray[np.generic]) -> None:
        """Append ``block`` (samples x channels, digital values); whole records are written."""
        data = block
        if np.issubdtype(block.dtype, np.floating):
            data = np.clip(np.rint(block), self._lo, self._hi)
        self._pending.append(np.asarray(data, dtype=np.int32))
        self._pending_n += block.shape[0]
        self.samples += block.shape[0]
        self._flush(final=False)

    def gap(self, count: int) -> None:
        """``count`` samples that never came: written as each channel's value nearest 0."""
        if count <= 0:
            return
        onset = self.samples / self.meta.rate
        self.annotate(onset, count / self.meta.rate, "gap")
        step = self.meta.rate * 60
        while count:
            n = min(count, step)
            self.write(np.broadcast_to(self._zero, (n, len(self._zero))).copy())
            count -= n

    def annotate(self, onset_s: float, duration_s: float, text: str) -> None:
        """Add an annotation (written at :meth:`close`)."""
        self._annotations.append(Annotation(onset_s, duration_s, text))

    def _flush(self, final: bool) -> None:
        rate = self.meta.rate * RECORD_S
        if self._pending_n < rate and not (final and self._pending_n):
            return
        data = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        whole = data.shape[0] // rate * rate
        if final and whole < data.shape[0]:
            pad = rate - (data.shape[0] - whole)
            data = np.concatenate((data, np.repeat(data[-1:], pad, axis=0)))
            whole = data.shape[0]
        for r in range(0, whole, rate):
            record = np.ascontiguousarray(data[r : r + rate].T, dtype=np.int32).ravel()
            if self._writer.blockWriteDigitalSamples(record) != 0:
                raise OSError("pyedflib could not write a data record")
        rest = data[whole:]
        self._pending = [rest] if rest.shape[0] else []
        self._pending_n = rest.shape[0]

    def close(self) -> None:
        """Write the last (padded) record and every annotation; close the file."""
        if self._closed:
            return
        self._closed = True
        try:
            self._flush(final=True)
            if self.samples == 0:  # EDF needs at least one record
                self.write(np.broadcast_to(self._zero, (self.meta.rate, len(self._zero))).copy())
                self._flush(final=True)
            for a in sorted(self._annotations, key=lambda a: a.onset_s):
                self._writer.writeAnnotation(a.onset_s, a.duration_s, a.text)
        finally:
            self._writer.close()


@dataclass
class EdfRecording:
    """A file read by :func:`read_edf`: metadata, digital samples, annotations, start."""

    meta: StreamMeta
    samples: npt.NDArray[np.generic]
    annotations: list[Annotation] = field(default_factory=list)
    start: datetime | None = None


def read_edf(path: str | Path) -> EdfRecording:
    """Read an EDF/BDF(+) file whose signals share one integer rate.

    Raises ValueError when the rates differ or are not whole numbers, OSError
    when the file cannot be read.
    """
    reader = pyedflib.EdfReader(str(path))
    try:
        n = reader.signals_in_file
        rates = {float(r) for r in reader.getSampleFrequencies()}
        if len(rates) != 1 or not float(next(iter(rates))).is_integer():
            raise ValueError("streaming needs every signal at one integer rate")
        rate = int(next(iter(rates)))
        headers: list[dict[str, Any]] = list(reader.getSignalHeaders())
        bdf = any(h["digital_min"] < -(2**15) or h["digital_max"] > 2**15 - 1 for h in headers)
        fmt = "int32" if bdf else "int16"
        channels = [
            ChannelMeta(
                label=h["label"].strip()[:16] or f"S{i + 1}",
                type=_signal_type(str(h.get("transducer", ""))),
                unit=h["dimension"].strip()[:8],
                physical_min=float(h["physical_min"]),
                physical_max=float(h["physical_max"]),
                digital_min=int(h["digital_min"]),
                digital_max=int(h["digital_max"]),
                prefilter=h["prefilter"].strip()[:80],
            )
            for i, h in enumerate(headers)
        ]
        dtype = np.int32 if bdf else np.int16
        samples = np.stack([reader.readSignal(i, digital=True) for i in range(n)], axis=1)
        onsets, durations, texts = reader.readAnnotations()
        annotations = [
            Annotation(float(o), max(0.0, float(d)), str(t))
            for o, d, t in zip(onsets, durations, texts, strict=True)
        ]
        start = reader.getStartdatetime().replace(microsecond=reader.starttime_subsecond // 10)
        meta = StreamMeta(rate=rate, format=fmt, channels=channels, device="edf-file")
        return EdfRecording(meta, samples.astype(dtype), annotations, start)
    finally:
        reader.close()


def _signal_type(transducer: str) -> str:
    t = transducer.strip().upper()
    for kind in ("ECG", "EOG", "EMG", "RESP"):
        if kind in t:
            return kind
    return "EEG"


def onset_samples(onset_s: float, rate: int) -> int:
    """The sample index of an onset in seconds (nearest sample)."""
    return max(0, math.floor(onset_s * rate + 0.5))
