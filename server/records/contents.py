"""Document contents in and out: chunked, sealed, type-checked, size-limited, streamed.

:meth:`Contents.upload` reads a body stream, cuts it into chunks of
``records_chunk_bytes``, checks the first bytes (:mod:`server.records.sniff`),
seals each chunk with the record's data key and hands them to the blob store
as they come: at most one chunk (plus the store's batch) is held in memory,
whatever the size. Past ``records_max_upload_bytes`` it stops with
``payload_too_large``; an unknown type stops it with ``unsupported_media_type``.
What was written of a refused or broken upload is deleted; the blob row stays
``pending`` until the caller's commit marks it ``ready``
(:func:`server.records.store.ready_blob`), so a crash leaves only pending
blobs, deleted by ``medhub retention run``.

:meth:`Contents.download` streams the clear chunks of a stored blob.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import sqlalchemy as sa

from server.accounts.errors import ApiError
from server.records import store
from server.records.blobs import BlobStore
from server.records.sealing import RecordCipher
from server.records.sniff import SNIFF_BYTES, media_type
from server.records.tables import record_blobs
from server.store.db import Database
from server.store.ids import new_id


@dataclass(frozen=True, slots=True)
class Uploaded:
    """A content written (pending until committed)."""

    blob_id: str
    media_type: str
    size: int
    chunks: int


class Contents:
    """Uploads and downloads through a :class:`~server.records.blobs.BlobStore`."""

    def __init__(self, db: Database, blobs: BlobStore, chunk_bytes: int, max_bytes: int) -> None:
        self.db = db
        self.blobs = blobs
        self.chunk_bytes = chunk_bytes
        self.max_bytes = max_bytes

    async def upload(
        self, cipher: RecordCipher, body: AsyncIterator[bytes], declared: int | None = None
    ) -> Uploaded:
        """Store ``body`` as a new pending blob of ``cipher``'s record.

        ``declared``: the request's Content-Length (over the limit: refused before
        anything is read). Raises ``ApiError`` (``payload_too_large``,
        ``unsupported_media_type``, ``bad_request`` for an empty body) and the
        store's errors.
        """
        if declared is not None and declared > self.max_bytes:
            raise ApiError("payload_too_large")
        blob_id = new_id("b")
        now = int(time.time() * 1e6)
        kind = self.blobs.kind
        await self.db.run(lambda c: store.insert_blob(c, blob_id, cipher.record_id, kind, now))
        found: list[str] = []
        size = 0

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal size
            pending = bytearray()
            held: bytes | None = None  # one chunk held back: the last one is sealed as last
            seq = 0
            async for data in body:
                size += len(data)
                if size > self.max_bytes:
                    raise ApiError("payload_too_large")
                pending += data
                if not found and len(pending) < SNIFF_BYTES:
                    continue
                if not found:
                    found.append(_sniffed(bytes(pending[:SNIFF_BYTES])))
                while len(pending) >= self.chunk_bytes:
                    if held is not None:
                        yield cipher.seal_chunk(blob_id, seq, False, held)
                        seq += 1
                    held = bytes(pending[: self.chunk_bytes])
                    del pending[: self.chunk_bytes]
            if not found:
                if not pending:
                    raise ApiError("bad_request", "the content is empty")
                found.append(_sniffed(bytes(pending)))
            if pending:
                if held is not None:
                    yield cipher.seal_chunk(blob_id, seq, False, held)
                    seq += 1
                held = bytes(pending)
            if held is not None:
                yield cipher.seal_chunk(blob_id, seq, True, held)

        try:
            count = await self.blobs.put(blob_id, chunks())
        except BaseException:
            with contextlib.suppress(Exception):
                await self.discard(blob_id)
            raise
        return Uploaded(blob_id, found[0], size, count)

    async def discard(self, blob_id: str) -> None:
        """Delete a blob that was not committed (its chunks, then its row)."""
        await self.blobs.delete(blob_id, "hot")
        await self.db.run(
            lambda c: c.execute(
                sa.delete(record_blobs).where(
                    record_blobs.c.id == blob_id, record_blobs.c.state == "pending"
                )
            )
        )

    async def download(self, cipher: RecordCipher, blob: store.Blob) -> AsyncIterator[bytes]:
        """The clear content of ``blob``, chunk by chunk.

        Raises :class:`~server.security.crypto.CryptoError` for a chunk that does
        not open (altered, moved, cut) and the store's errors.
        """
        last = blob.chunks - 1
        seq = 0
        async for sealed in self.blobs.get(
            blob.id, "cold" if blob.area == "cold" else "hot", blob.chunks
        ):
            yield cipher.open_chunk(blob.id, seq, seq == last, sealed)
            seq += 1


def _sniffed(head: bytes) -> str:
    kind = media_type(head)
    if kind is None:
        raise ApiError("unsupported_media_type", "send a PDF, PNG, JPEG, WebP, EDF or BDF file")
    return kind
