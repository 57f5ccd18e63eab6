"""The EEG wire layout (protocol/eeg.py) against its golden frames; header cost; ids."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import msgspec
import pytest

from protocol.codec import MsgpackCodec, frame_size, parse_message
from protocol.eeg import (
    FORMATS,
    SAMPLES_HEADER_BYTES,
    SAMPLES_KIND,
    VIEW_HEADER_BYTES,
    FrameError,
    StreamMeta,
    check_meta,
    decode_samples,
    decode_view,
    encode_samples,
    encode_view,
    frame_bytes,
    stream_id,
    stream_number,
    unwrap_device_us,
)
from protocol.errors import ErrorCode, ProtocolError
from protocol.streams import parse_stream
from protocol.vectors import generate
from protocol.vectors.eeg_cases import META

FRAMES = json.loads((Path(generate.__file__).parent / "eeg" / "frames.json").read_text())


def _values(case: dict[str, Any], data: memoryview) -> list[list[float]]:
    code = {"int16": "h", "int32": "i", "float32": "f"}[case["format"]]
    flat = struct.unpack("<" + code * (len(data) // FORMATS[case["format"]][1]), data)
    n = case["channels"]
    return [list(flat[i : i + n]) for i in range(0, len(flat), n)]


@pytest.mark.parametrize("case", FRAMES, ids=[c["name"] for c in FRAMES])
def test_golden_frames_decode_and_encode_exactly(case: dict[str, Any]) -> None:
    frame = bytes.fromhex(case["hex"])
    h = case["header"]
    if case["kind"] == "eeg":
        kind, payload = parse_stream(frame)
        assert kind is SAMPLES_KIND
        sf = decode_samples(payload)
        assert (sf.stream, sf.seq, sf.first, sf.count, sf.device_us) == (
            h["stream"],
            h["seq"],
            h["first"],
            h["count"],
            h["device_us"] & 0xFFFFFFFF,
        )
        assert _values(case, sf.samples) == case["values"]
        again = encode_samples(
            h["stream"], h["seq"], h["first"], h["count"], h["device_us"], sf.samples
        )
    else:
        vf = decode_view(frame)
        got = {
            "stream": vf.stream,
            "mode": vf.mode,
            "format": vf.format,
            "factor": vf.factor,
            "flags": vf.flags,
            "first": vf.first,
            "count": vf.count,
            "device_us": vf.device_us,
        }
        assert got == h
        assert _values(case, vf.data) == case["values"]
        again = encode_view(
            h["stream"],
            h["mode"],
            h["format"],
            h["factor"],
            h["flags"],
            h["first"],
            h["count"],
            h["device_us"],
            vf.data,
        )
    assert again == frame


def test_the_header_costs_under_one_percent_of_a_32_channel_eighth_second() -> None:
    for rate, fmt in ((256, "int16"), (256, "int32"), (512, "int16"), (256, "float32")):
        meta = msgspec.convert(
            {
                **META,
                "format": fmt,
                "rate": rate,
                "channels": [
                    {
                        "label": f"E{i}",
                        "physical_min": -1.0,
                        "physical_max": 1.0,
                        "digital_min": -100,
                        "digital_max": 100,
                    }
                    for i in range(32)
                ],
            },
            StreamMeta,
        )
        payload = frame_bytes(meta, rate // 8)
        assert SAMPLES_HEADER_BYTES / (SAMPLES_HEADER_BYTES + payload) < 0.01, (rate, fmt)
    assert (SAMPLES_HEADER_BYTES, VIEW_HEADER_BYTES) == (20, 24)


def test_a_frame_of_256_channels_at_2048_hz_int32_fits() -> None:
    count, channels = 2048 // 8, 256
    frame = encode_samples(1, 0, 0, count, 0, bytes(count * channels * 4))
    assert len(frame) == 262164 <= SAMPLES_KIND.max_bytes
    parse_stream(frame)  # accepted by the stream layer
    with pytest.raises(ProtocolError) as info:
        parse_stream(frame + bytes(SAMPLES_KIND.max_bytes))
    assert info.value.code is ErrorCode.TOO_LARGE


def test_cut_headers_and_empty_frames_are_refused() -> None:
    frame = encode_samples(7, 0, 0, 1, 0, b"\x00\x00")
    with pytest.raises(FrameError):
        decode_samples(memoryview(frame)[2:12])
    with pytest.raises(FrameError):
        decode_samples(memoryview(frame)[2:].tobytes()[:12] + b"\x00\x00" + bytes(4))
    with pytest.raises(FrameError):
        decode_view(frame)  # not a view frame
    with pytest.raises(ValueError, match="stream number"):
        encode_samples(0, 0, 0, 1, 0, b"")  # stream numbers start at 1


def test_stream_ids_and_numbers_are_one_id() -> None:
    assert stream_id(0xC0FFEE) == "t-00c0ffee"
    assert stream_number("t-00c0ffee") == 0xC0FFEE
    with pytest.raises(ValueError, match="not a stream id"):
        stream_number("t-c0ffee")


def test_device_time_unwraps_near_its_expected_value() -> None:
    full = 2**33 + 12345
    assert unwrap_device_us(full & 0xFFFFFFFF, full + 10_000_000) == full
    assert unwrap_device_us(full & 0xFFFFFFFF, full - 10_000_000) == full


def test_metadata_checks() -> None:
    meta = msgspec.convert(META, StreamMeta)
    assert check_meta(meta) is None
    dup = msgspec.structs.replace(meta, channels=[meta.channels[0], meta.channels[0]])
    assert check_meta(dup) == "channel labels must be unique"
    wide = msgspec.convert(
        {**META, "channels": [{**META["channels"][0], "digital_max": 40000}]}, StreamMeta
    )
    assert "digital range" in (check_meta(wide) or "")
    codec = MsgpackCodec()
    raw = codec.encode_raw({"type": "eeg.open", "id": 1, "exam": "e-1", "meta": META})
    assert parse_message(codec.decode_raw(raw), frame_size(raw)).meta == meta  # type: ignore[attr-defined]
