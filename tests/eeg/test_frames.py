"""Malformed sample frames get an error naming them and leave the stream intact; a
forward jump is an explicit gap; frames of a stream the socket does not write are refused."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from clients.eeg import HubSocket
from clients.eeg_view import Viewer
from media.eeg.synth import synthetic_meta
from protocol.eeg import ChannelMeta, StreamMeta, encode_samples
from tests.eeg.helpers import EXAM, WAIT_S, auth, digest, eeg_hub, source

RATE = 256


class Errors:
    def __init__(self, sock: HubSocket) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        sock.on_error = self.queue.put_nowait

    async def next(self) -> tuple[str, str]:
        e = await asyncio.wait_for(self.queue.get(), WAIT_S)
        return e["code"], e["ref"]


async def test_malformed_frames_get_errors_and_the_stream_stays_intact(tmp_path: Path) -> None:
    data = source(1)
    async with eeg_hub(tmp_path) as hub:
        tech = await HubSocket.open(hub.url, auth("u-tech"))
        errors = Errors(tech)
        meta = msgspec.to_builtins(synthetic_meta(21, RATE))
        opened = await tech.request("eeg.open", exam=EXAM, meta=meta)
        sid, n = opened["stream"], opened["number"]

        def frame(first: int, count: int = 32, payload: bytes | None = None) -> bytes:
            body = data[first : first + count].tobytes() if payload is None else payload
            return encode_samples(n, first // 32, first, count, 0, body)

        await tech.send_frame(frame(0))
        await tech.send_frame(frame(32))
        # 20 channels instead of 21
        await tech.send_frame(frame(64, payload=data[64:96, :20].tobytes()))
        assert await errors.next() == ("bad_request", "stream:eeg")
        # a payload cut short (not a whole number of samples)
        await tech.send_frame(frame(64)[:-3])
        assert await errors.next() == ("bad_frame", "stream:eeg")
        # a header cut short
        await tech.send_frame(frame(64)[:12])
        assert await errors.next() == ("bad_frame", "stream:eeg")
        # an index going back within the socket's session
        await tech.send_frame(frame(16))
        assert await errors.next() == ("bad_request", "stream:eeg")
        # a stream that is not open here
        await tech.send_frame(encode_samples(n ^ 0xFFFF, 0, 64, 32, 0, data[64:96].tobytes()))
        assert await errors.next() == ("not_found", "stream:eeg")
        # another socket of the technician does not write the stream
        other = await HubSocket.open(hub.url, auth("u-tech"))
        other_errors = Errors(other)
        await other.send_frame(frame(64))
        assert await other_errors.next() == ("forbidden", "stream:eeg")
        await other.close()

        # intact: the next good frame continues the stream exactly
        for k in range(64, RATE, 32):
            await tech.send_frame(frame(k))
        view = Viewer(hub.url, auth("u-int1"), sid)
        await view.start()
        await view.wait_until(RATE, timeout_s=WAIT_S)
        assert view.cov.intervals() == [(0, RATE)]
        assert digest(view.data(0, RATE)) == digest(data)
        assert view.duplicates == 0
        assert view.unavailable.intervals() == []
        assert errors.queue.empty()
        await view.stop()
        await tech.close()


async def test_values_outside_the_digital_range_and_forward_jumps(tmp_path: Path) -> None:
    meta = StreamMeta(
        rate=RATE,
        format="int16",
        channels=[
            ChannelMeta(
                label=f"C{i}",
                physical_min=-100.0,
                physical_max=100.0,
                digital_min=-1000,
                digital_max=1000,
            )
            for i in range(4)
        ],
    )
    block = (np.arange(64 * 4, dtype=np.int16).reshape(64, 4) % 900).astype(np.int16)
    async with eeg_hub(tmp_path) as hub:
        tech = await HubSocket.open(hub.url, auth("u-tech"))
        errors = Errors(tech)
        opened = await tech.request("eeg.open", exam=EXAM, meta=msgspec.to_builtins(meta))
        sid, n = opened["stream"], opened["number"]
        bad = block[:32].copy()
        bad[5, 2] = 1001
        await tech.send_frame(encode_samples(n, 0, 0, 32, 0, bad.tobytes()))
        assert await errors.next() == ("bad_request", "stream:eeg")
        await tech.send_frame(encode_samples(n, 0, 0, 32, 0, block[:32].tobytes()))
        # within a socket's session, skipping samples means a frame was lost: refused
        await tech.send_frame(encode_samples(n, 1, 100, 32, 0, block[32:].tobytes()))
        assert await errors.next() == ("conflict", "stream:eeg")
        # a recorder that resumes without samples 32..100 (its buffer lost them): a gap
        again = await HubSocket.open(hub.url, auth("u-tech"))
        meta_wire = msgspec.to_builtins(meta)
        resumed = await again.request("eeg.open", exam=EXAM, meta=meta_wire, stream=sid)
        assert resumed["acked"] <= 32
        await again.send_frame(encode_samples(n, 2, 100, 32, 0, block[32:].tobytes()))
        view = Viewer(hub.url, auth("u-int1"), sid)
        await view.start()
        await view.wait_until(132, timeout_s=WAIT_S)
        assert view.cov.intervals() == [(0, 32), (100, 132)]
        assert view.unavailable.intervals() == [(32, 100)]  # the hub said: a gap
        assert np.array_equal(view.data(100, 132), block[32:])
        assert errors.queue.empty()
        await view.stop()
        await again.close()
        await tech.close()
