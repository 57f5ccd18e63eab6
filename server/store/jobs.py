"""Write jobs: what a capability hands to the node's one write sequence.

Each node has ONE writer (the audit trail's, :mod:`server.audit.trail`): it
takes every pending job and every pending audit entry and commits them in one
durable transaction (one commit, one fsync), so chat messages and audit
entries never fight over the database lock, and an entry about a change is
committed with the change itself.

A job's lifecycle, driven by the writer:

1. :meth:`WriteJob.taken` (on the event loop): the job leaves the queue for a
   transaction; after this it must not change.
2. :meth:`WriteJob.apply` (in the database thread, inside the transaction):
   do the writes and return the audit events to seal in the same commit.
   Raise to abort the transaction (every job of it fails).
3. :meth:`WriteJob.done` after the commit, or :meth:`WriteJob.failed` with
   the exception when the transaction did not commit (on the event loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from sqlalchemy.engine import Connection

from server.audit.events import AuditEvent


class WriteJob(Protocol):
    """Work committed in the node's next write transaction (see the module docstring)."""

    def taken(self) -> None:
        """The job leaves the queue for a transaction (event loop)."""
        ...

    def apply(self, conn: Connection) -> list[AuditEvent]:
        """Write, inside the transaction (database thread); the audit events to commit with it."""
        ...

    def done(self) -> None:
        """The transaction committed (event loop)."""
        ...

    def failed(self, exc: BaseException) -> None:
        """The transaction did not commit (event loop); nothing of the job was written."""
        ...


class JobWriter(Protocol):
    """The node's write sequence (the audit trail): takes jobs, never blocks."""

    def submit(self, job: WriteJob) -> None:
        """Queue ``job`` for the next transaction (O(1)).

        Raises ``RuntimeError`` subclasses when the writer is closed or failed:
        the job was not queued.
        """
        ...


T = TypeVar("T")


class FunctionJob(Generic[T]):
    """A job running ``fn(conn) -> (value, audit events)`` once; :attr:`future` gets the value.

    For single writes that must commit with their audit entries (an edit, a
    receipt, a new conversation): ``await write(writer, fn)``.
    """

    def __init__(self, fn: Callable[[Connection], tuple[T, list[AuditEvent]]]) -> None:
        self._fn = fn
        self._value: T | None = None
        self.future: asyncio.Future[T] = asyncio.get_running_loop().create_future()

    def taken(self) -> None:
        """Nothing to seal: the function is fixed."""

    def apply(self, conn: Connection) -> list[AuditEvent]:
        """Run the function inside the transaction."""
        self._value, events = self._fn(conn)
        return events

    def done(self) -> None:
        """Resolve the future with the function's value."""
        if not self.future.done():
            self.future.set_result(self._value)  # type: ignore[arg-type]

    def failed(self, exc: BaseException) -> None:
        """Fail the future with the transaction's exception."""
        if not self.future.done():
            self.future.set_exception(exc)


async def write(writer: JobWriter, fn: Callable[[Connection], tuple[T, list[AuditEvent]]]) -> T:
    """Commit ``fn``'s writes and audit events in the node's next transaction; its value.

    Raises what ``fn`` raises, the database's errors, and the writer's
    ``RuntimeError`` when it is closed (nothing was written then).
    """
    job = FunctionJob(fn)
    writer.submit(job)
    return await asyncio.shield(job.future)
