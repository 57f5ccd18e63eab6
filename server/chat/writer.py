"""The per-process chat writer: concurrent sends are committed together.

:meth:`ChatWriter.send` queues a message and returns once the transaction that
stores it has committed, with its seq. One background task takes everything
queued (up to ``batch_max``) and writes it in one transaction: the idempotency
lookup, the seq allocation of each conversation, and the inserts. While a
transaction runs, new sends queue up for the next one, so the number of
commits (and fsyncs) per second stays bounded whatever the send rate, with no
timer: a lone send is written at once.

After each commit, ``on_commit(conv, [(seq, event)...])`` is called (in seq
order, per conversation) to publish the new events; it must not block.

Errors: a transaction that fails is retried once (another node may have
stored the same client id meanwhile); if it fails again, every send of the
batch gets the exception. Any other failure of a batch (a bug, an encoding
error) is logged and fails only that batch with :class:`WriteFailedError`:
the writer task keeps running, so later sends are written. ``send`` raises
LookupError for an unknown conversation (only that send fails) and
:class:`WriterClosedError` after :meth:`close`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from protocol.chat import ChatEvent
from server.chat import store
from server.security.crypto import Keyring
from server.store.db import Database

log = logging.getLogger(__name__)

OnCommit = Callable[[str, list[ChatEvent]], None]


class WriterClosedError(RuntimeError):
    """The writer is closed: the message was NOT stored."""


class WriteFailedError(RuntimeError):
    """The batch holding the message failed unexpectedly: it was NOT stored (retry)."""


@dataclass(frozen=True, slots=True)
class Stored:
    """The outcome of a send: its seq, and whether it had been stored before."""

    seq: int
    duplicate: bool


@dataclass(slots=True)
class _Pending:
    conv: str
    sender: str
    client_msg_id: str
    text: str
    record: str | None
    future: asyncio.Future[Stored] = field(repr=False)


class ChatWriter:
    """Batches chat sends into transactions; see the module docstring.

    ``batch_max`` is the most sends in one transaction; ``durable`` asks for a
    commit that survives a power loss (SQLite ``synchronous=FULL``).
    """

    def __init__(
        self,
        db: Database,
        keys: Keyring,
        on_commit: OnCommit,
        *,
        batch_max: int = 1000,
        durable: bool = True,
    ) -> None:
        if batch_max < 1:
            raise ValueError("batch_max must be >= 1")
        self._db, self._keys, self._on_commit = db, keys, on_commit
        self._batch_max, self._durable = batch_max, durable
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0
        self.written = 0

    @property
    def running(self) -> bool:
        """True while the writer task runs (it never stops on its own)."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the writer task (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="chat-writer")

    async def close(self) -> None:
        """Write what is queued, then stop. Later sends raise WriterClosedError."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def submit(
        self, conv: str, sender: str, client_msg_id: str, text: str, record: str | None
    ) -> asyncio.Future[Stored]:
        """Queue a message for the next batch; the future resolves once it is committed.

        Messages are committed in submission order. Raises WriterClosedError
        at once when the writer is not running; the future carries the other
        errors of the module docstring.
        """
        if self._closing or self._task is None or self._task.done():
            raise WriterClosedError("chat writer is not running")
        fut: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(conv, sender, client_msg_id, text, record, fut))
        self._wake.set()
        return fut

    async def send(
        self, conv: str, sender: str, client_msg_id: str, text: str, record: str | None
    ) -> Stored:
        """Store a message; return once committed. See the module docstring for errors."""
        return await asyncio.shield(self.submit(conv, sender, client_msg_id, text, record))

    async def _run(self) -> None:
        batch: list[_Pending] = []
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch = self._queue[: self._batch_max]
                del self._queue[: self._batch_max]
                try:
                    await self._write(batch)
                except Exception as exc:  # supervised: one bad batch never stops the writer
                    log.exception("chat batch failed", extra={"error": type(exc).__name__})
                    failure = WriteFailedError("chat batch failed")
                    failure.__cause__ = exc
                    self._fail(batch, failure)
                batch = []
        finally:  # cancelled (or a BaseException): nothing queued may wait forever
            gone = WriterClosedError("chat writer stopped")
            self._fail(batch, gone)
            self._fail(self._queue, gone)
            self._queue.clear()

    async def _write(self, batch: list[_Pending]) -> None:
        for attempt in (1, 2):
            try:
                outcome = await self._commit(batch)
                break
            except IntegrityError:
                if attempt == 2:
                    self._fail(batch, RuntimeError("chat write conflict"))
                    return
            except (SQLAlchemyError, OSError) as exc:
                log.error("chat batch write failed", extra={"error": type(exc).__name__})
                self._fail(batch, exc)
                return
        results, published = outcome
        self.batches += 1
        self.written += len(batch)
        for conv, evs in published.items():
            try:
                self._on_commit(conv, evs)
            except Exception:
                log.exception("chat publish callback failed")
        for p, res in zip(batch, results, strict=True):
            if p.future.done():
                continue
            if isinstance(res, BaseException):
                p.future.set_exception(res)
            else:
                p.future.set_result(res)

    async def _commit(
        self, batch: list[_Pending]
    ) -> tuple[list[Stored | BaseException], dict[str, list[ChatEvent]]]:
        results: list[Stored | BaseException] = [Stored(0, False)] * len(batch)
        published: dict[str, list[ChatEvent]] = {}
        async with self._db.begin(durable=self._durable) as conn:
            keys = [(p.conv, p.sender, p.client_msg_id) for p in batch]
            seen = await store.existing_ids(conn, keys)
            fresh: dict[str, list[int]] = defaultdict(list)  # conv -> batch indexes
            first_of: dict[tuple[str, str, str], int] = {}
            repeat_of: dict[int, int] = {}  # batch index -> index of the same key earlier
            for i, key in enumerate(keys):
                if key in seen:
                    results[i] = Stored(seen[key], True)
                elif key in first_of:
                    repeat_of[i] = first_of[key]
                else:
                    first_of[key] = i
                    fresh[key[0]].append(i)
            rows: list[store.NewMessage] = []
            at = store.now_us()
            for conv, idxs in fresh.items():
                try:
                    first = await store.allocate(conn, conv, len(idxs))
                except LookupError as exc:
                    for i in idxs:
                        results[i] = exc
                    continue
                evs: list[ChatEvent] = []
                for offset, i in enumerate(idxs):
                    p, seq = batch[i], first + offset
                    results[i] = Stored(seq, False)
                    rows.append(
                        store.NewMessage(conv, seq, p.sender, p.client_msg_id, p.text, p.record, at)
                    )
                    evs.append(
                        ChatEvent(
                            seq=seq, kind="message", sender=p.sender,
                            client_msg_id=p.client_msg_id, at=at // 1000, text=p.text,
                            record=p.record, version=1,
                        )
                    )  # fmt: skip
                published[conv] = evs
            await store.insert_messages(conn, self._keys, rows)
        for i, j in repeat_of.items():
            original = results[j]
            results[i] = Stored(original.seq, True) if isinstance(original, Stored) else original
        return results, published

    def _fail(self, batch: list[_Pending], exc: BaseException) -> None:
        for p in batch:
            if not p.future.done():
                p.future.set_exception(exc)
