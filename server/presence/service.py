"""The presence capability: who is online, for those allowed to see it.

Devices are written to the broker's presence registry by
:class:`~server.presence.devices.DeviceRegistry` (batched, bounded). Changes
are published on channel ``presence:<user>`` (a COALESCE channel of the node
channel service: a slow socket gets the latest state, never each flap), as
``event`` kind ``presence`` with ``seq`` 0 and ``data`` a
:class:`~protocol.presence.PresenceState`.

Visibility: rule 5 of :mod:`server.policy` (``presence_visible``); refusals
are audited as ``denied``, reads and follows as ``read`` / ``subscribe``.
Handler errors: ``bad_request`` (too many users followed), ``unavailable``
(broker down).
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar, Self

import msgspec
from prometheus_client import CollectorRegistry

from protocol.errors import ErrorCode
from protocol.messages import ClientMessage
from protocol.presence import (
    MAX_WATCHED_PER_SOCKET,
    PresenceGet,
    PresenceSet,
    PresenceSubscribe,
    PresenceUnsubscribe,
)
from server import policy
from server.audit.events import Action as AuditAction
from server.audit.events import AuditEvent, AuditRecorder, audit_id
from server.audit.events import Result as AuditResult
from server.broker.base import BrokerError
from server.capability import Capability, Node
from server.channels import ChannelClass, ChannelService
from server.facts import Facts, subject_of
from server.peer import Peer
from server.policy import Action, Role
from server.presence.devices import DeviceRegistry, presence_key
from server.router import HandlerError, RequestContext, Router
from server.sendqueue import Delivery
from server.supervise import Supervisor

#: Seconds a device stays in the registry without a refresh.
TTL_S = 30.0
#: Seconds between two refreshes of this node's devices.
REFRESH_S = 10.0


class Presence(Capability):
    """Presence of one node; see the module docstring."""

    name: ClassVar[str] = "presence"
    message_types: ClassVar[tuple[type[ClientMessage], ...]] = (
        PresenceSet,
        PresenceSubscribe,
        PresenceUnsubscribe,
        PresenceGet,
    )
    policy_actions: ClassVar[frozenset[Action]] = frozenset({Action.PRESENCE_SEE})

    def __init__(
        self,
        channels: ChannelService,
        facts: Facts,
        audit: AuditRecorder,
        supervisor: Supervisor,
        node_id: str,
        registry: CollectorRegistry,
        *,
        ttl_s: float = TTL_S,
        refresh_s: float = REFRESH_S,
    ) -> None:
        self.channels, self.facts, self.audit = channels, facts, audit
        self.supervisor = supervisor
        self._watching: dict[Peer, set[str]] = {}
        self._watched: dict[str, int] = {}  # user -> local sockets following them
        self.devices = DeviceRegistry(
            channels,
            node_id,
            registry,
            ttl_s=ttl_s,
            refresh_s=refresh_s,
            watched=lambda: list(self._watched),
        )
        observe = self.devices.observe
        channels.define(ChannelClass("presence", Delivery.COALESCE, observer=observe))

    @classmethod
    def build(cls, node: Node) -> Self:
        """Presence over the node's channels and broker."""
        return cls(
            node.channels, node.facts, node.audit, node.supervisor, node.node_id, node.registry
        )

    def register(self, router: Router) -> None:
        """Route the presence requests."""
        router.add(PresenceSet, self.set_state)
        router.add(PresenceSubscribe, self.subscribe)
        router.add(PresenceUnsubscribe, self.unsubscribe)
        router.add(PresenceGet, self.get)

    async def start(self) -> None:
        """Start the device writer (supervised)."""
        self.supervisor.loop("presence-writer", self.devices.run)

    async def close(self) -> None:
        """Remove this node's devices (best effort) and stop the writer."""
        await self.supervisor.stop("presence-writer")
        with contextlib.suppress(BrokerError):  # else they expire with their TTL
            await self.devices.remove_all()

    # -- sockets ----------------------------------------------------------------------
    def connection_opened(self, peer: Peer) -> None:
        """A socket is a new device, ``online``."""
        self.devices.opened(peer)

    def connection_closed(self, peer: Peer) -> None:
        """A device is gone; its follows end (the channels drop its attachments)."""
        for user in self._watching.pop(peer, set()):
            self._unwatched(user)
        self.devices.closed(peer)

    def _unwatched(self, user: str) -> None:
        left = self._watched.get(user, 0) - 1
        if left > 0:
            self._watched[user] = left
        else:
            self._watched.pop(user, None)

    # -- visibility -----------------------------------------------------------------------
    async def _contacts(self, viewer: policy.Subject) -> list[str]:
        me = viewer.user_id
        rels = await self.facts.relationships_of([me])
        if viewer.role == Role.PATIENT:
            carers = {r.actor_id for r in rels if r.patient_id == me}
            dels = await self.facts.delegations_of(carers)
            return sorted(carers | {d.delegate_id for d in dels if d.practitioner_id in carers})
        colleagues = {u.user_id for u in await self.facts.colleagues(viewer.org_id)}
        practitioners = {me} | {d.practitioner_id for d in viewer.delegations}
        if practitioners != {me}:
            rels = rels | await self.facts.relationships_of(practitioners)
        patients = {r.patient_id for r in rels if r.actor_id in practitioners}
        return sorted((colleagues | patients) - {me})

    async def _visible(
        self, ctx: RequestContext, users: list[str], contacts: bool
    ) -> tuple[list[str], list[str]]:
        p = ctx.principal
        viewer = await subject_of(self.facts, p.user_id, p.org_id, p.role, p.acting_for)
        wanted = list(dict.fromkeys(users))
        if contacts:
            wanted += [u for u in await self._contacts(viewer) if u not in wanted]
        found = await self.facts.users(wanted)
        dels = await self.facts.delegations_of(list(found))
        rels = policy.Facts(await self.facts.relationships_of([p.user_id, *found]))
        allowed, refused = [], []
        for user in wanted:
            fact = found.get(user)
            if fact is None:
                refused.append(user)
                self._audit(ctx, AuditAction.DENIED, user, "unknown_user")
                continue
            target = policy.Subject(
                user, fact.org_id, fact.role, frozenset(d for d in dels if d.delegate_id == user)
            )
            decision = policy.presence_visible(viewer, target, rels)
            if decision:
                allowed.append(user)
            else:
                refused.append(user)
                self._audit(ctx, AuditAction.DENIED, user, decision.reason)
        return allowed, refused

    def _audit(
        self, ctx: RequestContext, action: AuditAction, target: str, reason: str | None = None
    ) -> None:
        p = ctx.principal
        self.audit.record(
            AuditEvent(
                action=action, result=AuditResult.OK if reason is None else AuditResult.DENIED,
                actor=p.user_id, acting_for=p.acting_for, role=p.role, org=p.org_id,
                target_type="presence", target_id=audit_id(target), reason=reason,
                source=ctx.peer.client_address, request_id=ctx.peer.conn_id,
            )
        )  # fmt: skip

    # -- handlers ------------------------------------------------------------------------
    async def set_state(self, ctx: RequestContext, msg: PresenceSet) -> dict[str, Any]:
        """Set this device's state; answers the user's combined state once written."""
        try:
            ps = await self.devices.set(ctx.peer, msg.state)
        except BrokerError as exc:
            raise HandlerError(
                ErrorCode.UNAVAILABLE, "broker unavailable", retry_after_s=1.0
            ) from exc
        return {"state": ps.state}

    async def get(self, ctx: RequestContext, msg: PresenceGet) -> dict[str, Any]:
        """A snapshot of the visible users among those asked."""
        allowed, refused = await self._visible(ctx, msg.users, msg.contacts)
        self._audit(ctx, AuditAction.READ, ctx.principal.user_id)
        return await self._snapshot(allowed, refused)

    async def subscribe(self, ctx: RequestContext, msg: PresenceSubscribe) -> dict[str, Any]:
        """Follow the visible users asked; a snapshot now, changes as events."""
        peer = ctx.peer
        allowed, refused = await self._visible(ctx, msg.users, msg.contacts)
        mine = self._watching.setdefault(peer, set())
        fresh = [u for u in allowed if u not in mine]
        if len(mine) + len(fresh) > MAX_WATCHED_PER_SOCKET:
            raise HandlerError(ErrorCode.BAD_REQUEST, f"at most {MAX_WATCHED_PER_SOCKET} users")
        try:
            await self.channels.attach_many(peer, [presence_key(u) for u in fresh])
        except BrokerError as exc:
            raise HandlerError(
                ErrorCode.UNAVAILABLE, "broker unavailable", retry_after_s=1.0
            ) from exc
        if peer.closing:
            return {"presence": [], "refused": refused}  # closed meanwhile: nothing to follow
        for user in fresh:
            mine.add(user)
            self._watched[user] = self._watched.get(user, 0) + 1
        self._audit(ctx, AuditAction.SUBSCRIBE, ctx.principal.user_id)
        return await self._snapshot(allowed, refused)

    async def unsubscribe(self, ctx: RequestContext, msg: PresenceUnsubscribe) -> dict[str, Any]:
        """Stop following some (or all) users."""
        peer = ctx.peer
        mine = self._watching.get(peer, set())
        for user in list(msg.users or mine):
            if user in mine:
                mine.discard(user)
                self._unwatched(user)
                self.channels.detach(peer, presence_key(user))
        return {}

    async def _snapshot(self, allowed: list[str], refused: list[str]) -> dict[str, Any]:
        try:
            states = await self.devices.states(allowed)
        except BrokerError as exc:
            raise HandlerError(
                ErrorCode.UNAVAILABLE, "broker unavailable", retry_after_s=1.0
            ) from exc
        return {"presence": [msgspec.to_builtins(states[u]) for u in allowed], "refused": refused}


def _unavailable() -> HandlerError:
    return HandlerError(ErrorCode.UNAVAILABLE, "broker unavailable", retry_after_s=1.0)
