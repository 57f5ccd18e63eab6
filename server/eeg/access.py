"""Authorisation and audit of EEG requests on the WebSocket (rule 8 of :mod:`server.policy`).

Every decision is :func:`server.policy.eeg_access` on the stream's exam, and
every refusal is audited ``denied`` with the policy's reason (an unknown
stream too, as ``not_found``). Decisions are cached per (user, stream,
action) for ``ttl_s`` seconds, and forgotten at once when the user's rights
change or the exam's assignments change on this node; a watch or a stream
open is re-checked at each request.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from protocol.errors import ErrorCode
from server import policy
from server.audit.events import Action as AuditAction
from server.audit.events import AuditEvent, AuditRecorder, audit_id
from server.audit.events import Result as AuditResult
from server.decisions import DecisionCache
from server.eeg import store
from server.policy import Action
from server.router import HandlerError, RequestContext
from server.security.crypto import Keyring
from server.store.db import Database

#: Seconds a decision is reused for the same user, stream and action.
ACCESS_TTL_S = 5.0


class EegAccess:
    """Policy checks (cached) and audit records of the EEG capability."""

    def __init__(
        self, db: Database, keys: Keyring, audit: AuditRecorder, ttl_s: float = ACCESS_TTL_S
    ) -> None:
        self.db, self.keys, self.recorder = db, keys, audit
        self._cache: DecisionCache[tuple[str, str, str], tuple[store.StreamRow, store.ExamRow]]
        self._cache = DecisionCache(ttl_s)

    def event(
        self,
        ctx: RequestContext,
        action: AuditAction,
        target_type: str,
        target_id: str,
        reason: str | None = None,
        result: AuditResult = AuditResult.OK,
    ) -> AuditEvent:
        """The audit event of ``action`` on ``target_id`` by the socket's user."""
        p = ctx.principal
        return AuditEvent(
            action=action,
            result=result,
            actor=p.user_id,
            acting_for=p.acting_for,
            role=p.role,
            org=p.org_id,
            target_type=target_type,
            target_id=audit_id(target_id),
            reason=reason,
            source=ctx.peer.client_address,
            request_id=ctx.peer.conn_id,
        )

    def audit(
        self,
        ctx: RequestContext,
        action: AuditAction,
        target_type: str,
        target_id: str,
        reason: str | None = None,
        result: AuditResult = AuditResult.OK,
    ) -> None:
        """Record an entry now (reads, subscriptions, refusals)."""
        self.recorder.record(self.event(ctx, action, target_type, target_id, reason, result))

    def deny(
        self, ctx: RequestContext, target_type: str, target_id: str, reason: str
    ) -> HandlerError:
        """Audit a refusal; the ``forbidden`` error to raise."""
        self.audit(ctx, AuditAction.DENIED, target_type, target_id, reason, AuditResult.DENIED)
        return HandlerError(ErrorCode.FORBIDDEN, "not allowed")

    def missing(self, ctx: RequestContext, target_type: str, target_id: str) -> HandlerError:
        """Audit a request on something that does not exist; the ``not_found`` error."""
        self.audit(ctx, AuditAction.DENIED, target_type, target_id, "not_found", AuditResult.DENIED)
        return HandlerError(ErrorCode.NOT_FOUND, f"no such {target_type.removeprefix('eeg_')}")

    def forget(self, user_id: str | None = None, exam_id: str | None = None) -> None:
        """Drop cached decisions of ``user_id``, or about ``exam_id`` (or all)."""
        self._cache.forget(
            lambda key, found: (
                (user_id is None or key[0] == user_id)
                and (exam_id is None or found[1].id == exam_id)
            )
        )

    @staticmethod
    def subject(ctx: RequestContext) -> policy.Subject:
        """The socket's user as a policy subject."""
        p = ctx.principal
        return policy.Subject(p.user_id, p.org_id, p.role, acting_for=p.acting_for)

    async def exam(self, exam_id: str) -> store.ExamRow | None:
        """The exam ``exam_id`` from the store, or None."""
        keys = self.keys
        return await self.db.run(lambda c: store.get_exam(c, keys, exam_id), readonly=True)

    async def check_exam(self, ctx: RequestContext, exam_id: str, action: Action) -> store.ExamRow:
        """The exam once ``action`` on it is allowed; raises HandlerError (audited)."""
        exam = await self.exam(exam_id)
        if exam is None:
            raise self.missing(ctx, "eeg_exam", exam_id)
        decision = policy.eeg_access(self.subject(ctx), action, exam.people)
        if not decision:
            raise self.deny(ctx, "eeg_exam", exam_id, decision.reason)
        return exam

    async def authorise(
        self, ctx: RequestContext, sid: str, action: Action
    ) -> tuple[store.StreamRow, store.ExamRow]:
        """The stream (as read then: its positions are not current) and its exam, once
        ``action`` is allowed; raises HandlerError (audited)."""
        p = ctx.principal
        key = (p.user_id, sid, action.value)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        keys = self.keys

        def read(c: Connection) -> tuple[store.StreamRow, store.ExamRow] | None:
            row = store.get_stream(c, sid)
            exam = store.get_exam(c, keys, row.exam_id) if row is not None else None
            return (row, exam) if row is not None and exam is not None else None

        found, stamp = await self._cache.read(key, lambda: self.db.run(read, readonly=True))
        if found is None:
            raise self.missing(ctx, "eeg_stream", sid)
        row, exam = found
        decision = policy.eeg_access(self.subject(ctx), action, exam.people)
        if not decision:
            raise self.deny(ctx, "eeg_stream", sid, decision.reason)
        self._cache.put(key, found, stamp)
        return row, exam
