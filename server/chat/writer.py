"""Chat sends become jobs of the node's write sequence: stored with their audit entries.

:meth:`ChatWriter.submit` queues a message and returns a future that resolves
once the transaction storing it has committed, with its seq. Sends made while
no transaction has taken the current batch join it, so a busy node commits
many sends per transaction (one commit, one fsync) without any timer: a lone
send is written at once. The batch is a :class:`~server.store.jobs.WriteJob`
of the node's writer (the audit trail's), committed in the same transaction as
the pending audit entries and with one ``create`` audit entry per new message
(``chat_message``, ``<conv>.<seq>``): a message that was acknowledged always
has its audit entry, even after a ``kill -9``.

In the transaction, per batch: one duplicate lookup of every (conversation,
sender, client id) key on the unique index (cost independent of history),
one seq allocation per conversation, one insert. After the commit,
``on_commit(conv, events)`` is called in seq order per conversation (it must
not block), then the futures resolve.

Errors (on the future): a transaction that fails with an ``IntegrityError``
(another node stored the same client id meanwhile) is retried once; any other
failure fails every send of the batch with that exception (nothing of the
batch was stored: clients retry with the same client id).
:class:`~server.chat.store.NoSuchConversation` fails only that conversation's
sends. :meth:`submit` raises :class:`WriterClosedError` after :meth:`close`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from protocol.chat import ChatEvent
from server.audit.events import AuditEvent
from server.chat import store
from server.security.crypto import Keyring
from server.store.jobs import JobWriter

log = logging.getLogger(__name__)

OnCommit = Callable[[str, list[ChatEvent]], None]


class WriterClosedError(RuntimeError):
    """The writer is closed: the message was NOT stored."""


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
    audit: AuditEvent  # the ``create`` entry, its target id set once the seq is known
    future: asyncio.Future[Stored] = field(repr=False)


class _Batch:
    """One job: the sends of one transaction."""

    def __init__(self, writer: ChatWriter, pending: list[_Pending], retried: bool) -> None:
        self.writer = writer
        self.pending = pending
        self.retried = retried
        self.open = True
        self.results: list[Stored | BaseException] = []
        self.published: dict[str, list[ChatEvent]] = {}

    def taken(self) -> None:
        self.open = False
        if self.writer._batch is self:
            self.writer._batch = None

    def apply(self, conn: Connection) -> list[AuditEvent]:
        keys = self.writer._keys
        batch = self.pending
        results: list[Stored | BaseException] = [Stored(0, False)] * len(batch)
        published: dict[str, list[ChatEvent]] = {}
        audit: list[AuditEvent] = []
        ids = [(p.conv, p.sender, p.client_msg_id) for p in batch]
        seen = store.existing_ids(conn, ids)
        fresh: dict[str, list[int]] = defaultdict(list)  # conv -> batch indexes
        first_of: dict[tuple[str, str, str], int] = {}
        repeat_of: dict[int, int] = {}  # batch index -> index of the same key earlier
        for i, key in enumerate(ids):
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
                first = store.allocate(conn, conv, len(idxs))
            except store.NoSuchConversation as exc:
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
                        seq=seq, kind="message", sender=p.sender, client_msg_id=p.client_msg_id,
                        at=at // 1000, text=p.text, record=p.record, version=1,
                    )
                )  # fmt: skip
                audit.append(p.audit.retarget(f"{conv}.{seq}"))
            published[conv] = evs
        store.insert_messages(conn, keys, rows)
        for i, j in repeat_of.items():
            original = results[j]
            results[i] = Stored(original.seq, True) if isinstance(original, Stored) else original
        self.results, self.published = results, published
        return audit

    def done(self) -> None:
        w = self.writer
        w.batches += 1
        w.written += sum(len(evs) for evs in self.published.values())
        for conv, evs in self.published.items():
            try:
                w._on_commit(conv, evs)
            except Exception:
                log.exception("chat publish callback failed")
        for p, res in zip(self.pending, self.results, strict=True):
            if p.future.done():
                continue
            if isinstance(res, BaseException):
                p.future.set_exception(res)
            else:
                p.future.set_result(res)

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, IntegrityError) and not self.retried:
            try:  # another node stored one of these client ids meanwhile: look again
                self.writer._submit_batch(self.pending, retried=True)
                return
            except RuntimeError as closed:
                exc = closed
        for p in self.pending:
            if not p.future.done():
                p.future.set_exception(exc)


class ChatWriter:
    """Batches chat sends into jobs of the node's writer; see the module docstring."""

    def __init__(self, writer: JobWriter, keys: Keyring, on_commit: OnCommit) -> None:
        self._writer, self._keys, self._on_commit = writer, keys, on_commit
        self._batch: _Batch | None = None
        self._closing = False
        self.batches = 0
        self.written = 0

    @property
    def running(self) -> bool:
        """True until :meth:`close`."""
        return not self._closing

    async def close(self) -> None:
        """Refuse new sends (the node writer commits those already queued)."""
        self._closing = True

    def submit(
        self,
        conv: str,
        sender: str,
        client_msg_id: str,
        text: str,
        record: str | None,
        audit: AuditEvent,
    ) -> asyncio.Future[Stored]:
        """Queue a message; the future resolves once it is committed (see the module doc).

        ``audit`` is the message's ``create`` entry (its target id is filled in
        with ``<conv>.<seq>``). Raises WriterClosedError when the writer is
        closed or the node writer refuses the job.
        """
        if self._closing:
            raise WriterClosedError("chat writer is closed")
        fut: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        pending = _Pending(conv, sender, client_msg_id, text, record, audit, fut)
        batch = self._batch
        if batch is not None and batch.open:
            batch.pending.append(pending)
        else:
            self._submit_batch([pending], retried=False)
        return fut

    def _submit_batch(self, pending: list[_Pending], *, retried: bool) -> None:
        batch = _Batch(self, pending, retried)
        try:
            self._writer.submit(batch)
        except RuntimeError as exc:
            raise WriterClosedError("the node writer is not running") from exc
        if not retried:
            self._batch = batch
