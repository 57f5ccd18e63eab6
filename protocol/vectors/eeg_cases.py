"""The EEG golden vectors (SPEC.md 15.5): ``eeg.json`` and ``eeg/frames.json``.

``eeg.json`` has the shape of every vector file (see README.md): the ``eeg.*``
requests (valid and invalid) and the events of the EEG channels.
``eeg/frames.json`` holds the binary stream frames, one case each:

| key | value |
|---|---|
| ``name`` | unique |
| ``kind`` | ``"eeg"`` (recorder -> hub) or ``"eeg.view"`` (hub -> viewer) |
| ``note`` | optional |
| ``header`` | the header fields (see README.md) |
| ``format`` | ``int16``, ``int32`` or ``float32`` |
| ``channels`` | values per sample (per column for envelopes: two per channel, min then max) |
| ``values`` | the samples, sample-major, as numbers (``count`` rows of ``channels``) |
| ``hex`` | lower-case hex of the whole frame (``0xC1`` and the kind included) |

An implementation must decode ``hex`` into ``header`` and ``values`` and
encode them into exactly ``hex``. Pure: no I/O.
"""

from __future__ import annotations

import struct
from typing import Any

from protocol.eeg import (
    encode_samples,
    encode_view,
)
from protocol.errors import ErrorCode
from protocol.messages import Event

STREAM = "t-00c0ffee"
EXAM = "e-5e0f0c8d2a1b3c4d5e6f"
NUMBER = 0x00C0FFEE
META = {
    "rate": 256,
    "format": "int16",
    "channels": [
        {
            "label": "Fp1",
            "physical_min": -3276.8,
            "physical_max": 3276.7,
            "digital_min": -32768,
            "digital_max": 32767,
        },
        {
            "label": "ECG",
            "type": "ECG",
            "unit": "mV",
            "physical_min": -5.0,
            "physical_max": 5.0,
            "digital_min": -2048,
            "digital_max": 2047,
            "prefilter": "HP:0.5Hz",
        },
    ],
    "reference": "A1+A2",
    "device": "amp-0042",
}


def message_cases() -> list[dict[str, Any]]:
    """The cases of ``eeg.json``."""
    from protocol.vectors.generate import _client_bad, _client_ok, _server

    ann = {
        "type": "eeg.annotate",
        "id": 7,
        "stream": STREAM,
        "client_id": "n1",
        "onset": 2560,
        "text": "14 Hz",
        "duration": 1280,
        "kind": "photic",
        "frequency_hz": 14.0,
    }
    cases = [
        _client_ok(
            "eeg_open",
            {"type": "eeg.open", "id": 1, "exam": EXAM, "meta": META},
            "the technician starts a stream",
        ),
        _client_ok(
            "eeg_open_resume",
            {
                "type": "eeg.open",
                "id": 2,
                "exam": EXAM,
                "meta": META,
                "stream": STREAM,
            },
            "after a reconnect: answers acked, the index to resend from",
        ),
        _client_ok(
            "eeg_clock",
            {
                "type": "eeg.clock",
                "id": 3,
                "stream": STREAM,
                "t0": 5000200,
                "last": {"t0": 5000000, "hub_us": 1767225600000150, "t1": 5000180},
            },
        ),
        _client_ok("eeg_watch_raw", {"type": "eeg.watch", "id": 4, "stream": STREAM}),
        _client_ok(
            "eeg_watch_decimate",
            {"type": "eeg.watch", "id": 5, "stream": STREAM, "view": "decimate", "rate": 64.0},
        ),
        _client_ok(
            "eeg_backfill",
            {"type": "eeg.backfill", "id": 6, "stream": STREAM, "first": 0, "end": 153600},
        ),
        _client_ok("eeg_annotate", ann),
        _client_ok(
            "eeg_annotation_edit",
            {
                "type": "eeg.annotation_edit",
                "id": 8,
                "stream": STREAM,
                "annotation": "a-0123456789abcdef",
                "onset": 2600,
                "text": "eyes closed",
                "kind": "eyes_closed",
            },
        ),
        _client_ok(
            "eeg_annotation_delete",
            {
                "type": "eeg.annotation_delete",
                "id": 9,
                "stream": STREAM,
                "annotation": "a-0123456789abcdef",
            },
        ),
        _client_ok("eeg_annotations", {"type": "eeg.annotations", "id": 10, "stream": STREAM}),
        _client_ok("eeg_unwatch", {"type": "eeg.unwatch", "id": 11, "stream": STREAM}),
        _client_ok("eeg_close", {"type": "eeg.close", "id": 12, "stream": STREAM}),
        _client_bad(
            "eeg_open_no_channel",
            {"type": "eeg.open", "id": 20, "exam": "e-1", "meta": {**META, "channels": []}},
            ErrorCode.BAD_REQUEST,
            20,
        ),
        _client_bad(
            "eeg_watch_unknown_view",
            {"type": "eeg.watch", "id": 21, "stream": STREAM, "view": "spectrogram"},
            ErrorCode.BAD_REQUEST,
            21,
        ),
        _client_bad(
            "eeg_bad_stream_id",
            {"type": "eeg.watch", "id": 22, "stream": "t-XYZ"},
            ErrorCode.BAD_REQUEST,
            22,
        ),
        _client_bad(
            "eeg_backfill_negative",
            {"type": "eeg.backfill", "id": 23, "stream": STREAM, "first": -1, "end": 10},
            ErrorCode.BAD_REQUEST,
            23,
        ),
        _client_bad(
            "eeg_annotate_bad_kind",
            {**ann, "id": 24, "kind": "Eyes Closed"},
            ErrorCode.BAD_REQUEST,
            24,
        ),
        _server(
            "eeg_event_ack",
            Event(ch=f"eeg:{STREAM}", seq=0, kind="ack", data={"stream": STREAM, "acked": 1280}),
            "to the writer socket: samples below acked are stored",
        ),
        _server(
            "eeg_event_annotation",
            Event(
                ch=f"eeg:{STREAM}",
                seq=3,
                kind="annotation",
                data={
                    "action": "create",
                    "stream": STREAM,
                    "id": "a-0123456789abcdef",
                    "onset": 2560,
                    "duration": 1280,
                    "text": "14 Hz",
                    "kind": "photic",
                    "author": "u-7Hq2",
                    "version": 1,
                    "at": 1767225600000000,
                    "frequency_hz": 14.0,
                },
            ),
        ),
        _server(
            "eeg_event_gap",
            Event(ch=f"eegv:{STREAM}.raw.1", seq=0, kind="gap", data={"skipped": 3}),
            "a slow viewer: 3 frames of this view were skipped before the next one",
        ),
        _server(
            "eeg_event_closed",
            Event(
                ch=f"eeg:{STREAM}",
                seq=0,
                kind="stream",
                data={"stream": STREAM, "state": "closed", "end": 153600},
            ),
        ),
    ]
    return cases


def _values(fmt: str, count: int, channels: int, start: float = 0) -> list[list[float]]:
    lo = -3 if fmt != "float32" else -1.5
    return [
        [
            start + lo + (r * channels + c) * (1.25 if fmt == "float32" else 7)
            for c in range(channels)
        ]
        for r in range(count)
    ]


def _struct_code(fmt: str) -> str:
    return {"int16": "h", "int32": "i", "float32": "f"}[fmt]


def _bytes(fmt: str, values: Any) -> bytes:
    flat = [v for row in values for v in row]
    return struct.pack("<" + _struct_code(fmt) * len(flat), *flat)


def frame_cases() -> list[dict[str, Any]]:
    """The cases of ``eeg/frames.json``."""
    out: list[dict[str, Any]] = []

    def samples(name: str, fmt: str, channels: int, h: dict[str, int], note: str) -> None:
        vals: Any = _values(fmt, h["count"], channels)
        if fmt != "float32":
            vals = [[int(v) for v in row] for row in vals]
        frame = encode_samples(
            h["stream"], h["seq"], h["first"], h["count"], h["device_us"], _bytes(fmt, vals)
        )
        out.append(
            {
                "name": name,
                "kind": "eeg",
                "note": note,
                "header": h,
                "format": fmt,
                "channels": channels,
                "values": vals,
                "hex": frame.hex(),
            }
        )

    def view(name: str, h: dict[str, Any], channels: int, note: str) -> None:
        fmt = h["format"]
        vals: Any = _values(fmt, h["count"], channels)
        if fmt != "float32":
            vals = [[int(v) for v in row] for row in vals]
        frame = encode_view(
            h["stream"],
            h["mode"],
            fmt,
            h["factor"],
            h["flags"],
            h["first"],
            h["count"],
            h["device_us"],
            _bytes(fmt, vals),
        )
        out.append(
            {
                "name": name,
                "kind": "eeg.view",
                "note": note,
                "header": h,
                "format": fmt,
                "channels": channels,
                "values": vals,
                "hex": frame.hex(),
            }
        )

    base = {"stream": NUMBER, "seq": 0, "first": 0, "device_us": 123456}
    samples("samples_int16", "int16", 2, {**base, "count": 3}, "2 channels, 3 samples")
    samples(
        "samples_32ch_eighth_second",
        "int16",
        32,
        {**base, "seq": 41, "first": 1312, "count": 32},
        "32 channels x 1/8 s at 256 Hz: 2,048 bytes of samples, 20 of header",
    )
    samples(
        "samples_int32_high_index",
        "int32",
        3,
        {**base, "seq": 65535, "first": 2**40 + 5, "count": 2, "device_us": 4294967295},
        "first above 2**32 (u48), seq and device time at their wrap",
    )
    samples("samples_float32", "float32", 2, {**base, "count": 2}, "float32 digital values")
    vbase = {"stream": NUMBER, "flags": 0, "first": 640, "device_us": 123456}
    view(
        "view_raw",
        {**vbase, "mode": "raw", "format": "int16", "factor": 1, "count": 2},
        2,
        "live raw samples, as recorded",
    )
    view(
        "view_decimated_backfill",
        {
            **vbase,
            "mode": "decimate",
            "format": "float32",
            "factor": 4,
            "flags": 1,
            "first": 160,
            "count": 2,
        },
        2,
        "a backfill page (flag 1) of a view decimated by 4: output 160 is source index 640",
    )
    view(
        "view_envelope",
        {**vbase, "mode": "envelope", "format": "int16", "factor": 8, "first": 80, "count": 2},
        4,
        "2 columns of 8 samples, 2 channels: min, max of channel 0 then of channel 1",
    )
    return out
