"""A stream being recorded on this node: accept frames, persist them, acknowledge by index.

The node whose socket writes a stream owns it (``eeg_stream.owner_node``, with
a ``writer_epoch``). Its :class:`Recording` checks each ``eeg`` frame, drops
what it already has (a recorder resends from the last acknowledged index
after a reconnect), turns a forward jump into an explicit gap, pushes the
samples into the node's :class:`~server.eeg.feed.Feed` (the ring and the
viewers), publishes them on the stream's topic for the other nodes, and
queues them for the store.

Persistence: every ``eeg_persist_interval_s`` the samples accepted since the
last write are handed, as chunks, to the node's write sequence (one job,
committed with whatever else the node writes then; the samples sealed with
the at-rest keyring). Once committed, the stored end (``durable_end``) moves
and the writer socket gets an ``ack`` event: the recorder may forget what is
below it. A job that cannot commit is retried at the next interval; a crash
loses what was not acknowledged, which the recorder resends. A job that finds
another node's epoch (the recorder reconnected elsewhere) writes nothing: this
node stops recording the stream (fencing).

A hole is a gap only at the start of a writer session (the first frame after
``eeg.open``): the recorder lost those samples. Within a session frames follow
each other exactly; a frame that skips samples means one was lost on the way
(e.g. refused ``rate_limited``): it is refused ``conflict``, and the recorder
resumes and resends from the acknowledged index, so nothing it holds becomes a
gap.

Frame errors (:class:`~server.router.HandlerError`, answered with ``ref``
``stream:eeg``; the stream is left as it was): ``bad_frame`` (a payload that is
not a whole number of samples), ``bad_request`` (a wrong channel count, an
index going back within one writer session, a jump past ``eeg_max_gap_s``, a
value outside its channel's digital range), ``conflict`` (samples skipped
within a session: resume), ``forbidden`` (not this stream's writer socket).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from protocol.eeg import FORMATS, SampleFrame, StreamMeta, control_channel
from protocol.errors import ErrorCode
from protocol.messages import Event
from server.audit.events import AuditEvent
from server.eeg import store
from server.eeg.feed import Feed, frame_of, gap_message, samples_message, topic_of
from server.peer import Peer
from server.router import HandlerError
from server.security.crypto import Keyring
from server.store.jobs import JobWriter

log = logging.getLogger(__name__)

#: Bytes of samples per stored chunk at most (a chunk is one row, one envelope).
CHUNK_BYTES = 1024 * 1024


class ChunkJob:
    """Chunks of one recording, written in the node's next transaction (a WriteJob)."""

    def __init__(self, rec: Recording, chunks: list[store.Chunk]) -> None:
        self.rec, self.chunks, self.epoch = rec, chunks, rec.epoch
        self.result: int | None = None

    def taken(self) -> None:
        """Nothing to seal: the chunks are fixed."""

    def apply(self, conn: Any) -> list[AuditEvent]:
        """Store the chunks if this node still owns the stream (no audit entry per chunk)."""
        self.result = store.store_chunks(conn, self.rec.keys, self.rec.sid, self.epoch, self.chunks)
        return []

    def done(self) -> None:
        """Committed: move the stored end and acknowledge (or learn of the takeover)."""
        self.rec.persisted(self)

    def failed(self, exc: BaseException) -> None:
        """Not committed: the chunks go back to be written at the next interval."""
        self.rec.persist_failed(self, exc)


class Recording:
    """One stream recorded on this node (see the module docstring)."""

    def __init__(
        self,
        row: store.StreamRow,
        meta: StreamMeta,
        feed: Feed,
        *,
        keys: Keyring,
        jobs: JobWriter,
        publish: Callable[[str, bytes], None],
        persist_interval_s: float,
        max_gap: int,
        on_fenced: Callable[[Recording], None],
        count: Callable[[str, int], None],
    ) -> None:
        self.sid, self.number, self.meta = row.id, row.number, meta
        self.exam_id, self.org_id = row.exam_id, row.org_id
        self.epoch = row.writer_epoch
        self.durable_end = row.durable_end
        self.accepted_end = row.durable_end
        self.feed = feed
        self.keys, self.jobs, self.publish = keys, jobs, publish
        self.interval, self.max_gap = persist_interval_s, max_gap
        self.on_fenced, self.count = on_fenced, count
        self.nch = len(meta.channels)
        self.dtype = np.dtype(FORMATS[meta.format][2])
        self.itemsize = self.dtype.itemsize
        lo = np.array([c.digital_min for c in meta.channels])
        hi = np.array([c.digital_max for c in meta.channels])
        if np.issubdtype(self.dtype, np.integer):
            info = np.iinfo(self.dtype)
            full = bool((lo <= info.min).all() and (hi >= info.max).all())
        else:
            full = False
        self._range = None if full else (lo.astype(self.dtype), hi.astype(self.dtype))
        self.writer: Peer | None = None
        self.session_end: int | None = None  #: end of the writer session's last frame
        self.pending: list[store.Chunk] = []
        self._in_flight: ChunkJob | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()  #: nothing pending nor in flight
        self._idle.set()
        self.fenced = False
        self.clock_best: tuple[int, int] | None = None  #: (rtt_us, offset_us)
        self.seq = 0

    # -- the writer ---------------------------------------------------------------------
    def bind(self, peer: Peer) -> None:
        """``peer`` writes the stream from now on (a new writer session)."""
        self.writer = peer
        self.session_end = None

    def unbind(self, peer: Peer) -> None:
        """``peer`` is gone; the stream waits for its recorder to come back."""
        if self.writer is peer:
            self.writer = None
            self._flush_soon(0.0)

    # -- frames -----------------------------------------------------------------------------
    def on_frame(self, peer: Peer, sf: SampleFrame) -> None:
        """Check and accept one frame (see the module docstring); raises HandlerError."""
        if peer is not self.writer or self.fenced:
            raise HandlerError(ErrorCode.FORBIDDEN, f"this socket does not write {self.sid}")
        size = len(sf.samples)
        per_sample = self.nch * self.itemsize
        if size != sf.count * per_sample:
            if size % (sf.count * self.itemsize) == 0:
                raise HandlerError(
                    ErrorCode.BAD_REQUEST,
                    f"frame of {size // (sf.count * self.itemsize)} channels; {self.sid} has "
                    f"{self.nch}",
                )
            raise HandlerError(
                ErrorCode.BAD_FRAME, f"truncated payload: {size} bytes for {sf.count} samples"
            )
        if self.session_end is not None and sf.first < self.session_end:
            raise HandlerError(
                ErrorCode.BAD_REQUEST,
                f"non-monotonic sample index {sf.first}: the previous frame ended at "
                f"{self.session_end}",
            )
        if self.session_end is not None and sf.first > self.session_end:
            raise HandlerError(
                ErrorCode.CONFLICT,
                f"index {sf.first} skips samples after {self.session_end} (a frame was lost):"
                f" resume the stream and resend from {self.durable_end}",
            )
        if sf.first - self.accepted_end > self.max_gap:
            raise HandlerError(
                ErrorCode.BAD_REQUEST, f"index {sf.first} jumps past the largest gap allowed"
            )
        block = np.frombuffer(sf.samples, dtype=self.dtype).reshape(sf.count, self.nch)
        if self._range is not None and (
            (block < self._range[0]).any() or (block > self._range[1]).any()
        ):
            raise HandlerError(ErrorCode.BAD_REQUEST, "a sample is outside its digital range")
        self.session_end = sf.first + sf.count
        end = sf.first + sf.count
        if end <= self.accepted_end:
            self.count("duplicate", sf.count)
            return
        first = sf.first
        if first < self.accepted_end:
            self.count("duplicate", self.accepted_end - first)
            block, first = block[self.accepted_end - first :], self.accepted_end
        elif first > self.accepted_end:
            self._gap(self.accepted_end, first)
        block = block.copy()  # the payload is only valid during the call
        self.feed.push(first, block, sf.device_us)
        frame = frame_of(self.number, sf.seq, first, block, sf.device_us)
        self.publish(topic_of(self.sid), samples_message(frame))
        self._queue(store.Chunk(first, block.shape[0], block.tobytes(), sf.device_us))
        self.accepted_end = end
        self.count("accepted", block.shape[0])

    def _gap(self, a: int, b: int) -> None:
        self.feed.push_gap(a, b)
        self.publish(topic_of(self.sid), gap_message(a, b))
        self._queue(store.Chunk(a, b - a, None))
        self.accepted_end = b
        self.count("gap", b - a)

    def _queue(self, chunk: store.Chunk) -> None:
        last = self.pending[-1] if self.pending else None
        if (
            last is not None
            and last.data is not None
            and chunk.data is not None
            and len(last.data) + len(chunk.data) <= CHUNK_BYTES
        ):
            if not isinstance(last.data, bytearray):  # appended in place from now on
                last.data = bytearray(last.data)
            last.data += chunk.data
            last.count += chunk.count
        else:
            self.pending.append(chunk)
        self._idle.clear()
        self._flush_soon(self.interval)

    # -- persistence --------------------------------------------------------------------
    def _flush_soon(self, delay: float) -> None:
        if self._timer is None and self._in_flight is None and self.pending:
            self._timer = asyncio.get_running_loop().call_later(delay, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self._in_flight is not None or not self.pending or self.fenced:
            return
        job = ChunkJob(self, self.pending)
        self.pending = []
        try:
            self.jobs.submit(job)
        except RuntimeError:
            self.pending = job.chunks + self.pending  # writer closed: kept for close()
            return
        self._in_flight = job

    def persisted(self, job: ChunkJob) -> None:
        """A chunk job committed (called by the job)."""
        self._in_flight = None
        if job.result is None:
            if job.epoch == self.epoch:
                self.fenced = True
                self.pending.clear()
                self._idle.set()
                log.warning("eeg stream taken over by another node", extra={"stream": self.sid})
                self.on_fenced(self)
                return
            self.pending = job.chunks + self.pending  # our own takeover: write again
        else:
            self.durable_end = max(self.durable_end, job.result)
            if self.writer is not None:
                self.writer.send(
                    Event(
                        ch=control_channel(self.sid),
                        seq=0,
                        kind="ack",
                        data={"stream": self.sid, "acked": self.durable_end},
                    )
                )
        if self.pending:
            self._flush_soon(0.0 if self.writer is None else self.interval)
        else:
            self._idle.set()

    def persist_failed(self, job: ChunkJob, exc: BaseException) -> None:
        """A chunk job did not commit: its chunks are written again later."""
        self._in_flight = None
        self.pending = job.chunks + self.pending
        self.count("persist_failure", 0)
        log.warning(
            "eeg chunks not stored; retrying",
            extra={"stream": self.sid, "error": type(exc).__name__},
        )
        self._flush_soon(max(self.interval, 1.0))

    async def drain(self, timeout_s: float = 10.0) -> bool:
        """Write everything pending now; True once it is committed (False: timed out)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return not self.pending

    def stop(self) -> None:
        """Forget the timer (the node is closing or the stream moved)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- clock ------------------------------------------------------------------------------
    def clock(self, t0: int, hub_us: int, t1: int) -> tuple[int, int] | None:
        """Take a finished round: keep the offset of the lowest round trip.

        Returns ``(offset_us, rtt_us)`` when it is the best so far, else None.
        """
        rtt = t1 - t0
        if rtt < 0 or rtt > 10_000_000:
            return None
        offset = hub_us - (t0 + t1) // 2
        if self.clock_best is None or rtt < self.clock_best[0]:
            self.clock_best = (rtt, offset)
            return offset, rtt
        return None


def now_us() -> int:
    """Wall-clock microseconds (the hub's clock of the clock mapping)."""
    return time.time_ns() // 1000
