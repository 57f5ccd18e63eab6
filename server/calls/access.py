"""Authorisation and audit of call requests (split from :mod:`server.calls.service`).

Every decision is :mod:`server.policy` (rule 7: :func:`~server.policy.call_access`,
:func:`~server.policy.echo_call`); this module only gathers the facts: the
conversation and its members, the care relationships around its patient, and
the delegations of the people involved. Refusals are audited as ``denied``
with the policy's reason; a conversation the caller cannot see is
``not_found``, like in chat.

The conversation facts come from the chat capability's tables, read-only
(calls never write them), through the lightweight table clauses below: by
name, as frozen by migration ``0003_chat``, because capabilities never import
each other (``tests/test_structure.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from protocol.errors import ErrorCode
from server import policy
from server.audit.events import Action as AuditAction
from server.audit.events import AuditEvent, AuditRecorder, audit_id
from server.audit.events import Result as AuditResult
from server.facts import Facts, subject_of
from server.router import HandlerError, RequestContext
from server.store.db import Database

#: The chat tables' columns calls read (frozen by migration 0003_chat).
_CONVERSATION = sa.table(
    "chat_conversation",
    sa.column("id"), sa.column("kind"), sa.column("org"), sa.column("consultation_id"),
    sa.column("patient_id"),
)  # fmt: skip
_MEMBER = sa.table("chat_member", sa.column("conv_id"), sa.column("user_id"))


@dataclass(frozen=True, slots=True)
class Place:
    """Where a call happens: its conversation (None for a test call) and facts about it."""

    conv: str | None
    org: str
    consultation: str | None
    patient: str | None
    members: frozenset[str]

    @property
    def kind(self) -> str:
        """``conversation`` or ``echo``."""
        return "conversation" if self.conv is not None else "echo"


class CallAccess:
    """Policy checks and audit records of one calls service."""

    def __init__(
        self, db: Database, facts: Facts, audit: AuditRecorder, echo_users: set[str]
    ) -> None:
        self.db, self.facts, self.recorder = db, facts, audit
        self.echo_users = echo_users

    # -- audit ------------------------------------------------------------------------------
    def event(
        self, ctx: RequestContext, action: AuditAction, target_id: str,
        reason: str | None = None, result: AuditResult = AuditResult.OK,
    ) -> AuditEvent:  # fmt: skip
        """The audit event of ``action`` on call (record) ``target_id``."""
        p = ctx.principal
        return AuditEvent(
            action=action, result=result, actor=p.user_id, acting_for=p.acting_for,
            role=p.role, org=p.org_id, target_type="call", target_id=audit_id(target_id),
            reason=reason, source=ctx.peer.client_address, request_id=ctx.peer.conn_id,
        )  # fmt: skip

    def deny(self, ctx: RequestContext, target_id: str, reason: str) -> HandlerError:
        """Audit a refusal; the ``forbidden`` error to raise."""
        self.recorder.record(
            self.event(ctx, AuditAction.DENIED, target_id, reason, AuditResult.DENIED)
        )
        return HandlerError(ErrorCode.FORBIDDEN, "not allowed")

    def missing(self, ctx: RequestContext, target_id: str, what: str) -> HandlerError:
        """Audit a request about something that does not exist (or is hidden); ``not_found``."""
        self.recorder.record(
            self.event(ctx, AuditAction.DENIED, target_id, "not_found", AuditResult.DENIED)
        )
        return HandlerError(ErrorCode.NOT_FOUND, f"no such {what}")

    # -- decisions ----------------------------------------------------------------------------
    async def load(self, conv_id: str) -> Place | None:
        """The conversation ``conv_id`` and its members, or None; raises ``unavailable``."""
        c, m = _CONVERSATION.c, _MEMBER.c
        conv_query = sa.select(c.id, c.org, c.consultation_id, c.patient_id).where(c.id == conv_id)
        member_query = sa.select(m.user_id).where(m.conv_id == conv_id)

        def read(conn: Connection) -> tuple[Any, list[str]]:
            row = conn.execute(conv_query).first()
            if row is None:
                return None, []
            return row, [str(u) for u in conn.execute(member_query).scalars()]

        try:
            row, members = await self.db.run(read, readonly=True)
        except SQLAlchemyError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "store unavailable") from exc
        if row is None:
            return None
        return Place(row.id, row.org, row.consultation_id, row.patient_id, frozenset(members))

    async def place(self, ctx: RequestContext, conv_id: str) -> Place:
        """The conversation ``conv_id`` once the caller may call in it; raises HandlerError.

        ``not_found`` when it does not exist, ``forbidden`` (audited) when the
        policy refuses, ``unavailable`` when the store fails.
        """
        place = await self.load(conv_id)
        if place is None:
            raise self.missing(ctx, conv_id, "conversation")
        p = ctx.principal
        decision = await self.decide(place, p.user_id, p.org_id, p.role, p.acting_for)
        if not decision:
            raise self.deny(ctx, conv_id, decision.reason)
        return place

    async def decide(
        self, place: Place, user: str, org: str, role: str, acting_for: str | None = None
    ) -> policy.Decision:
        """Rule 7 for ``user`` in ``place`` (a conversation); raises ``unavailable``."""
        assert place.conv is not None
        try:
            subject = await subject_of(self.facts, user, org, role, acting_for)
            rels = frozenset[policy.Relationship]()
            if place.patient is not None:
                rels = await self.facts.relationships_of([place.patient])
        except SQLAlchemyError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "store unavailable") from exc
        return policy.call_access(
            subject,
            policy.Target(
                "conversation", place.org, id=place.conv, patient_id=place.patient,
                ref_id=place.consultation,
            ),
            consultation=place.patient is not None,
            is_member=user in place.members,
            facts=policy.Facts(rels),
        )  # fmt: skip

    async def callee(self, ctx: RequestContext, place: Place, to: str | None) -> str:
        """The member of ``place`` to ring (``to``, or the only other member); raises
        ``bad_request`` (none or ambiguous, or myself) or ``forbidden`` (audited)."""
        me = ctx.principal.user_id
        assert place.conv is not None
        if to is None:
            others = sorted(place.members - {me})
            if len(others) != 1:
                raise HandlerError(ErrorCode.BAD_REQUEST, "say whom to call (to)")
            to = others[0]
        if to == me:
            raise HandlerError(ErrorCode.BAD_REQUEST, "one cannot call oneself")
        try:
            found = await self.facts.users([to])
        except SQLAlchemyError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "store unavailable") from exc
        fact = found.get(to)
        if fact is None or to not in place.members:
            raise self.deny(ctx, place.conv, "callee_not_member")
        decision = await self.decide(place, to, fact.org_id, fact.role)
        if not decision:
            raise self.deny(ctx, place.conv, f"callee_{decision.reason}"[:64])
        return to

    async def echo(self, ctx: RequestContext) -> tuple[Place, str]:
        """A test call's place and the echo account to ring; raises HandlerError."""
        p = ctx.principal
        try:
            found = await self.facts.users(self.echo_users)
        except SQLAlchemyError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "store unavailable") from exc
        available = sorted(u for u in found if u != p.user_id)
        if not available:
            raise HandlerError(ErrorCode.NOT_FOUND, "no echo service is configured")
        subject = policy.Subject(p.user_id, p.org_id, p.role)
        decision = policy.echo_call(subject, echo_service=True)
        if not decision:
            raise self.deny(ctx, "echo", decision.reason)
        # spread the load over the echo accounts (each account rings its devices)
        callee = available[hash(ctx.peer.conn_id) % len(available)]
        return Place(None, p.org_id, None, None, frozenset({p.user_id, callee})), callee

    async def still_allowed(
        self, conv: str | None, members: frozenset[str], user: str
    ) -> policy.Decision:
        """Rule 7 again for a party of a call (at accept and resume): rights may have
        changed. ``conv`` None: a test call between ``members``."""
        if conv is None:
            # the echo side must still be a registered echo; the caller any user
            return (
                policy.allow("echo_test")
                if user in members and (members & self.echo_users)
                else policy.deny("not_echo_service")
            )
        place = await self.load(conv)
        if place is None:
            return policy.deny("not_found")
        try:
            found = await self.facts.users([user])
        except SQLAlchemyError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "store unavailable") from exc
        fact = found.get(user)
        if fact is None:
            return policy.deny("inactive")
        return await self.decide(place, user, fact.org_id, fact.role)
