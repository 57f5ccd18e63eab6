"""A viewer that stops reading never slows the recorder or the other viewers: its frames are
skipped (counted on /metrics), then an explicit gap event comes before the next frame.

No step waits on time: the recorder writes one frame at a time and the test waits until the
fast viewer holds it (so the hub has handed it to every follower: queued for the slow viewer,
or skipped and counted); the slow viewer's skips are read from the drop counter, and its
reading progress from the messages its reader counts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import msgpack
import numpy as np
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
FRAME = RATE // 8  # 64 channels int32: 64 KiB per frame
#: Frames the stalled viewer may take before it must have been skipped: 60 MiB, far more than
#: its send queue (1 MiB, lossy frames skipped past half) and the kernel's socket buffers.
MAX_FRAMES = 960
DROPS = ("medhub_channel_drops_total", '{cls="lossy"}')
GAPS = ("medhub_channel_gap_markers_total", "")


async def until(condition: Callable[[], bool], changed: asyncio.Event, timeout_s: float) -> None:
    """Return once ``condition()`` holds, re-checked each time ``changed`` is set."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            changed.clear()
            await changed.wait()


async def test_a_stalled_viewer_is_skipped_with_a_gap_marker_and_slows_nobody(
    tmp_path: Path,
) -> None:
    synth = SyntheticEeg(64, RATE, "int32", seed=5)
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

        async def write_one(blocks: list[np.ndarray]) -> None:
            """One frame from the source; back once every follower was handed it."""
            block = synth.read(FRAME)
            blocks.append(block)
            await rec.write(block)
            await fast.wait_until(rec.end, timeout_s=WAIT_S)

        # the source runs as fast as the fast viewer takes it, until the stalled one is skipped
        drops0 = metric(hub, *DROPS)
        sent: list[np.ndarray] = []
        while metric(hub, *DROPS) == drops0 and len(sent) < MAX_FRAMES:
            await write_one(sent)
        assert metric(hub, *DROPS) > drops0, "the stalled viewer was never skipped"
        data = np.concatenate(sent)
        await rec.wait_acked(timeout_s=WAIT_S)  # the recorder was never held back
        assert fast.gap_events == 0
        assert fast.duplicates == 0
        assert fast.backfill_frames == 0  # all of it live
        assert digest(fast.data(0, len(data))) == digest(data)

        # the slow viewer reads again: what was queued, then a gap event before the next frame
        kinds: list[str] = []
        seen = asyncio.Event()
        progress = asyncio.Event()
        received = 0

        async def read() -> None:
            nonlocal received
            while True:
                frame = await ws.recv()
                received += 1
                progress.set()
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
        more: list[np.ndarray] = []
        # the source goes on: a frame skipped for the slow viewer (its queue still over half
        # full) waits for the viewer to read something; the first frame queued for it comes
        # after its gap marker, so then it is only a matter of reading
        while not seen.is_set():
            assert len(more) < MAX_FRAMES, "the slow viewer never got a frame again"
            before, drops = received, metric(hub, *DROPS)
            await write_one(more)
            if metric(hub, *DROPS) == drops:
                break  # queued for the slow viewer, after the marker
            # skipped: its queue was not empty, so the reader gets more (or is done)

            def moved(before: int = before) -> bool:
                return received > before or seen.is_set()

            await until(moved, progress, WAIT_S)
        await asyncio.wait_for(seen.wait(), WAIT_S)
        await reader
        assert kinds.index("gap") > 0  # frames queued before the drops came first
        assert metric(hub, *GAPS) >= 1
        await fast.wait_until(rec.end, timeout_s=WAIT_S)
        assert fast.gap_events == 0  # the other viewer never noticed
        assert digest(fast.data(0, rec.end)) == digest(np.concatenate(sent + more))
        ws.transport.abort()  # it still has frames to read: no close handshake
        raw.close()
        await fast.stop()
        await rec.stop()
