"""Authorisation and audit of chat requests (split from :mod:`server.chat.service`).

Every decision goes through :mod:`server.policy` (rule 5) and is audited:
refusals as ``denied`` with the policy's reason. Allowed decisions are cached
per (user, conversation, action) for at most ``ttl_s`` seconds, with one read
per key at a time (:class:`server.decisions.DecisionCache`): a revoked right
stops working within that time, and at once on this node when
:meth:`ChatAccess.forget` is called.

Audit entries carry pseudonymous ids only. An id supplied by a client that
the audit trail would reject (``AuditEvent`` raises ``ValueError``, e.g.
``"bob smith"`` or ``"-x"``) is recorded as :data:`INVALID_ID` instead, so a
malformed id is refused with its proper code, never answered ``internal``.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from protocol.errors import ErrorCode
from server import policy
from server.audit.events import Action as AuditAction
from server.audit.events import AuditEvent, AuditRecorder, audit_id
from server.audit.events import Result as AuditResult
from server.chat import store
from server.decisions import DecisionCache
from server.facts import Facts, subject_of
from server.policy import Action
from server.router import HandlerError, RequestContext
from server.security.crypto import Keyring
from server.store.db import Database


class ChatAccess:
    """Policy checks (cached) and audit records of one chat service."""

    def __init__(
        self, db: Database, keys: Keyring, facts: Facts, audit: AuditRecorder, ttl_s: float
    ) -> None:
        self.db, self.keys, self.facts, self.recorder = db, keys, facts, audit
        self._cache: DecisionCache[tuple[str, str | None, str, str], store.Conversation]
        self._cache = DecisionCache(ttl_s)

    def event(
        self, ctx: RequestContext, action: AuditAction, target_type: str, target_id: str,
        reason: str | None = None, result: AuditResult = AuditResult.OK,
    ) -> AuditEvent:  # fmt: skip
        """The audit event of ``action`` on ``target_id`` (sanitised with :func:`audit_id`)."""
        p = ctx.principal
        return AuditEvent(
            action=action, result=result, actor=p.user_id, acting_for=p.acting_for,
            role=p.role, org=p.org_id, target_type=target_type,
            target_id=audit_id(target_id), reason=reason,
            source=ctx.peer.client_address, request_id=ctx.peer.conn_id,
        )  # fmt: skip

    def audit(
        self, ctx: RequestContext, action: AuditAction, target_type: str, target_id: str,
        reason: str | None = None, result: AuditResult = AuditResult.OK,
    ) -> None:  # fmt: skip
        """Record ``action`` on ``target_id`` now (reads and refusals; writes commit theirs)."""
        self.recorder.record(self.event(ctx, action, target_type, target_id, reason, result))

    def deny(
        self, ctx: RequestContext, target_type: str, target_id: str, reason: str
    ) -> HandlerError:
        """Audit a refusal; the ``forbidden`` error to raise."""
        self.audit(ctx, AuditAction.DENIED, target_type, target_id, reason, AuditResult.DENIED)
        return HandlerError(ErrorCode.FORBIDDEN, "not allowed")

    def deny_missing(self, ctx: RequestContext, conv_id: str) -> HandlerError:
        """Audit a request on a conversation that does not exist; ``not_found``."""
        self.audit(
            ctx, AuditAction.DENIED, "conversation", conv_id, "not_found", AuditResult.DENIED
        )
        return HandlerError(ErrorCode.NOT_FOUND, "no such conversation")

    def forget(self, user_id: str) -> None:
        """Drop the cached decisions of ``user_id`` (their rights changed)."""
        self._cache.forget(lambda key, _conv: key[0] == user_id)

    async def subject(self, ctx: RequestContext) -> policy.Subject:
        """The caller as a policy subject."""
        p = ctx.principal
        return await subject_of(self.facts, p.user_id, p.org_id, p.role, p.acting_for)

    async def authorise(
        self, ctx: RequestContext, conv_id: str, action: Action
    ) -> store.Conversation:
        """The conversation, once ``action`` is allowed; raises HandlerError (audited).

        The conversation returned may come from the cache: its ``last_seq`` is
        not current.
        """
        p = ctx.principal
        key = (p.user_id, p.acting_for, conv_id, action.value)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        try:
            found, stamp = await self._cache.read(key, lambda: self._facts_of(ctx, conv_id))
        except SQLAlchemyError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "store unavailable") from exc
        if found is None:
            raise self.deny_missing(ctx, conv_id)
        conv, mine, subject, rels = found
        decision = policy.conversation_access(
            subject,
            action,
            policy.Target(
                "conversation", conv.org, id=conv.id, patient_id=conv.patient_id,
                ref_id=conv.consultation_id,
            ),
            consultation=conv.kind == "consultation",
            is_member=mine is not None,
            facts=policy.Facts(rels),
        )  # fmt: skip
        if not decision:
            raise self.deny(ctx, "conversation", conv_id, decision.reason)
        self._cache.put(key, conv, stamp)
        return conv

    async def _facts_of(
        self, ctx: RequestContext, conv_id: str
    ) -> (
        tuple[
            store.Conversation,
            store.Member | None,
            policy.Subject,
            frozenset[policy.Relationship],
        ]
        | None
    ):
        """What a decision on ``conv_id`` needs (shared by the callers of one key); None
        when the conversation does not exist."""
        keys, user_id = self.keys, ctx.principal.user_id

        def read(c: Connection) -> tuple[store.Conversation | None, store.Member | None]:
            conv = store.conversation(c, keys, conv_id)
            return conv, store.member(c, conv_id, user_id) if conv else None

        conv, mine = await self.db.run(read, readonly=True)
        if conv is None:
            return None
        subject = await self.subject(ctx)
        rels = frozenset[policy.Relationship]()
        if conv.patient_id is not None:
            rels = await self.facts.relationships_of([conv.patient_id])
        return conv, mine, subject, rels
