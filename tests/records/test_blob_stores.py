"""One test body for every blob store: the database's chunk rows and a real S3-compatible
server (SeaweedFS). Contents go in and out sealed and streamed, move to the cold area,
and a missing or cut content is an error, never a short answer."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from server.accounts.errors import ApiError
from server.records import store
from server.records.blobs import BlobMissingError, BlobStore, DatabaseBlobStore
from server.records.contents import Contents
from server.records.s3 import S3BlobStore
from server.records.sealing import RecordKeys
from server.records.sniff import media_type
from server.security.crypto import CryptoError, Keyring
from server.store.db import Database
from server.store.migrate import upgrade_to_head_async
from tests.records.conftest import edf, pdf
from tests.records.seaweed import BUCKET, SeaweedS3, seaweed

__all__ = ["seaweed"]
CHUNK = 64 * 1024


@pytest.fixture(params=["db", "s3"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[
        tuple[Database, BlobStore]]:  # fmt: skip
    url = f"sqlite+aiosqlite:///{tmp_path / 'blobs.db'}"
    await upgrade_to_head_async(url)
    async with Database(url) as db:
        if request.param == "db":
            yield db, DatabaseBlobStore(db, CHUNK)
        else:
            server: SeaweedS3 = request.getfixturevalue("seaweed")
            yield db, S3BlobStore(db, bucket=BUCKET, prefix=f"t-{os.urandom(4).hex()}/",
                                  part_bytes=5 << 20, client=server.client())  # fmt: skip


async def _body(data: bytes, piece: int = 10_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


async def _read(contents: Contents, cipher: object, db: Database, blob_id: str) -> bytes:
    blob = await db.run(lambda c: store.get_blob(c, blob_id), readonly=True)
    assert blob is not None
    return b"".join([c async for c in contents.download(cipher, blob)])  # type: ignore[arg-type]


async def _ready(db: Database, up: object) -> None:
    await db.run(lambda c: store.ready_blob(c, up.blob_id, up.size, up.chunks))  # type: ignore[attr-defined]


async def test_contents_round_trip_move_and_refusals(stores: tuple[Database, BlobStore]) -> None:
    db, blobs = stores
    contents = Contents(db, blobs, CHUNK, 16 << 20)
    keys = RecordKeys(Keyring({"r1": os.urandom(32)}, "r1"))
    cipher, _ = keys.new("d-0123456789abcdef0123")
    data = pdf(os.urandom(11 << 20))  # 11 MiB: 3 S3 parts, 177 chunks
    up = await contents.upload(cipher, _body(data, 300_000))
    assert (up.media_type, up.size, up.chunks) == (
        "application/pdf",
        len(data),
        -(-len(data) // CHUNK),
    )
    await _ready(db, up)
    assert await _read(contents, cipher, db, up.blob_id) == data
    done = await blobs.move(up.blob_id, "hot", "cold", up.chunks,
                            lambda c: store.set_blob_area(c, up.blob_id, "cold"))  # fmt: skip
    assert done is None
    assert await _read(contents, cipher, db, up.blob_id) == data  # from the cold area now
    with pytest.raises(BlobMissingError):
        async for _ in blobs.get(up.blob_id, "hot", up.chunks):
            pass
    other, _ = keys.new("d-ffffffffffffffffffff")  # another record's key does not open it
    blob = await db.run(lambda c: store.get_blob(c, up.blob_id), readonly=True)
    assert blob is not None
    with pytest.raises(CryptoError):
        async for _ in contents.download(other, blob):
            pass
    short = store.Blob(blob.id, blob.record_id, "ready", blob.store, "cold", blob.size, 3)
    with pytest.raises((CryptoError, BlobMissingError)):  # a content cut short is refused
        async for _ in contents.download(cipher, short):
            pass
    small = await contents.upload(cipher, _body(edf()))
    assert small.media_type == "application/edf"
    with pytest.raises(ApiError) as refused:
        await contents.upload(cipher, _body(b"#!/bin/sh\necho not a document\n" * 20))
    assert refused.value.code == "unsupported_media_type"
    tight = Contents(db, blobs, CHUNK, 100_000)
    with pytest.raises(ApiError) as refused:
        await tight.upload(cipher, _body(pdf(size=300_000)))
    assert refused.value.code == "payload_too_large"
    await blobs.delete(up.blob_id, "cold")
    with pytest.raises(BlobMissingError):
        async for _ in blobs.get(up.blob_id, "cold", up.chunks):
            pass
    from server.records.tables import record_blobs

    async with db.begin(readonly=True) as conn:  # refused uploads left no row behind
        states = [r.state for r in await conn.execute(sa.select(record_blobs))]
    assert sorted(states) == ["pending", "ready"]  # the EDF (never committed) and the PDF


def test_types_are_told_by_their_first_bytes() -> None:
    assert media_type(pdf()) == "application/pdf"
    assert media_type(b"\x89PNG\r\n\x1a\n" + b"\0" * 8) == "image/png"
    assert media_type(b"\xff\xd8\xff\xe0" + b"\0" * 8) == "image/jpeg"
    assert media_type(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert media_type(edf(3)[:256]) == "application/edf"
    assert media_type(b"\xffBIOSEMI" + edf()[8:256]) == "application/bdf"
    assert media_type(b"0       " + b"\x00" * 248) is None  # not an EDF header
    assert media_type(b"<html>%PDF-") is None
    assert media_type(b"") is None
