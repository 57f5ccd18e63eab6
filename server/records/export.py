"""The right of access: everything medhub holds about a patient, as a streamed tar bundle.

The bundle (``application/x-tar``) holds ``export.json`` then ``files/<document
id>.<ext>``, one per document with content (its current version). It is
written as it is sent: the JSON first (metadata only, small), then each file
chunk by chunk from the blob store, so the server never holds a whole file
nor writes the bundle anywhere.

``export.json``: ``{"format": "medhub-export/1", "generated_us", "account":
{id, org_id, role, status, name, email, phone, created_us}, "account_versions":
[{version, action, changed_by, changed_us, fields}], "care_relationships":
[{kind, actor_id, ref_id, created_us, ended_us}], "documents": [{id, title,
filename, description, media_type, size, consultation_id, exam_id,
created_us, updated_us, file, versions: [...]}], "reports": [{id, kind,
consultation_id, exam_id, versions: [the signed versions: version, title,
text, signed_by, signed_us, cites]}]}``. Drafts are not part of it (not yet
part of the record).
"""

from __future__ import annotations

import tarfile
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.accounts.pii import UserCipher
from server.accounts.tables import care_relationships, user_versions, users
from server.records import reportstore as rs
from server.records import store
from server.records.contents import Contents
from server.records.sealing import RecordCipher, RecordKeys
from server.records.sniff import EXTENSIONS
from server.store.db import Database

FORMAT = "medhub-export/1"
_BLOCK = 512


def _header(name: str, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o600
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8")


def _pad(size: int) -> bytes:
    return b"\0" * (-size % _BLOCK)


def gather(
    conn: Connection, cipher: UserCipher, keys: RecordKeys, patient_id: str, limit: int
) -> tuple[dict[str, Any], list[tuple[str, store.Blob, RecordCipher]]]:
    """The JSON of the bundle, and the files to add: (name, blob, cipher)."""
    u = conn.execute(sa.select(users).where(users.c.id == patient_id)).first()
    if u is None:
        raise LookupError(patient_id)
    account = {
        "id": u.id,
        "org_id": u.org_id,
        "role": u.role,
        "status": u.status,
        "name": cipher.open_column(u.id, "name", u.name_enc),
        "email": cipher.open_column(u.id, "email", u.email_enc),
        "phone": cipher.open_column(u.id, "phone", u.phone_enc),
        "created_us": u.created_us,
    }
    v = user_versions.c
    versions = [
        {
            "version": r.version,
            "action": r.action,
            "changed_by": r.changed_by,
            "changed_us": r.changed_us,
            "fields": [f for f in r.fields.split(",") if f],
        }
        for r in conn.execute(
            sa.select(user_versions).where(v.user_id == patient_id).order_by(v.version)
        )
    ]
    cr = care_relationships.c
    care = [
        {
            "kind": r.kind,
            "actor_id": r.actor_id,
            "ref_id": r.ref_id,
            "created_us": r.created_us,
            "ended_us": r.ended_us,
        }
        for r in conn.execute(sa.select(care_relationships).where(cr.patient_id == patient_id))
    ]
    files: list[tuple[str, store.Blob, RecordCipher]] = []
    documents = []
    for d in store.documents_of(conn, keys, u.org_id, patient_id, limit):
        name = None
        blob = None if d.blob_id is None else store.get_blob(conn, d.blob_id)
        if blob is not None and blob.state == "ready" and d.media_type is not None:
            name = f"files/{d.id}.{EXTENSIONS.get(d.media_type, 'bin')}"
            files.append((name, blob, store.cipher_of(conn, keys, d.id)))
        documents.append(
            {
                "id": d.id,
                "title": d.title,
                "filename": d.filename,
                "description": d.description,
                "media_type": d.media_type,
                "size": d.size,
                "consultation_id": d.consultation_id,
                "exam_id": d.exam_id,
                "created_us": d.created_us,
                "updated_us": d.updated_us,
                "file": name,
                "versions": [
                    {k: x[k] for k in ("version", "action", "changed_by", "changed_us", "fields")}
                    for x in store.document_versions(conn, keys, d.id)
                ],
            }
        )
    reports = []
    for h in rs.headers_of(conn, u.org_id, patient_id, limit):
        signed = [
            {k: x[k] for k in ("version", "title", "text", "signed_by", "signed_us", "cites")}
            for x in rs.versions(conn, keys, h.id)
            if x["action"] == "sign"
        ]
        if signed:
            reports.append(
                {
                    "id": h.id,
                    "kind": h.kind,
                    "consultation_id": h.consultation_id,
                    "exam_id": h.exam_id,
                    "versions": signed,
                }
            )
    data = {
        "format": FORMAT,
        "generated_us": int(time.time() * 1e6),
        "account": account,
        "account_versions": versions,
        "care_relationships": care,
        "documents": documents,
        "reports": reports,
    }
    return data, files


async def bundle(
    db: Database,
    cipher: UserCipher,
    keys: RecordKeys,
    contents: Contents,
    patient_id: str,
    limit: int,
) -> AsyncIterator[bytes]:
    """The tar bundle of ``patient_id``, to iterate block by block (see the module docstring).

    Raises ``LookupError`` for an unknown user (here, before anything is sent).
    """
    data, files = await db.run(lambda c: gather(c, cipher, keys, patient_id, limit), readonly=True)
    return _stream(contents, data, files)


async def _stream(
    contents: Contents,
    data: dict[str, Any],
    files: list[tuple[str, store.Blob, RecordCipher]],
) -> AsyncIterator[bytes]:
    now = int(time.time())
    body = msgspec.json.encode(data)
    yield _header("export.json", len(body), now) + body + _pad(len(body))
    for name, blob, record_cipher in files:
        yield _header(name, blob.size, now)
        async for chunk in contents.download(record_cipher, blob):
            yield chunk
        yield _pad(blob.size)
    yield b"\0" * (2 * _BLOCK)
