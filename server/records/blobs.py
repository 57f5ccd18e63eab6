"""The blob-store interface (document contents, already sealed) and its database implementation.

A blob is a sequence of sealed chunks (:mod:`server.records.sealing`), each at
most ``records_chunk_bytes`` + 28 bytes, written and read as a stream: no
implementation holds a whole content in memory. Blobs live in an *area*:
``hot`` (where uploads go) or ``cold`` (the archive, still sealed). Their
metadata (state, area, size, chunk count) is in ``record_blobs``, written by
the caller (:mod:`server.records.contents`).

Implementations:

* :class:`DatabaseBlobStore` (``records_store = "db"``, the default): chunk
  rows in ``record_blob_chunks`` (hot) and ``record_blob_chunks_cold`` (cold),
  so every node sees them and every backup holds them. Writes go in batches of
  about 1 MiB per transaction (:meth:`server.store.db.Database.run`: on SQLite
  the one database writer thread, so uploads never fight the audit writer for
  the lock).
* :class:`server.records.s3.S3BlobStore` (``records_store = "s3"``): one object
  per blob and area in an S3-compatible bucket (docs/records.md).

Every method raises the store's own errors (SQLAlchemy, botocore); a missing
chunk raises :class:`BlobMissingError`.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.records.tables import record_blob_chunks, record_blob_chunks_cold
from server.store.db import Database

Area = Literal["hot", "cold"]
T = TypeVar("T")
#: Bytes of sealed chunks written (or read) per database transaction.
BATCH_BYTES = 1 << 20


class BlobMissingError(LookupError):
    """A blob (or one of its chunks) is not where its metadata says it is."""


class BlobStore(Protocol):
    """Where sealed document contents live (see the module docstring)."""

    #: ``"db"`` or ``"s3"`` (stored in ``record_blobs.store``).
    kind: str

    async def put(self, blob_id: str, chunks: AsyncIterator[bytes]) -> int:
        """Store the sealed ``chunks`` of a new blob in the hot area; their count.

        On failure the caller must :meth:`delete` what may have been written.
        """
        ...

    def get(self, blob_id: str, area: Area, count: int) -> AsyncIterator[bytes]:
        """The ``count`` sealed chunks of ``blob_id`` in order (raises BlobMissingError)."""
        ...

    async def move(
        self, blob_id: str, src: Area, dst: Area, count: int, commit: Callable[[Connection], T]
    ) -> T:
        """Move a blob to another area; ``commit(conn)`` records the move (in the
        database transaction of the move for the database store, after the copy and
        before the old copy is deleted for S3). Returns what ``commit`` returns."""
        ...

    async def delete(self, blob_id: str, area: Area) -> None:
        """Delete a blob's chunks in ``area`` (nothing there: nothing done)."""
        ...


def _all(query: sa.Select[Any], conn: Connection) -> list[Any]:
    return list(conn.execute(query).all())


def chunk_table(area: Area) -> sa.Table:
    """The chunk table of an area."""
    return record_blob_chunks if area == "hot" else record_blob_chunks_cold


class DatabaseBlobStore:
    """Blobs as chunk rows in the database (see the module docstring)."""

    kind = "db"

    def __init__(self, db: Database, chunk_bytes: int) -> None:
        self.db = db
        self.per_batch = max(1, BATCH_BYTES // chunk_bytes)

    async def put(self, blob_id: str, chunks: AsyncIterator[bytes]) -> int:
        table = record_blob_chunks
        batch: list[dict[str, object]] = []
        count = 0

        async def flush() -> None:
            rows = list(batch)
            batch.clear()
            await self.db.run(lambda c: c.execute(table.insert(), rows))

        async for sealed in chunks:
            batch.append({"blob_id": blob_id, "seq": count, "data": sealed})
            count += 1
            if len(batch) >= self.per_batch:
                await flush()
        if batch:
            await flush()
        return count

    async def get(self, blob_id: str, area: Area, count: int) -> AsyncIterator[bytes]:
        c = chunk_table(area).c
        for first in range(0, count, self.per_batch):
            last = min(count, first + self.per_batch) - 1
            query = (
                sa.select(c.seq, c.data)
                .where(c.blob_id == blob_id, c.seq >= first, c.seq <= last)
                .order_by(c.seq)
            )
            rows = await self.db.run(functools.partial(_all, query), readonly=True)
            if [r.seq for r in rows] != list(range(first, last + 1)):
                raise BlobMissingError(blob_id)
            for r in rows:
                yield bytes(r.data)

    async def move(
        self, blob_id: str, src: Area, dst: Area, count: int, commit: Callable[[Connection], T]
    ) -> T:
        source, target = chunk_table(src), chunk_table(dst)

        def moved(conn: Connection) -> T:
            s = source.c
            columns = sa.select(s.blob_id, s.seq, s.data).where(s.blob_id == blob_id)
            copied = conn.execute(target.insert().from_select(["blob_id", "seq", "data"], columns))
            if copied.rowcount not in (-1, count):
                raise BlobMissingError(blob_id)
            conn.execute(source.delete().where(s.blob_id == blob_id))
            return commit(conn)

        return await self.db.run(moved)

    async def delete(self, blob_id: str, area: Area) -> None:
        table = chunk_table(area)
        await self.db.run(lambda c: c.execute(table.delete().where(table.c.blob_id == blob_id)))
