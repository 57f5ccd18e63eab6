"""The S3-compatible blob store (``records_store = "s3"``), built on boto3.

One object per blob and area: ``<prefix><area>/<blob id>``. The object is the
blob's sealed chunks, each framed by its length (4 bytes, big-endian), so it
is read back as a stream, frame by frame. Uploads are S3 multipart uploads of
``records_s3_part_bytes`` parts (S3's minimum is 5 MiB): one part is the most
held in memory. Archiving copies the object to the cold prefix with the
storage class ``records_s3_cold_storage_class`` (a server-side copy), records
the move in the database, then deletes the hot object. Contents arrive here
already sealed with their record's data key; the bucket never sees clear data.

boto3 is synchronous: every call runs in a worker thread (``asyncio.to_thread``).
Credentials come from boto3's usual chain (environment, ``~/.aws``, instance
role), never from medhub's settings. Install with ``pip install 'medhub[s3]'``.

Raises botocore's errors (``ClientError``, ``BotoCoreError``) and
:class:`server.records.blobs.BlobMissingError` for a missing object or a
truncated frame.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from sqlalchemy.engine import Connection

from server.records.blobs import Area, BlobMissingError
from server.store.db import Database

T = TypeVar("T")
_FRAME = struct.Struct(">I")
#: Bytes read from an object's body per call.
READ_BYTES = 1 << 20


class S3BlobStore:
    """Blobs as objects of one bucket (see the module docstring)."""

    kind = "s3"

    def __init__(
        self,
        db: Database,
        *,
        bucket: str,
        prefix: str = "medhub/",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        part_bytes: int = 8 << 20,
        cold_storage_class: str = "STANDARD_IA",
        client: Any = None,
    ) -> None:
        """``client``: a boto3 S3 client (built from the other arguments when None).

        Raises ``ImportError`` when boto3 is not installed (``pip install 'medhub[s3]'``).
        """
        if client is None:
            import boto3  # only this store needs it: an optional extra

            client = boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region)
        self.db = db
        self.s3 = client
        self.bucket = bucket
        self.prefix = prefix
        self.part_bytes = part_bytes
        self.cold_storage_class = cold_storage_class

    def key(self, blob_id: str, area: Area) -> str:
        """The object key of a blob in an area."""
        return f"{self.prefix}{area}/{blob_id}"

    async def _call(self, name: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.s3, name), **kwargs)

    async def put(self, blob_id: str, chunks: AsyncIterator[bytes]) -> int:
        key = self.key(blob_id, "hot")
        upload = await self._call("create_multipart_upload", Bucket=self.bucket, Key=key)
        upload_id = upload["UploadId"]
        parts: list[dict[str, Any]] = []
        buffer = bytearray()
        count = 0

        async def send() -> None:
            number = len(parts) + 1
            body = bytes(buffer)
            buffer.clear()
            done = await self._call(
                "upload_part",
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
            )
            parts.append({"ETag": done["ETag"], "PartNumber": number})

        try:
            async for sealed in chunks:
                buffer += _FRAME.pack(len(sealed)) + sealed
                count += 1
                if len(buffer) >= self.part_bytes:
                    await send()
            if buffer or not parts:
                await send()
            await self._call(
                "complete_multipart_upload",
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            await asyncio.shield(
                self._call(
                    "abort_multipart_upload", Bucket=self.bucket, Key=key, UploadId=upload_id
                )
            )
            raise
        return count

    async def get(self, blob_id: str, area: Area, count: int) -> AsyncIterator[bytes]:
        try:
            found = await self._call("get_object", Bucket=self.bucket, Key=self.key(blob_id, area))
        except Exception as exc:
            if _missing(exc):
                raise BlobMissingError(blob_id) from exc
            raise
        body = found["Body"]
        pending = bytearray()
        seen = 0
        try:
            while True:
                data = await asyncio.to_thread(body.read, READ_BYTES)
                if not data:
                    break
                pending += data
                while len(pending) >= _FRAME.size:
                    (size,) = _FRAME.unpack_from(pending)
                    if len(pending) < _FRAME.size + size:
                        break
                    frame = bytes(pending[_FRAME.size : _FRAME.size + size])
                    del pending[: _FRAME.size + size]
                    seen += 1
                    yield frame
        finally:
            body.close()
        if pending or seen != count:
            raise BlobMissingError(blob_id)

    async def move(
        self, blob_id: str, src: Area, dst: Area, count: int, commit: Callable[[Connection], T]
    ) -> T:
        extra = {"StorageClass": self.cold_storage_class} if dst == "cold" else {}
        source = {"Bucket": self.bucket, "Key": self.key(blob_id, src)}
        await asyncio.to_thread(
            self.s3.copy, source, self.bucket, self.key(blob_id, dst), ExtraArgs=extra
        )
        result = await self.db.run(commit)
        await self.delete(blob_id, src)
        return result

    async def delete(self, blob_id: str, area: Area) -> None:
        await self._call("delete_object", Bucket=self.bucket, Key=self.key(blob_id, area))


def _missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code in ("NoSuchKey", "404", "NotFound")
