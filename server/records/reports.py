"""Structured records: consultation notes and EEG interpretation reports.

Drafts are written and signed by their author; a signed (final) version never
changes: an amendment is a new draft version citing it (see
:mod:`server.records.reportstore`). Readers who may not see drafts (the
patient, a secretary with the ``records`` scope) see the newest signed
version; a report never signed is hidden from them. Every operation is
authorised by the policy (rule 9) and audited; every change is a version row
committed with its audit entry.
"""

from __future__ import annotations

import dataclasses
import time

from sqlalchemy.engine import Connection

from server import policy
from server.accounts.errors import ApiError
from server.audit.events import Action as AuditAction
from server.audit.events import AuditEvent
from server.records import reportstore as rs
from server.records import store
from server.records.access import Access, Who
from server.records.reportstore import Header, Report
from server.records.sealing import RecordKeys
from server.records.store import Conflict
from server.store.ids import new_id
from server.store.jobs import JobWriter

TARGET = "record_report"


def _now() -> int:
    return int(time.time() * 1e6)


class Reports:
    """The report use cases (see the module docstring)."""

    def __init__(self, access: Access, keys: RecordKeys, jobs: JobWriter) -> None:
        self.access = access
        self.db = access.db
        self.keys = keys
        self.jobs = jobs

    async def record_of(self, h: Header) -> policy.Record:
        """The report's current version as the policy sees it."""
        return policy.Record(
            h.org_id,
            h.patient_id,
            h.kind,
            h.consultation_id,
            await self.access.exam(h.exam_id),
            draft=h.status == "draft",
            author_id=h.author_id,
        )

    async def _header(self, who: Who, report_id: str) -> Header:
        h = await self.db.run(lambda c: rs.header(c, report_id), readonly=True)
        if h is None or h.deleted_us is not None or h.org_id != who.org_id:
            raise self.access.not_found(who, TARGET, report_id)
        return h

    async def _shown(self, who: Who, h: Header) -> int:
        """The version ``who`` is shown: the current one when they may read it, else the
        newest signed one; raises the refusal when neither."""
        record = await self.record_of(h)
        subject = await self.access.subject(who)
        care = await self.access.care(h.patient_id)
        decision = policy.record_access(subject, policy.Action.RECORD_READ, record, care)
        if decision:
            return h.version
        final = dataclasses.replace(record, draft=False)
        if h.final_version is not None and policy.record_access(
            subject, policy.Action.RECORD_READ, final, care
        ):
            return h.final_version
        raise self.access.refuse(who, subject, record, care, decision, TARGET, h.id)

    async def create(
        self,
        who: Who,
        patient_id: str,
        kind: str,
        title: str,
        text: str,
        consultation_id: str | None,
        exam_id: str | None,
    ) -> Report:
        """A new draft by ``who``; raises ``ApiError``."""
        await self.access.patient_of_org(who, patient_id)
        exam = await self.access.exam(exam_id)
        if exam_id is not None and (exam is None or exam.org_id != who.org_id):
            raise self.access.not_found(who, "eeg_exam", exam_id)
        if exam is not None and exam.patient_id != patient_id:
            raise ApiError("bad_request", "the exam is another patient's")
        if kind == policy.RecordKind.EEG_REPORT and exam is None:
            raise ApiError("bad_request", "an EEG report names its exam (exam_id)")
        now = _now()
        h = Header(
            new_id("n"),
            who.org_id,
            patient_id,
            kind,
            consultation_id,
            exam_id,
            "draft",
            1,
            None,
            who.user_id,
            now,
            now,
            None,
        )
        await self.access.check(
            who, policy.Action.RECORD_WRITE, await self.record_of(h), TARGET, h.id
        )
        keys, event = self.keys, self.access.event(who, AuditAction.CREATE, TARGET, h.id)

        def create(c: Connection) -> tuple[Report, list[AuditEvent]]:
            return rs.create(c, keys, h, title, text, now), [event]

        return await store.commit(self.jobs, create)

    async def get(self, who: Who, report_id: str) -> Report:
        """The version of the report ``who`` may read (see :meth:`_shown`)."""
        h = await self._header(who, report_id)
        version = await self._shown(who, h)
        keys = self.keys
        report = await self.db.run(lambda c: rs.read(c, keys, h, version), readonly=True)
        self.access.recorder.record(self.access.event(who, AuditAction.READ, TARGET, report_id))
        return report

    async def _change(
        self, who: Who, report_id: str, action: str, fn: rs.Change, *, author_only: bool = True
    ) -> Report:
        h = await self._header(who, report_id)
        record = await self.record_of(h)
        subject, care = await self.access.check(
            who, policy.Action.RECORD_WRITE, record, TARGET, report_id
        )
        if author_only:
            decision = policy.report_sign(subject, record, care)
            if not decision:
                raise self.access.refuse(who, subject, record, care, decision, TARGET, report_id)
        audit = AuditAction.DELETE if action == "delete" else AuditAction.UPDATE
        keys, event = self.keys, self.access.event(who, audit, TARGET, report_id, action)

        def change(c: Connection) -> tuple[Report, list[AuditEvent]]:
            current = rs.header(c, report_id) or h
            return fn(c, keys, current), [event]

        try:
            return await store.commit(self.jobs, change)
        except Conflict:
            raise ApiError("conflict", _CONFLICT[action]) from None

    async def edit(
        self, who: Who, report_id: str, expected: int, title: str | None, text: str | None
    ) -> Report:
        """Change a draft (a new version); only its author may."""
        me = who.user_id
        return await self._change(
            who,
            report_id,
            "update",
            lambda c, k, h: rs.edit(c, k, h, expected, me, _now(), title, text),
        )

    async def sign(self, who: Who, report_id: str, expected: int) -> Report:
        """Sign the draft: only its author may (a new final version)."""
        me = who.user_id
        return await self._change(
            who, report_id, "sign", lambda c, k, h: rs.sign(c, k, h, expected, me, _now())
        )

    async def amend(
        self, who: Who, report_id: str, expected: int, title: str | None, text: str
    ) -> Report:
        """Start a new draft version citing the signed current one."""
        me = who.user_id
        return await self._change(
            who,
            report_id,
            "amend",
            lambda c, k, h: rs.amend(c, k, h, expected, me, _now(), title, text),
            author_only=False,
        )

    async def delete(self, who: Who, report_id: str) -> None:
        """Tombstone a report never signed; only its author may."""
        me = who.user_id

        def delete(c: Connection, k: RecordKeys, h: Header) -> Report:
            rs.delete(c, k, h, me, _now())
            return rs.read(c, k, h, h.version)

        await self._change(who, report_id, "delete", delete)

    async def versions(self, who: Who, report_id: str) -> list[dict[str, object]]:
        """Every version (who, when, what, status, citation), for those who may read drafts;
        the signed versions only for the others."""
        h = await self._header(who, report_id)
        shown = await self._shown(who, h)
        keys = self.keys
        found = await self.db.run(lambda c: rs.versions(c, keys, report_id), readonly=True)
        subject, care = await self.access.subject(who), await self.access.care(h.patient_id)
        drafts = dataclasses.replace(await self.record_of(h), draft=True)
        if shown != h.version or not policy.record_access(
            subject, policy.Action.RECORD_WRITE, drafts, care
        ):
            found = [v for v in found if v["status"] == "final" and v["action"] == "sign"]
        self.access.recorder.record(
            self.access.event(who, AuditAction.READ, TARGET, report_id, "versions")
        )
        return found


_CONFLICT = {
    "update": "only a draft changes, at its current version; a signed report is amended",
    "sign": "only the current draft is signed",
    "amend": "only a signed report, at its current version, is amended",
    "delete": "a signed report is never deleted; amend it",
}
