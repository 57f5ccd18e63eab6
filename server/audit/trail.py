"""The audit trail the hub calls: ``record`` on the request path, a batching writer behind.

Usage (the composition root)::

    trail = AuditTrail.from_settings(settings, db)
    await trail.start()
    ...
    trail.record(AuditEvent(action=Action.READ, actor=uid, ...))   # O(1), never blocks
    seq = await trail.record_durable(event)   # returns once committed (admin, export)
    ...
    await trail.close()   # after the connections are closed: flushes everything

The trail's writer is the node's one write sequence: capabilities hand it
:class:`~server.store.jobs.WriteJob` s (:meth:`AuditTrail.submit`, chat
batches) and it commits them in the same transaction as the pending audit
entries, with the audit events the jobs return (a chat message and its
``create`` entry commit together, or neither does).

Guarantees:

* ``record`` appends to an in-memory queue and returns (no I/O, no await). A
  background task commits batches of up to ``batch_max`` entries, waiting at
  most ``flush_interval_ms`` to fill one when only audit entries are waiting
  (not at all when a job, a durable entry, a flush or close is waiting). Each
  batch is one transaction (:meth:`server.store.db.Database.run`: one hand-off
  to the database thread) that locks the chain head, so several processes
  writing the same database still form one chain. Entries are encoded before
  the transaction takes the lock; inside it, only the HMAC chain is computed.
* A job fails with the transaction it was in (its clients retry, e.g. a chat
  send with the same client id); the audit entries of that transaction are
  retried without it.
* ``record`` never drops an entry. Past ``queue_max`` queued entries it still
  accepts, counts ``stats.overflow`` and reports ``saturated`` (for /readyz);
  ``record_durable`` and :meth:`wait_capacity` wait until the queue is below
  ``queue_max`` (backpressure for callers that can wait).
* A failed transaction is retried with backoff (``retry_max_s``) until it
  commits; a committed batch is never retried.
* A checkpoint ``(seq, tag, time)`` goes to the external sink after a batch
  holding a durable entry, after ``checkpoint_every`` entries, after
  ``checkpoint_interval_s`` seconds, on :meth:`flush` and on :meth:`close`.
* A crash loses what ``record`` queued and no batch has committed yet (at most
  about ``flush_interval_ms`` of traffic plus any backlog); never an entry
  whose ``record_durable`` returned, nor one covered by a returned ``flush``.

Not thread-safe: call every method from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from server.audit import chain, store
from server.audit.checkpoints import CheckpointSink, FileCheckpointSink
from server.audit.events import ID_PATTERN, AuditEvent
from server.audit.keys import current_key
from server.store.db import Database
from server.store.jobs import WriteJob

if TYPE_CHECKING:
    from server.config import Settings

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_Item = tuple[AuditEvent, datetime, "asyncio.Future[int] | None"]


def utc_now() -> datetime:
    """The default clock: the current UTC time."""
    return datetime.now(UTC)


def to_us(at: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (at - _EPOCH) // _US


class AuditClosedError(RuntimeError):
    """``record`` was called after ``close`` began: the event was NOT recorded."""


class AuditWriteError(RuntimeError):
    """The writer could not commit: raised by ``flush``/``record_durable``/``close``."""


@dataclass(frozen=True, slots=True)
class TrailStats:
    """Counters for metrics: all monotonic except ``queued``."""

    recorded: int  # accepted by record / record_durable
    written: int  # committed to the database
    batches: int  # committed transactions
    overflow: int  # accepted while more than queue_max entries were queued
    write_errors: int  # failed transactions (each retried)
    checkpoints: int  # checkpoints written to the sink
    checkpoint_errors: int  # checkpoint writes that failed (retried at the next one)
    queued: int  # entries waiting now
    queue_high_water: int  # most entries ever waiting


class AuditTrail:
    """The audit writer of one process; see the module docstring for guarantees.

    ``key`` (32 bytes) under ``key_id`` tags new entries; ``node_id`` is stored
    in each entry; ``sink`` receives checkpoints (``None``: none written);
    ``clock`` returns the current UTC time. Limits: ``queue_max`` entries
    queued (past it: overflow, see above), ``batch_max`` entries per
    transaction, ``flush_interval_ms`` milliseconds to fill a batch,
    ``checkpoint_every`` entries / ``checkpoint_interval_s`` seconds between
    checkpoints, ``retry_max_s`` seconds of backoff between failed writes.

    Raises ``ValueError`` for a bad key, node id or limit.
    """

    def __init__(
        self, db: Database, *, key_id: str, key: bytes, node_id: str,
        sink: CheckpointSink | None = None, clock: Clock = utc_now,
        queue_max: int = 100_000, batch_max: int = 1000, flush_interval_ms: int = 50,
        checkpoint_every: int = 1000, checkpoint_interval_s: float = 1.0,
        retry_max_s: float = 5.0,
    ) -> None:  # fmt: skip
        if len(key) != 32:
            raise ValueError("audit key must be 32 bytes")
        if not ID_PATTERN.fullmatch(node_id) or len(node_id) > 64 or len(key_id) > 32:
            raise ValueError("node id must be an id of at most 64 chars, key id at most 32")
        if min(queue_max, batch_max, flush_interval_ms, checkpoint_every) <= 0:
            raise ValueError("audit limits must be > 0")
        self._db, self._key, self._key_id, self._node = db, key, key_id, node_id
        self._sink, self._clock = sink, clock
        self._queue_max, self._batch_max = queue_max, batch_max
        self._interval = flush_interval_ms / 1000
        self._ckpt_every, self._ckpt_interval = checkpoint_every, checkpoint_interval_s
        self._retry_max = retry_max_s
        self._queue: deque[_Item] = deque()
        self._jobs: list[WriteJob] = []
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._task: asyncio.Task[None] | None = None
        self._accepting, self._closing = True, False
        self._failed: BaseException | None = None
        self._enqueued = self._committed = self._durable_pending = 0
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._head_seq, self._head_tag = 0, chain.GENESIS_TAG
        self._ckpt_seq, self._since_ckpt, self._ckpt_at = 0, 0, 0.0
        self._batches = self._overflow = self._errors = self._high = 0
        self._checkpoints = self._ckpt_errors = 0

    @classmethod
    def from_settings(
        cls, settings: Settings, db: Database, *, sink: CheckpointSink | None = None,
        clock: Clock = utc_now,
    ) -> AuditTrail:  # fmt: skip
        """A trail configured by the ``audit_*`` settings, checkpoints to the configured file.

        ``settings`` must hold the secrets (``ensure_secrets``); raises
        :class:`server.audit.keys.AuditKeyError` otherwise.
        """
        key_id, key = current_key(settings)
        if sink is None:
            sink = FileCheckpointSink(settings.effective_checkpoint_path)
        return cls(
            db, key_id=key_id, key=key, node_id=settings.effective_node_id,
            sink=sink,
            clock=clock, queue_max=settings.audit_queue_max, batch_max=settings.audit_batch_max,
            flush_interval_ms=settings.audit_flush_interval_ms,
            checkpoint_every=settings.audit_checkpoint_every,
        )  # fmt: skip

    # -- the request path ----------------------------------------------------------

    def record(self, event: AuditEvent) -> None:
        """Queue ``event`` stamped with the clock's time; O(1), never blocks, never drops.

        Raises :class:`AuditClosedError` once :meth:`close` has begun, and
        :class:`AuditWriteError` if the writer died (the event is not recorded:
        the caller should refuse the operation).
        """
        if not self._accepting:
            self._refuse()
        queue = self._queue
        queue.append((event, self._clock(), None))
        self._enqueued += 1
        n = len(queue)
        if n == 1 or n >= self._batch_max:
            self._wake.set()
        if n > self._high:
            self._high = n
        if n >= self._queue_max:
            self._space.clear()
            if n > self._queue_max:
                self._overflow += 1

    def submit(self, job: WriteJob) -> None:
        """Queue ``job`` for the next transaction, with the pending audit entries; O(1).

        Raises :class:`AuditClosedError` once :meth:`close` has begun and
        :class:`AuditWriteError` if the writer died: the job was NOT queued.
        """
        if not self._accepting:
            self._refuse()
        self._jobs.append(job)
        self._wake.set()

    async def record_durable(self, event: AuditEvent) -> int:
        """Record ``event`` and return its seq once it is committed and checkpointed.

        Waits for queue space first. Raises :class:`AuditClosedError` or
        :class:`AuditWriteError` (the entry may then not be written).
        """
        await self.wait_capacity()
        if not self._accepting:
            self._refuse()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((event, self._clock(), fut))
        self._enqueued += 1
        self._durable_pending += 1
        self._wake.set()
        return await asyncio.shield(fut)

    async def wait_capacity(self) -> None:
        """Return once fewer than ``queue_max`` entries are queued (or the trail closes)."""
        while len(self._queue) >= self._queue_max and self._accepting:
            self._space.clear()
            await self._space.wait()

    def _refuse(self) -> None:
        if self._failed is not None:
            raise AuditWriteError("the audit writer has failed") from self._failed
        raise AuditClosedError("the audit trail is closed")

    # -- lifecycle -----------------------------------------------------------------

    @property
    def saturated(self) -> bool:
        """True while ``queue_max`` or more entries wait (report not-ready)."""
        return len(self._queue) >= self._queue_max

    @property
    def stats(self) -> TrailStats:
        """A snapshot of the counters."""
        return TrailStats(
            self._enqueued, self._committed, self._batches, self._overflow, self._errors,
            self._checkpoints, self._ckpt_errors, len(self._queue), self._high,
        )  # fmt: skip

    async def start(self) -> None:
        """Start the writer task (idempotent). The database must be migrated."""
        if self._task is None:
            self._ckpt_at = asyncio.get_running_loop().time()
            self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def flush(self) -> None:
        """Return once every entry recorded before the call is committed and checkpointed.

        Raises ``RuntimeError`` before :meth:`start`, :class:`AuditWriteError`
        if the writer failed.
        """
        if self._task is None:
            raise RuntimeError("AuditTrail.start() was not called")
        if self._failed is not None:
            raise AuditWriteError("the audit writer has failed") from self._failed
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append((self._enqueued, fut))
        self._wake.set()
        await asyncio.shield(fut)

    async def close(self, timeout_s: float | None = None) -> None:
        """Stop accepting, write everything queued, checkpoint, stop the writer.

        Call it after the connections that record events are closed. With
        ``timeout_s`` (seconds), gives up after that long and raises
        :class:`AuditWriteError` naming how many entries were not written.
        """
        self._accepting, self._closing = False, True
        self._space.set()
        if self._task is None:
            if self._queue:
                raise AuditWriteError(f"{len(self._queue)} entries recorded but never started")
            return
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._fail_waiters(AuditWriteError("audit trail closed before writing"))
            raise AuditWriteError(f"{len(self._queue)} audit entries not written") from None
        if self._failed is not None:
            raise AuditWriteError(f"{len(self._queue)} audit entries not written") from self._failed

    # -- the writer ----------------------------------------------------------------

    async def _sleep(self, seconds: float | None) -> bool:
        """Wait for a wake-up; False when ``seconds`` passed first."""
        self._wake.clear()
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            return False
        return True

    def _urgent(self) -> bool:
        return bool(self._jobs or self._durable_pending or self._flush_waiters or self._closing)

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._failed, self._accepting = exc, False
            log.critical("audit writer failed", exc_info=True)
            self._fail_waiters(AuditWriteError("the audit writer has failed"))
            raise

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        while True:
            if not queue and not self._jobs:
                if self._flush_waiters:
                    await self._checkpoint()
                    self._resolve_flushes()
                    continue
                if self._closing:
                    await self._checkpoint()
                    return
                dirty = self._head_seq > self._ckpt_seq
                timeout = self._ckpt_at + self._ckpt_interval - loop.time() if dirty else None
                if not await self._sleep(None if timeout is None else max(timeout, 0.0)):
                    await self._checkpoint()
                continue
            if len(queue) < self._batch_max and not self._urgent():
                await self._sleep(self._interval)
            batch = [queue.popleft() for _ in range(min(len(queue), self._batch_max))]
            if len(queue) < self._queue_max:
                self._space.set()
            jobs, self._jobs = self._jobs, []
            for job in jobs:
                job.taken()
            await self._write(batch, jobs, loop)

    async def _write(
        self, batch: list[_Item], jobs: list[WriteJob], loop: asyncio.AbstractEventLoop
    ) -> None:
        delay = 0.05
        while True:
            try:
                entries = await self._commit(batch, jobs)
                break
            except Exception as exc:  # the database, or a job's own failure
                self._errors += 1
                log.error(
                    "write transaction failed",
                    extra={
                        "error": type(exc).__name__, "entries": len(batch), "jobs": len(jobs),
                        "retry_s": delay if batch else None,
                    },
                )  # fmt: skip
                failed, jobs = jobs, []
                for job in failed:  # their clients retry; our entries are retried alone
                    _call(job.failed, exc)
                if not batch:
                    return
                if not isinstance(exc, SQLAlchemyError | OSError) and failed:
                    continue  # a job broke the transaction: retry the entries at once
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
        for job in jobs:
            _call(job.done)
        self._committed += len(batch)
        self._batches += 1
        self._since_ckpt += len(batch)
        durable = [(fut, e.seq) for (_, _, fut), e in zip(batch, entries, strict=True) if fut]
        if (
            durable
            or self._since_ckpt >= self._ckpt_every
            or loop.time() - self._ckpt_at >= self._ckpt_interval
            or any(target <= self._committed for target, _ in self._flush_waiters)
        ):
            await self._checkpoint()
        self._durable_pending -= len(durable)
        for fut, seq in durable:
            if not fut.done():
                fut.set_result(seq)
        self._resolve_flushes()

    def _entry(self, ev: AuditEvent, at: datetime) -> tuple[chain.Entry, bytes]:
        """The entry of ``ev`` (seq and tag still unknown) and its canonical bytes."""
        e = chain.Entry(
            0, to_us(ev.at or at), self._node, ev.actor, ev.acting_for, ev.role, ev.org,
            ev.action.value, ev.target_type, ev.target_id, ev.result.value, ev.reason,
            ev.source, ev.request_id, self._key_id,
        )  # fmt: skip
        return e, chain.canonical(e)

    async def _commit(self, batch: list[_Item], jobs: list[WriteJob]) -> list[chain.Entry]:
        """One transaction: the jobs' writes, then every entry sealed onto the chain.

        Returns the sealed entries of ``batch`` (the jobs' own entries follow them).
        """
        key, clock = self._key, self._clock
        prepared: list[tuple[chain.Entry, bytes]] = []

        def encode() -> None:  # before the transaction takes the lock
            prepared.extend(self._entry(ev, at) for ev, at, _ in batch)

        def transaction(conn: Connection) -> tuple[list[chain.Entry], int, bytes]:
            extra: list[AuditEvent] = []
            for job in jobs:
                extra.extend(job.apply(conn))
            now = clock()
            todo = prepared + [self._entry(ev, now) for ev in extra]
            seq, tag = store.lock_head(conn)
            sealed: list[chain.Entry] = []
            for e, body in todo:
                seq += 1
                tag = chain.compute_tag(key, tag, seq, body)
                sealed.append(e._replace(seq=seq, tag=tag))
            store.append(conn, sealed, to_us(clock()))
            return sealed, seq, tag

        sealed, seq, tag = await self._db.run(transaction, durable=True, before=encode)
        self._head_seq, self._head_tag = seq, tag
        return sealed[: len(batch)]

    async def _checkpoint(self) -> None:
        """Write the head we last committed to the sink, if it moved since the last one."""
        self._ckpt_at = asyncio.get_running_loop().time()
        self._since_ckpt = 0
        if self._sink is None or self._head_seq <= self._ckpt_seq:
            return
        cp = chain.sign_checkpoint(
            self._key, self._key_id, chain.CheckpointKind.CHECKPOINT, self._head_seq,
            self._head_tag, to_us(self._clock()), self._node,
        )  # fmt: skip
        try:
            await self._sink.append(cp)
        except OSError as exc:
            self._ckpt_errors += 1
            log.error("audit checkpoint write failed", extra={"error": type(exc).__name__})
            return
        self._checkpoints += 1
        self._ckpt_seq = cp.seq

    def _resolve_flushes(self) -> None:
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for target, fut in self._flush_waiters:
            if target > self._committed:
                keep.append((target, fut))
            elif not fut.done():
                fut.set_result(None)
        self._flush_waiters = keep

    def _fail_waiters(self, exc: BaseException) -> None:
        for _, waiter in self._flush_waiters:
            if not waiter.done():
                waiter.set_exception(exc)
        self._flush_waiters = []
        for _, _, fut in self._queue:
            if fut is not None and not fut.done():
                fut.set_exception(exc)


def _call(callback: Callable[..., None], *args: object) -> None:
    """Run a job's callback; a failure there is logged and never stops the writer."""
    try:
        callback(*args)
    except Exception:
        log.exception("write job callback failed")
