"""Who asks, the facts the policy needs, and how a refusal is answered and audited.

Every records decision is :func:`server.policy.record_access` (rule 9) on
facts gathered here: the caller's live delegations, the care relationships of
the record's patient, and the people of the EEG exam it is attached to (an
:data:`server.facts.ExamPeople` lookup the EEG capability provides). A refusal
is audited (``denied`` with the policy's reason) and answered ``404 not_found`` when the caller may
not even see that the record exists (another organisation, not their
patient, an exam they are not assigned to), ``403 forbidden`` when they may
see it but not do this.
"""

from __future__ import annotations

from dataclasses import dataclass

from server import policy
from server.accounts.errors import ApiError
from server.audit.events import Action as AuditAction
from server.audit.events import AuditEvent, AuditRecorder
from server.audit.events import Result as AuditResult
from server.facts import ExamPeople, Facts, subject_of
from server.store.db import Database


@dataclass(frozen=True, slots=True)
class Who:
    """The caller of a records operation: a signed-in user (``request_id``: their
    session id, ``source``: their trusted address)."""

    user_id: str
    org_id: str
    role: str
    request_id: str | None = None
    source: str | None = None


class Access:
    """Gathers facts, decides with the policy, audits refusals."""

    def __init__(
        self, db: Database, facts: Facts, exams: ExamPeople, recorder: AuditRecorder
    ) -> None:
        self.db = db
        self.facts = facts
        self.exams = exams
        self.recorder = recorder

    def event(
        self,
        who: Who | None,
        action: AuditAction,
        target_type: str,
        target_id: str,
        reason: str | None = None,
        result: AuditResult = AuditResult.OK,
    ) -> AuditEvent:
        """An audit event about ``target_id`` by ``who`` (None: the operator's CLI)."""
        if who is None:
            return AuditEvent(
                action=action,
                result=result,
                role="operator",
                target_type=target_type,
                target_id=target_id,
                reason=reason,
            )
        return AuditEvent(
            action=action,
            result=result,
            actor=who.user_id,
            role=who.role,
            org=who.org_id,
            target_type=target_type,
            target_id=target_id,
            reason=reason,
            source=who.source,
            request_id=who.request_id,
        )

    async def subject(self, who: Who) -> policy.Subject:
        """``who`` as a policy subject, with their live delegations."""
        return await subject_of(self.facts, who.user_id, who.org_id, who.role)

    async def care(self, patient_id: str) -> policy.Facts:
        """The live care relationships of ``patient_id``."""
        return policy.Facts(await self.facts.relationships_of([patient_id]))

    async def exam(self, exam_id: str | None) -> policy.Exam | None:
        """The people of EEG exam ``exam_id`` (None: no exam, or none by that id)."""
        if exam_id is None:
            return None
        return await self.exams(exam_id)

    def refuse(
        self,
        who: Who,
        subject: policy.Subject,
        record: policy.Record,
        care: policy.Facts,
        decision: policy.Decision,
        target_type: str,
        target_id: str,
    ) -> ApiError:
        """Audit a refusal; the error to raise: 404 unless ``who`` may see that the record
        exists (its index entry; a draft only for those who may write it), else 403."""
        self.recorder.record(
            self.event(
                who, AuditAction.DENIED, target_type, target_id, decision.reason, AuditResult.DENIED
            )
        )
        visible = policy.record_access(subject, policy.Action.RECORD_META, record, care)
        return ApiError("forbidden" if visible else "not_found")

    def not_found(self, who: Who, target_type: str, target_id: str) -> ApiError:
        """Audit a request for an unknown record; the ``not_found`` error."""
        self.recorder.record(
            self.event(
                who, AuditAction.DENIED, target_type, target_id, "not_found", AuditResult.DENIED
            )
        )
        return ApiError("not_found")

    async def check(
        self,
        who: Who,
        action: policy.Action,
        record: policy.Record,
        target_type: str,
        target_id: str,
    ) -> tuple[policy.Subject, policy.Facts]:
        """Raise the refusal unless ``who`` may do ``action`` on ``record``; the subject
        and facts decided on (for further decisions on the same record)."""
        subject = await self.subject(who)
        care = await self.care(record.patient_id)
        decision = policy.record_access(subject, action, record, care)
        if not decision:
            raise self.refuse(who, subject, record, care, decision, target_type, target_id)
        return subject, care

    async def patient_of_org(self, who: Who, patient_id: str) -> None:
        """Raise ``not_found`` unless ``patient_id`` is an active patient of ``who``'s org."""
        found = (await self.facts.users([patient_id])).get(patient_id)
        if found is None or found.org_id != who.org_id or found.role != policy.Role.PATIENT:
            raise self.not_found(who, "record_patient", patient_id)
