"""Documents: create, upload (a new version), read metadata, download, change, delete.

Each operation is authorised by :func:`server.policy.record_access` (through
:class:`server.records.access.Access`) and audited: changes commit with their
audit entry and their version row in one transaction of the node's write
sequence (:func:`server.store.jobs.write`); reads and refusals are recorded.
A document without content yet has ``version`` 1 and no ``media_type``;
every upload is a new version (the older contents stay, each version keeps
its own); delete is a tombstone (the versions and contents are kept for the
retention period).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from server import policy
from server.accounts.errors import ApiError
from server.audit.events import Action as AuditAction
from server.audit.events import AuditEvent
from server.records import store
from server.records.access import Access, Who
from server.records.contents import Contents
from server.records.sealing import RecordCipher, RecordKeys
from server.records.store import Conflict, Document
from server.store.ids import new_id
from server.store.jobs import JobWriter

TARGET = "record_document"


def _now() -> int:
    return int(time.time() * 1e6)


@dataclass(frozen=True, slots=True)
class Download:
    """A content to stream: its type, size, file name and clear chunks."""

    media_type: str
    size: int
    filename: str
    chunks: AsyncIterator[bytes]


class Documents:
    """The document use cases (see the module docstring)."""

    def __init__(
        self, access: Access, keys: RecordKeys, contents: Contents, jobs: JobWriter
    ) -> None:
        self.access = access
        self.db = access.db
        self.keys = keys
        self.contents = contents
        self.jobs = jobs

    async def record_of(self, doc: Document) -> policy.Record:
        """``doc`` as the policy sees it."""
        return policy.Record(
            doc.org_id,
            doc.patient_id,
            policy.RecordKind.DOCUMENT,
            doc.consultation_id,
            await self.access.exam(doc.exam_id),
        )

    async def _load(self, who: Who, doc_id: str, action: policy.Action) -> Document:
        keys = self.keys
        doc = await self.db.run(lambda c: store.get_document(c, keys, doc_id), readonly=True)
        if doc is None or doc.deleted_us is not None or doc.org_id != who.org_id:
            raise self.access.not_found(who, TARGET, doc_id)
        await self.access.check(who, action, await self.record_of(doc), TARGET, doc_id)
        return doc

    async def create(
        self,
        who: Who,
        patient_id: str,
        title: str,
        filename: str,
        description: str,
        consultation_id: str | None,
        exam_id: str | None,
    ) -> Document:
        """A new document (no content yet) for ``patient_id``; raises ``ApiError``."""
        await self.access.patient_of_org(who, patient_id)
        exam = await self.access.exam(exam_id)
        if exam_id is not None and (exam is None or exam.org_id != who.org_id):
            raise self.access.not_found(who, "eeg_exam", exam_id)
        if exam is not None and exam.patient_id != patient_id:
            raise ApiError("bad_request", "the exam is another patient's")
        if consultation_id is not None:
            found = await self.access.facts.consultation(consultation_id)
            if found is None or found.org_id != who.org_id or found.patient_id != patient_id:
                raise ApiError("bad_request", "no such consultation of this patient")
        now = _now()
        doc = Document(
            new_id("d"),
            who.org_id,
            patient_id,
            consultation_id,
            exam_id,
            1,
            None,
            None,
            None,
            title,
            filename,
            description,
            who.user_id,
            now,
            now,
            None,
            "hot",
        )
        record = policy.Record(
            who.org_id, patient_id, policy.RecordKind.DOCUMENT, consultation_id, exam
        )
        await self.access.check(who, policy.Action.RECORD_WRITE, record, TARGET, doc.id)
        keys, event = self.keys, self.access.event(who, AuditAction.CREATE, TARGET, doc.id)

        def create(c: Connection) -> tuple[Document, list[AuditEvent]]:
            return store.create_document(c, keys, doc, who.user_id, now), [event]

        return await store.commit(self.jobs, create)

    async def get(self, who: Who, doc_id: str) -> tuple[Document, bool]:
        """The document and whether its metadata may be read (else only its index entry)."""
        doc = await self._load(who, doc_id, policy.Action.RECORD_META)
        subject = await self.access.subject(who)
        readable = policy.record_access(
            subject,
            policy.Action.RECORD_READ,
            await self.record_of(doc),
            await self.access.care(doc.patient_id),
        ).allowed
        self.access.recorder.record(self.access.event(who, AuditAction.READ, TARGET, doc_id))
        return doc, readable

    async def upload(
        self, who: Who, doc_id: str, body: AsyncIterator[bytes], declared: int | None
    ) -> Document:
        """Store ``body`` as the document's new content (a new version)."""
        await self._load(who, doc_id, policy.Action.RECORD_WRITE)
        keys = self.keys
        cipher = await self.db.run(lambda c: store.cipher_of(c, keys, doc_id), readonly=True)
        done = await self.contents.upload(cipher, body, declared)
        event = self.access.event(who, AuditAction.UPDATE, TARGET, doc_id, "content")

        def commit(c: Connection) -> tuple[Document, list[AuditEvent]]:
            store.ready_blob(c, done.blob_id, done.size, done.chunks)
            new = store.change_document(
                c,
                keys,
                doc_id,
                None,
                "content",
                who.user_id,
                _now(),
                blob_id=done.blob_id,
                media_type=done.media_type,
                size=done.size,
            )
            return new, [event]

        try:
            return await store.commit(self.jobs, commit)
        except Conflict:
            await self.contents.discard(done.blob_id)
            raise ApiError("conflict", "the document was deleted meanwhile") from None
        except BaseException:
            await self.contents.discard(done.blob_id)
            raise

    async def download(self, who: Who, doc_id: str, version: int | None) -> Download:
        """The content of the document (its current one, or that of ``version``)."""
        doc = await self._load(who, doc_id, policy.Action.RECORD_READ)
        keys = self.keys

        def read(c: Connection) -> tuple[store.Blob | None, str | None, RecordCipher]:
            found = (doc.blob_id, doc.media_type) if version is None else None
            if version is not None:
                v = store.version_content(c, doc_id, version)
                found = None if v is None else (v[0], v[1])
            if found is None or found[0] is None:
                return None, None, store.cipher_of(c, keys, doc_id)
            return store.get_blob(c, found[0]), found[1], store.cipher_of(c, keys, doc_id)

        blob, media, cipher = await self.db.run(read, readonly=True)
        if blob is None or media is None or blob.state != "ready":
            raise self.access.not_found(who, TARGET, doc_id)
        self.access.recorder.record(
            self.access.event(who, AuditAction.READ, TARGET, doc_id, "content")
        )
        return Download(media, blob.size, doc.filename, self.contents.download(cipher, blob))

    async def update(
        self, who: Who, doc_id: str, expected: int, title: str | None, description: str | None
    ) -> Document:
        """Change the title or description (a new version); ``conflict`` if not at ``expected``."""
        await self._load(who, doc_id, policy.Action.RECORD_WRITE)
        changes = {
            k: v for k, v in (("title", title), ("description", description)) if v is not None
        }
        keys, event = self.keys, self.access.event(who, AuditAction.UPDATE, TARGET, doc_id)

        def update(c: Connection) -> tuple[Document, list[AuditEvent]]:
            new = store.change_document(
                c, keys, doc_id, expected, "update", who.user_id, _now(), **changes
            )
            return new, [event]

        try:
            return await store.commit(self.jobs, update)
        except Conflict:
            raise ApiError("conflict", "the document changed meanwhile; reload it") from None

    async def delete(self, who: Who, doc_id: str) -> Document:
        """Tombstone the document (its versions and contents are kept)."""
        await self._load(who, doc_id, policy.Action.RECORD_WRITE)
        keys, event = self.keys, self.access.event(who, AuditAction.DELETE, TARGET, doc_id)

        def delete(c: Connection) -> tuple[Document, list[AuditEvent]]:
            now = _now()
            new = store.change_document(
                c, keys, doc_id, None, "delete", who.user_id, now, deleted_us=now
            )
            return new, [event]

        try:
            return await store.commit(self.jobs, delete)
        except Conflict:
            raise ApiError("not_found") from None

    async def versions(self, who: Who, doc_id: str) -> list[dict[str, object]]:
        """Every version of the document (who, when, what changed)."""
        await self._load(who, doc_id, policy.Action.RECORD_READ)
        keys = self.keys
        found = await self.db.run(lambda c: store.document_versions(c, keys, doc_id), readonly=True)
        self.access.recorder.record(
            self.access.event(who, AuditAction.READ, TARGET, doc_id, "versions")
        )
        return found
