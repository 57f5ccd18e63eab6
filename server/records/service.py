"""The records sidecar's components, built from Settings, and its cross-record use cases.

:func:`build_records` is called by the composition root (``server/app.py``)
and by the ``medhub`` commands with the process's database, accounts facts,
audit recorder, write sequence (the audit trail) and at-rest keyring (the
master key of every record's data key). :class:`Records` holds the document
and report services, the patient index, the right-of-access export and
account erasure.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server import policy
from server.accounts.errors import ApiError
from server.accounts.pii import UserCipher
from server.accounts.tables import users
from server.audit.events import Action as AuditAction
from server.audit.events import AuditEvent, AuditRecorder
from server.audit.events import Result as AuditResult
from server.config import Settings
from server.facts import ExamPeople, Facts, no_exams
from server.records import erasure, export, store
from server.records import reportstore as rs
from server.records.access import Access, Who
from server.records.blobs import BlobStore, DatabaseBlobStore
from server.records.contents import Contents
from server.records.documents import Documents
from server.records.reports import Reports
from server.records.sealing import RecordKeys
from server.security.at_rest import settings_blind_index
from server.security.crypto import Keyring
from server.store.db import Database
from server.store.jobs import JobWriter


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One line of a patient's record index: a document or a report, and whether its
    content may be read by the caller (else only this entry is shown)."""

    document: store.Document | None
    report: rs.Report | None
    readable: bool


class Records:
    """The records use cases of one process (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        access: Access,
        keys: RecordKeys,
        contents: Contents,
        jobs: JobWriter,
        user_cipher: UserCipher,
    ) -> None:
        self.settings = settings
        self.access = access
        self.db = access.db
        self.keys = keys
        self.contents = contents
        self.jobs = jobs
        self.user_cipher = user_cipher
        self.documents = Documents(access, keys, contents, jobs)
        self.reports = Reports(access, keys, jobs)

    async def index(self, who: Who, patient_id: str) -> list[IndexEntry]:
        """The documents and reports of ``patient_id`` that ``who`` may see, newest first."""
        keys, limit = self.keys, self.settings.records_list_max

        def read(c: Connection) -> tuple[list[store.Document], list[rs.Header]]:
            return (
                store.documents_of(c, keys, who.org_id, patient_id, limit),
                rs.headers_of(c, who.org_id, patient_id, limit),
            )

        docs, heads = await self.db.run(read, readonly=True)
        subject = await self.access.subject(who)
        care = await self.access.care(patient_id)
        out: list[tuple[int, IndexEntry]] = []
        meta, read_ = policy.Action.RECORD_META, policy.Action.RECORD_READ
        for d in docs:
            record = await self.documents.record_of(d)
            if policy.record_access(subject, meta, record, care):
                readable = policy.record_access(subject, read_, record, care).allowed
                out.append((d.updated_us, IndexEntry(d, None, readable)))
        for h in heads:
            record = await self.reports.record_of(h)
            version = h.version
            if not policy.record_access(subject, meta, record, care):
                if h.final_version is None:
                    continue
                record = policy.Record(
                    record.org_id,
                    record.patient_id,
                    record.kind,
                    record.consultation_id,
                    record.exam,
                )
                if not policy.record_access(subject, meta, record, care):
                    continue
                version = h.final_version
            readable = policy.record_access(subject, read_, record, care).allowed
            shown = await self.db.run(functools.partial(_read, keys, h, version), readonly=True)
            out.append((h.updated_us, IndexEntry(None, shown, readable)))
        self.access.recorder.record(
            self.access.event(who, AuditAction.READ, "record_index", patient_id)
        )
        return [entry for _, entry in sorted(out, key=lambda x: -x[0])]

    async def export(self, who: Who | None, patient_id: str) -> AsyncIterator[bytes]:
        """The right-of-access bundle of ``patient_id`` (:mod:`server.records.export`):
        for the patient themself (``who``), or the operator (``who`` None). Audited."""
        if who is not None:
            decision = policy.record_export(await self.access.subject(who), patient_id, who.org_id)
            if not decision:
                raise self.access.not_found(who, "record_export", patient_id)
        try:
            stream = await export.bundle(
                self.db,
                self.user_cipher,
                self.keys,
                self.contents,
                patient_id,
                self.settings.records_list_max,
            )
        except LookupError:
            raise ApiError("not_found") from None
        event = self.access.event(who, AuditAction.EXPORT, "record_export", patient_id)
        if who is None:
            event = AuditEvent(
                action=AuditAction.EXPORT,
                role="operator",
                target_type="record_export",
                target_id=patient_id,
            )
        self.access.recorder.record(event)
        return stream

    async def erase(self, who: Who | None, user_id: str) -> int:
        """Pseudonymise the account ``user_id`` (a deletion request,
        :mod:`server.records.erasure`); the time its records may be purged (us).

        ``who``: an admin of the account's organisation (decided by the policy,
        ``user.delete``), or None for the operator's CLI. Raises ``ApiError``
        (``not_found``, ``forbidden``, ``conflict`` when already erased).
        """
        u = users.c
        query = sa.select(u.org_id, u.role).where(u.id == user_id)  # any status
        found = await self.db.run(lambda c: c.execute(query).first(), readonly=True)
        role = found.role if found is not None else None
        if who is not None:
            subject = await self.access.subject(who)
            org = found.org_id if found is not None else who.org_id
            target = policy.Target("user", org, id=user_id, user_id=user_id, user_role=role)
            decision = policy.decide(subject, policy.Action.USER_DELETE, target)
            if found is None or not decision:
                reason = "not_found" if found is None else decision.reason
                self.access.recorder.record(
                    self.access.event(
                        who, AuditAction.DENIED, "user", user_id, reason, AuditResult.DENIED
                    )
                )
                gone = found is None or reason == "other_org"
                raise ApiError("not_found" if gone else "forbidden")
        now = int(time.time() * 1e6)
        keep = int(self.settings.records_erasure_keep_days * 86400 * 1e6)
        by = who.user_id if who is not None else None
        event = self.access.event(who, AuditAction.ACCOUNT_PSEUDONYMISE, "user", user_id)
        if found is not None and who is None:
            event = AuditEvent(
                action=AuditAction.ACCOUNT_PSEUDONYMISE,
                role="operator",
                org=found.org_id,
                target_type="user",
                target_id=user_id,
            )
        cipher, keys = self.user_cipher, self.keys

        def job(c: Connection) -> tuple[None, list[AuditEvent]]:
            return None, erasure.pseudonymise(c, cipher, keys, user_id, by, now, keep, event)

        try:
            await store.commit(self.jobs, job)
        except LookupError:
            raise ApiError("not_found") from None
        except ValueError as exc:
            raise ApiError("conflict", str(exc)) from None
        return now + keep


def _read(keys: RecordKeys, h: rs.Header, version: int, conn: Connection) -> rs.Report:
    return rs.read(conn, keys, h, version)


def blob_store(settings: Settings, db: Database) -> BlobStore:
    """The blob store ``records_store`` names (``s3`` needs boto3: ``medhub[s3]``)."""
    if settings.records_store == "s3":
        from server.records.s3 import S3BlobStore

        s = settings
        return S3BlobStore(
            db,
            bucket=s.records_s3_bucket,
            prefix=s.records_s3_prefix,
            endpoint_url=s.records_s3_endpoint_url or None,
            region=s.records_s3_region,
            part_bytes=s.records_s3_part_bytes,
            cold_storage_class=s.records_s3_cold_storage_class,
        )
    return DatabaseBlobStore(db, settings.records_chunk_bytes)


def build_records(
    settings: Settings,
    db: Database,
    facts: Facts,
    recorder: AuditRecorder,
    jobs: JobWriter,
    keyring: Keyring,
    blobs: BlobStore | None = None,
    *,
    exams: ExamPeople = no_exams,
) -> Records:
    """The records components; ``keyring``: the at-rest keyring (current + retired keys);
    ``exams``: the people of an EEG exam (the EEG capability's lookup; the default knows
    no exam, so what is attached to one is refused).

    Raises :class:`~server.security.crypto.CryptoError` for a malformed key, and
    ``ImportError`` for ``records_store = "s3"`` without boto3.
    """
    keys = RecordKeys(keyring)
    access = Access(db, facts, exams, recorder)
    contents = Contents(
        db,
        blobs or blob_store(settings, db),
        settings.records_chunk_bytes,
        settings.records_max_upload_bytes,
    )
    cipher = UserCipher(keyring, settings_blind_index(settings))
    return Records(settings, access, keys, contents, jobs, cipher)
