"""The viewer half of :mod:`clients.eeg`: follow a stream, hold every output once.

:class:`Viewer` watches a stream (``eeg.watch``), takes its live ``eeg.view``
frames, and fills every range it does not hold between its floor (the
backfill asked for) and the live edge with ``eeg.backfill`` pages, a few in
flight: the backfill at the start, what it missed while reconnecting, and what
the hub skipped because it was slow (after a ``gap`` event). Ranges the hub
reports as gaps of the recording are remembered and not asked again.
:class:`Coverage` keeps the outputs by index, each once, and counts any
output received twice (``duplicates``: the hub should never send one).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.eeg import (
    BACKFILL_IN_FLIGHT,
    BACKFILL_PAGE_BYTES,
    FORMATS,
    StreamMeta,
    ViewFrame,
    decode_view,
)


class Coverage:
    """Outputs by index in runs (adjacent runs merged); every index held once."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._runs: list[list[Any]] = []  #: [start, end, [arrays]]

    def add(self, first: int, arr: npt.NDArray[np.generic]) -> int:
        """Hold ``arr`` at ``first``; the number of its outputs already held (not stored)."""
        end = first + arr.shape[0]
        pieces: list[tuple[int, int]] = []
        cur = first
        i = max(0, bisect.bisect_right(self._starts, first) - 1)
        while i < len(self._runs) and self._runs[i][0] < end:
            s, e = self._runs[i][0], self._runs[i][1]
            if e > cur:
                if s > cur:
                    pieces.append((cur, s))
                cur = max(cur, e)
            i += 1
        if cur < end:
            pieces.append((cur, end))
        for a, b in pieces:
            self._insert(a, arr[a - first : b - first])
        return arr.shape[0] - sum(b - a for a, b in pieces)

    def _insert(self, a: int, arr: npt.NDArray[np.generic]) -> None:
        b = a + arr.shape[0]
        i = bisect.bisect_left(self._starts, a)
        if i > 0 and self._runs[i - 1][1] == a:
            run = self._runs[i - 1]
            run[1] = b
            run[2].append(arr)
            i -= 1
        else:
            self._runs.insert(i, [a, b, [arr]])
            self._starts.insert(i, a)
        if i + 1 < len(self._runs) and self._runs[i + 1][0] == self._runs[i][1]:
            nxt = self._runs.pop(i + 1)
            self._starts.pop(i + 1)
            self._runs[i][1] = nxt[1]
            self._runs[i][2].extend(nxt[2])

    def intervals(self) -> list[tuple[int, int]]:
        """The runs held, ascending."""
        return [(r[0], r[1]) for r in self._runs]

    def missing(self, a: int, b: int) -> list[tuple[int, int]]:
        """The ranges within ``[a, b)`` not held."""
        out, cur = [], a
        for s, e in self.intervals():
            if e <= cur:
                continue
            if s >= b:
                break
            if s > cur:
                out.append((cur, min(s, b)))
            cur = max(cur, e)
        if cur < b:
            out.append((cur, b))
        return out

    def array(self, a: int, b: int) -> npt.NDArray[np.generic]:
        """Outputs ``[a, b)``; KeyError when one is not held."""
        for run in self._runs:
            if run[0] <= a and b <= run[1]:
                if len(run[2]) > 1:
                    run[2] = [np.concatenate(run[2])]
                result: npt.NDArray[np.generic] = run[2][0][a - run[0] : b - run[0]]
                return result
        raise KeyError(f"outputs {a}..{b} not all held")


class Viewer:
    """Follows stream ``sid`` as ``view`` (see the module docstring)."""

    def __init__(
        self,
        url: str,
        auth: Any,
        sid: str,
        *,
        view: str = "raw",
        rate: float | None = None,
        backfill_s: float = 600.0,
        binary: bool = True,
        in_flight: int = BACKFILL_IN_FLIGHT,
    ) -> None:
        self.url, self.auth, self.sid, self.mode, self.rate = url, auth, sid, view, rate
        self.backfill_s, self.binary, self.in_flight = backfill_s, binary, in_flight
        self.cov = Coverage()
        self.unavailable = Coverage()  #: ranges the hub reported as gaps of the recording
        self.meta: StreamMeta | None = None
        self.number = 0
        self.factor = 1
        self.format = "int16"
        self.floor: int | None = None  #: the lowest output wanted
        self.live_end = 0  #: the end of the newest output known to exist
        self.closed_end: int | None = None
        self.duplicates = self.gap_events = self.reconnects = 0
        self.live_frames = self.backfill_frames = 0
        self.annotations: dict[str, dict[str, Any]] = {}
        self.ann_seq = 0
        self.latencies_us: list[int] = []
        self.sock: Any = None
        self._progress = asyncio.Event()
        self._wanted = asyncio.Event()
        self._ready = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self.failure: Exception | None = None

    async def start(self, timeout_s: float = 30.0) -> None:
        """Watch (and keep watching across reconnects); returns after the first watch."""
        self._runner = asyncio.get_running_loop().create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), timeout_s)
        if self.failure is not None:
            raise self.failure

    async def _run(self) -> None:
        from clients.eeg import RETRY_CODES, TRANSPORT, EegError, HubSocket, backoff

        attempt = 0
        while not self._closing:
            filler = None
            try:
                sock = await HubSocket.open(self.url, self.auth, binary=self.binary)
                sock.on_frame, sock.on_event = self._on_frame, self._on_event
                self.sock = sock
                await self._watch(sock)
                attempt = 0
                filler = asyncio.get_running_loop().create_task(self._fill(sock))
                await sock.closed.wait()
            except EegError as exc:
                if exc.code not in RETRY_CODES:
                    self.failure = exc
                    self._ready.set()
                    return
            except (*TRANSPORT, ConnectionError):
                pass
            finally:
                if filler is not None:
                    filler.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await filler
            self.sock = None
            if self._closing:
                return
            self.reconnects += 1
            await backoff(attempt)
            attempt += 1

    async def _watch(self, sock: Any) -> None:
        fields: dict[str, Any] = {"stream": self.sid, "view": self.mode}
        if self.rate is not None:
            fields["rate"] = self.rate
        got = await sock.request("eeg.watch", **fields)
        import msgspec

        self.meta = msgspec.convert(got["meta"], StreamMeta)
        self.number, self.factor = got["number"], got["view"]["factor"]
        self.format = got["view"]["format"]
        self.ann_seq = got.get("ann_seq", 0)
        for a in got.get("annotations", []):
            self.annotations[a["id"]] = a
        live_from = int(got["live_from"])
        if self.floor is None:
            per_s = self.meta.rate / self.factor
            self.floor = max(int(got["first"]), live_from - int(self.backfill_s * per_s))
        self.live_end = max(self.live_end, live_from)
        if got["state"] == "closed":
            self.closed_end = live_from
        self._wanted.set()
        self._ready.set()

    def _shape(self, vf: ViewFrame) -> tuple[int, ...]:
        assert self.meta is not None
        nch = len(self.meta.channels)
        return (vf.count, nch, 2) if vf.mode == "envelope" else (vf.count, nch)

    def _on_frame(self, frame: bytes) -> None:
        vf = decode_view(frame)
        if vf.stream != self.number or vf.factor != self.factor or vf.mode != self.mode:
            return
        arr = np.frombuffer(vf.data, dtype=FORMATS[vf.format][2]).reshape(self._shape(vf))
        self.duplicates += self.cov.add(vf.first, arr)
        if vf.backfill:
            self.backfill_frames += 1
        else:
            self.live_frames += 1
            if vf.first > self.live_end:
                self._wanted.set()  # a jump: frames were skipped
            self.live_end = max(self.live_end, vf.first + vf.count)
            lag = (time.monotonic_ns() // 1000 - vf.device_us) & 0xFFFFFFFF
            if lag < 2**31:
                self.latencies_us.append(lag)
        self._progress.set()

    def _on_event(self, msg: dict[str, Any]) -> None:
        kind, data = msg.get("kind"), msg.get("data") or {}
        if kind == "gap":
            self.gap_events += 1
            self._wanted.set()
        elif kind == "annotation":
            self.ann_seq = max(self.ann_seq, int(msg.get("seq", 0)))
            if data.get("action") == "delete":
                self.annotations.pop(data.get("id"), None)
            else:
                self.annotations[data["id"]] = {k: v for k, v in data.items() if k != "action"}
            self._progress.set()
        elif kind == "stream" and data.get("state") == "closed":
            self.closed_end = int(data.get("end", 0)) // self.factor
            self._wanted.set()
        self._progress.set()

    def page_outputs(self) -> int:
        """Outputs of one backfill page (as the hub cuts them)."""
        assert self.meta is not None
        width = (
            len(self.meta.channels)
            * FORMATS[self.format][1]
            * (2 if self.mode == "envelope" else 1)
        )
        return max(1, BACKFILL_PAGE_BYTES // width)

    def wanted(self) -> list[tuple[int, int]]:
        """Ranges between the floor and the live edge neither held nor known as gaps."""
        if self.floor is None:
            return []
        top = self.live_end if self.closed_end is None else max(self.live_end, self.closed_end)
        out = []
        for a, b in self.cov.missing(self.floor, top):
            out += self.unavailable.missing(a, b)
        return out

    async def _fill(self, sock: Any) -> None:
        while True:
            self._wanted.clear()
            ranges = self.wanted()
            if not ranges:
                await self._wanted.wait()
                continue
            per = self.page_outputs()
            pages = [(j, min(b, j + per)) for a, b in ranges for j in range(a, b, per)]
            sem = asyncio.Semaphore(self.in_flight)

            async def one(a: int, b: int, sem: asyncio.Semaphore = sem) -> None:
                async with sem:
                    got = await sock.request(
                        "eeg.backfill",
                        stream=self.sid,
                        first=a,
                        end=b,
                        view=self.mode,
                        factor=self.factor,
                    )
                    for x, y in got.get("missing", []):
                        self.unavailable.add(x, np.zeros(y - x, dtype=np.int8))

            await asyncio.gather(*(one(a, b) for a, b in pages))
            self._progress.set()
            if self.wanted() == ranges:
                await asyncio.sleep(0.05)  # the hub could not serve them yet

    async def wait_until(self, index: int, timeout_s: float = 30.0) -> None:
        """Return once every output in ``[floor, index)`` is held or a known gap."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.failure is not None:
                raise self.failure
            if self.floor is not None and self.live_end >= index:
                holes = [r for r in self.wanted() if r[0] < index]
                if not holes:
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"viewer holds {self.cov.intervals()[:4]} (live edge {self.live_end}, "
                    f"missing {self.wanted()[:3]}), not all below {index}"
                )
            self._progress.clear()
            self._wanted.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(left, 0.5))

    async def wait_for(self, condition: Any, timeout_s: float = 30.0) -> None:
        """Return once ``condition()`` is true (checked at every frame and event)."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("condition not met")
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(left, 0.5))

    def data(self, a: int, b: int) -> npt.NDArray[np.generic]:
        """Outputs ``[a, b)`` held (KeyError when one is missing)."""
        return self.cov.array(a, b)

    def kill_socket(self) -> None:
        """Drop the socket as a network failure would (tests)."""
        if self.sock is not None:
            self.sock.abort()

    async def stop(self) -> None:
        """Stop watching and close the socket."""
        self._closing = True
        if self.sock is not None:
            await self.sock.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
