"""A viewer that stops reading never slows the recorder or the other viewers: its frames are
skipped (counted on /metrics), then an explicit gap event comes before the next frame."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import msgpack
from websockets.asyncio.client import connect

from clients.eeg import Recorder
from clients.eeg_view import Viewer
from media.eeg.synth import SyntheticEeg
from protocol.codec import SUBPROTOCOL_MSGPACK
from protocol.eeg import decode_view
from tests.eeg.helpers import EXAM, WAIT_S, auth, digest, eeg_hub
from tests.eeg.test_disconnects import metric
from tests.hubtest import token_for

RATE = 2048


async def test_a_stalled_viewer_is_skipped_with_a_gap_marker_and_slows_nobody(
    tmp_path: Path,
) -> None:
    synth = SyntheticEeg(64, RATE, "int32", seed=5)
    data = synth.read(RATE * 24)  # 64 KiB per frame of 1/8 s: 192 frames, 12 MiB
    async with eeg_hub(tmp_path, ws_send_queue_max_bytes=1024 * 1024) as hub:
        rec = Recorder(hub.url, auth("u-tech"), EXAM, synth.meta)
        sid = await rec.start()
        fast = Viewer(hub.url, auth("u-int1"), sid)
        await fast.start()

        # the slow viewer: a tiny receive buffer, and it stops reading after its watch
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", hub.port))
        ws = await connect(
            hub.url,
            sock=raw,
            subprotocols=[SUBPROTOCOL_MSGPACK],  # type: ignore[list-item]
            max_queue=1,
            ping_interval=None,
            max_size=2**21,
        )
        token = token_for("u-int2")
        await ws.send(
            msgpack.packb({"type": "hello", "id": 1, "auth": {"method": "token", "token": token}})
        )
        await ws.send(msgpack.packb({"type": "eeg.watch", "id": 2, "stream": sid}))
        while True:
            msg = msgpack.unpackb(await asyncio.wait_for(ws.recv(), WAIT_S))
            if msg.get("id") == 2:
                assert msg["type"] == "result", msg
                break

        drops0 = metric(hub, "medhub_channel_drops_total", '{cls="lossy"}')
        for k in range(0, len(data), RATE // 8):  # 40 times real time
            await rec.write(data[k : k + RATE // 8])
            await asyncio.sleep(0.003)
        await rec.wait_acked(timeout_s=WAIT_S)  # the recorder was never held back
        await fast.wait_until(len(data), timeout_s=WAIT_S)
        assert fast.gap_events == 0
        assert fast.duplicates == 0
        assert fast.backfill_frames == 0  # all of it live
        assert digest(fast.data(0, len(data))) == digest(data)
        assert metric(hub, "medhub_channel_drops_total", '{cls="lossy"}') > drops0

        # the slow viewer reads again: what was queued, then a gap event before the next frame
        kinds: list[str] = []
        seen = asyncio.Event()

        async def read() -> None:
            while True:
                frame = await ws.recv()
                if isinstance(frame, bytes) and frame[0] == 0xC1:
                    decode_view(frame)
                    kinds.append("frame")
                    if "gap" in kinds:
                        seen.set()
                        return
                else:
                    msg = msgpack.unpackb(frame)
                    if msg.get("type") == "event" and msg["kind"] == "gap":
                        assert msg["data"]["skipped"] > 0
                        assert msg["ch"].startswith(f"eegv:{sid}")
                        kinds.append("gap")

        reader = asyncio.get_running_loop().create_task(read())
        more = synth.read(RATE * 4)
        for k in range(0, len(more), RATE // 8):  # the source goes on
            if seen.is_set():
                break
            await rec.write(more[k : k + RATE // 8])
            await asyncio.sleep(0.01)
        await asyncio.wait_for(seen.wait(), WAIT_S)
        await reader
        assert kinds.index("gap") > 0  # frames queued before the drops came first
        assert metric(hub, "medhub_channel_gap_markers_total") >= 1
        ws.transport.abort()  # it still has frames to read: no close handshake
        raw.close()
        await fast.stop()
        await rec.stop()
