"""The calls capability: video call signalling between two parties of a conversation.

The hub never carries media: it makes two peers meet (``protocol/calls.py``,
``docs/calls.md``). Request handlers here; events, notices, timers and the end
of a call in :mod:`server.calls.lifecycle`; the shared state in
:mod:`server.calls.state`; the party map and the relay of ``call`` stream
frames in :mod:`server.calls.relay`; authorisation in
:mod:`server.calls.access` (policy rule 7).

Handler errors (``HandlerError``): ``bad_request`` (a malformed SDP, nobody or
oneself to call), ``not_found`` (no such conversation or call, or not one of
its parties: nothing is revealed), ``forbidden`` (the policy refused;
audited), ``conflict`` (already in a call, the conversation already has one,
answered elsewhere, already ended), ``unavailable`` (the broker or the store
failed; retry).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, ClassVar, Self

import msgspec
from prometheus_client import Counter

from protocol.calls import (
    CALL_STREAM,
    ROLES,
    CallAccept,
    CallCancel,
    CallHangup,
    CallIceServers,
    CallInvite,
    CallPending,
    CallQuality,
    CallReject,
    CallResume,
    Quality,
    Ring,
    check_sdp_text,
)
from protocol.errors import ErrorCode
from protocol.messages import ClientMessage
from protocol.streams import StreamKind
from server.audit.events import Action as AuditAction
from server.broker.base import BrokerError
from server.calls import records
from server.calls.access import CallAccess
from server.calls.lifecycle import ANSWERED, RING, Lifecycle, NoHistory, channel_of
from server.calls.relay import Relay
from server.calls.state import (
    CALLEE,
    CALLER,
    ENDED_TTL_S,
    CallState,
    CallStore,
    Outcome,
    PartyState,
    Snapshot,
    k_conv,
    k_user,
    now_ms,
)
from server.calls.tables import call_record
from server.calls.turn import ice_servers
from server.capability import Capability, Node
from server.channels import ChannelClass
from server.peer import Peer
from server.policy import Action
from server.router import HandlerError, RequestContext, Router, StreamContext
from server.sendqueue import Delivery
from server.store.jobs import write

log = logging.getLogger(__name__)

_QUALITY_LIST = msgspec.msgpack.Encoder()


class Calls(Capability):
    """Call signalling of one node (see the module docstring)."""

    name: ClassVar[str] = "calls"
    message_types: ClassVar[tuple[type[ClientMessage], ...]] = (
        CallIceServers, CallInvite, CallAccept, CallReject, CallCancel, CallHangup, CallResume,
        CallPending, CallQuality,
    )  # fmt: skip
    stream_kinds: ClassVar[tuple[StreamKind, ...]] = (CALL_STREAM,)
    policy_actions: ClassVar[frozenset[Action]] = frozenset({Action.CALL_START})
    tables = (call_record,)

    def __init__(self, node: Node) -> None:
        s = self.settings = node.settings
        self.node_id = node.node_id
        self.channels = node.channels
        self.broker = node.broker
        self.jobs = node.writer
        self.store = CallStore(node.broker)
        self.echo_users = set(s.calls_echo_users)
        self.access = CallAccess(node.database, node.facts, node.audit, self.echo_users)
        self.relay = Relay(
            node.node_id, node.channels, node.broker, node.registry,
            buffer_max=s.calls_relay_buffer_frames,
        )  # fmt: skip
        self.life = Lifecycle(
            node_id=node.node_id, channels=node.channels, store=self.store, relay=self.relay,
            jobs=node.writer, supervisor=node.supervisor, registry=node.registry,
            grace_s=s.calls_grace_s, max_duration_s=s.calls_max_duration_s,
            quality_max=s.calls_quality_max_reports,
        )  # fmt: skip
        node.channels.define(
            ChannelClass("call", Delivery.RELIABLE, NoHistory(), observer=self.life.observe)
        )
        self.m_started = Counter(
            "medhub_calls_started", "Calls rung (invites accepted for ringing)",
            registry=node.registry,
        )  # fmt: skip
        self.database = node.database

    @classmethod
    def build(cls, node: Node) -> Self:
        """Calls over the node's broker, channels, database and facts."""
        return cls(node)

    @classmethod
    def add_commands(cls, subparsers: Any) -> None:
        """``medhub calls ...`` (support: show and list call records; the echo account)."""
        from server.calls.cli import add_commands

        add_commands(subparsers)

    def register(self, router: Router) -> None:
        """Route every call request, the quality reports and the ``call`` stream."""
        router.add(CallIceServers, self.ice_servers)
        router.add(CallInvite, self.invite)
        router.add(CallAccept, self.accept)
        router.add(CallReject, self.reject)
        router.add(CallCancel, self.cancel)
        router.add(CallHangup, self.hangup)
        router.add(CallResume, self.resume)
        router.add(CallPending, self.pending)
        router.add_oneway(CallQuality, self.quality)
        router.add_stream(CALL_STREAM, self.frame)

    async def start(self) -> None:
        """Subscribe to this node's relay topic."""
        await self.relay.start()

    async def close(self) -> None:
        """Stop the timers and the relay."""
        self.life.close()
        await self.relay.close()

    def connection_closed(self, peer: Peer) -> None:
        """A party socket dropped: its calls enter their grace period."""
        self.life.party_dropped(peer)

    def health(self) -> dict[str, bool]:
        """The relay topic is subscribed."""
        return {"calls.relay": self.relay.topic_ready}

    # -- the relay (hot path) -----------------------------------------------------------------
    async def frame(self, ctx: StreamContext, payload: memoryview) -> None:
        """A ``call`` stream frame: relay it to the other party, unchanged."""
        self.relay.relay(ctx.peer, payload)

    # -- ICE servers --------------------------------------------------------------------------
    async def ice_servers(self, ctx: RequestContext, msg: CallIceServers) -> dict[str, Any]:
        """STUN/TURN URLs with TURN credentials minted for the caller."""
        s = self.settings
        servers = ice_servers(
            s.calls_stun_urls, s.calls_turn_urls, s.secret_turn, ctx.principal.user_id,
            now_ms() / 1000, s.calls_turn_ttl_s,
        )  # fmt: skip
        return {"ice_servers": servers, "ttl_s": s.calls_turn_ttl_s}

    # -- invite -------------------------------------------------------------------------------
    async def invite(self, ctx: RequestContext, msg: CallInvite) -> dict[str, Any]:
        """Ring the callee's devices (see ``CallInvite``)."""
        problem = check_sdp_text(msg.offer)
        if problem is not None:
            raise HandlerError(ErrorCode.BAD_REQUEST, f"offer: {problem}")
        if msg.echo:
            if msg.conv is not None or msg.to is not None:
                raise HandlerError(ErrorCode.BAD_REQUEST, "a test call names no conv or to")
            place, callee = await self.access.echo(ctx)
        else:
            if msg.conv is None:
                raise HandlerError(ErrorCode.BAD_REQUEST, "conv is required")
            place = await self.access.place(ctx, msg.conv)
            callee = await self.access.callee(ctx, place, msg.to)
        me = ctx.principal.user_id
        ring_ms = int(self.settings.calls_ring_timeout_s * 1000)
        lifetime_ms = min(msg.lifetime_ms or ring_ms, ring_ms)
        cid = secrets.token_hex(8)
        state = CallState(
            cid, place.kind, place.org, place.conv, place.consultation, place.patient, me,
            callee, msg.media, now_ms(), lifetime_ms,
        )  # fmt: skip
        ttl_s = lifetime_ms / 1000 + self.settings.calls_grace_s
        try:
            claimed = await self._claim(ctx, state, ttl_s)
            if isinstance(claimed, dict):
                return claimed  # glare
            busy = claimed
            await self._record(ctx, state)
            if busy:
                outcome = Outcome(now_ms(), "busy", by=callee)
                await self.store.claim_fate(cid, outcome, ENDED_TTL_S)
                await self.life.finish(state, outcome, None)
                return {"call": cid, "state": "ended", "reason": "busy"}
            party = PartyState(
                me, msg.party, self.node_id, ctx.peer.conn_id, True, state.invited_ms
            )
            await self.store.create(state, party, msg.offer, ttl_s)
            view = self.life.add_view(state)
            self.life.attach_party(view, CALLER, party, ctx.peer)
            await self.channels.attach(ctx.peer, channel_of(cid))
        except BrokerError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "broker unavailable") from exc
        self.life.arm_ring(view)
        ring = Ring(
            call=cid, caller=me, offer=msg.offer, media=msg.media, lifetime_ms=lifetime_ms,
            invited_ms=state.invited_ms, conv=place.conv, echo=msg.echo,
        )  # fmt: skip
        self.channels.notify_users([callee], RING, msgspec.to_builtins(ring))
        self.m_started.inc()
        return {"call": cid, "state": "ringing", "callee": callee, "lifetime_ms": lifetime_ms}

    async def _claim(
        self, ctx: RequestContext, state: CallState, ttl_s: float
    ) -> bool | dict[str, Any]:
        """Take the conversation's call slot and the users' (busy, glare).

        Returns True when the callee is busy (the caller's claims are kept, to
        record the call), False when everything is claimed, or the reply of a
        glare. Raises HandlerError ``conflict`` (a call already in this
        conversation, or the caller already in a call).
        """
        cid, me = state.id, state.caller
        if state.conv is not None:
            held = await self.store.claim_conv(state.conv, cid, ttl_s)
            if held is not None:
                snap = await self.store.load(held)
                if snap is None or snap.ended is not None:  # a stale slot: that call is gone
                    await self.broker.delete_value(k_conv(state.conv))
                    held = await self.store.claim_conv(state.conv, cid, ttl_s)
                    snap = None if held is None else await self.store.load(held)
                if held is not None:
                    if (
                        snap is not None
                        and snap.state.callee == me
                        and not snap.answered
                        and snap.ended is None
                    ):  # glare: they are calling me in this conversation right now
                        return {
                            "call": snap.state.id,
                            "state": "glare",
                            "caller": snap.state.caller,
                        }
                    raise HandlerError(ErrorCode.CONFLICT, "this conversation already has a call")
        held = await self.store.claim_user(me, cid, ttl_s)
        if held is not None and held != cid:
            await self.store.release(state, [])
            raise HandlerError(ErrorCode.CONFLICT, "already in a call")
        if state.callee in self.echo_users:
            return False  # an echo service takes many calls at once
        held = await self.store.claim_user(state.callee, cid, ttl_s)
        return held is not None and held != cid

    def _claimed_users(self, state: CallState) -> list[str]:
        """The users whose busy claim a call holds (an echo service holds none)."""
        return [u for u in (state.caller, state.callee) if u not in self.echo_users]

    async def _record(self, ctx: RequestContext, state: CallState) -> None:
        """Commit the call's record (with its audit entry) before anyone rings."""
        audit = [self.access.event(ctx, AuditAction.CREATE, state.id)]
        try:
            await write(self.jobs, lambda c: (records.insert(c, state), audit))
        except Exception as exc:
            await self.store.release(state, [state.caller, state.callee])
            raise HandlerError(ErrorCode.UNAVAILABLE, "call not recorded; retry") from exc

    # -- answer, decline, give up, hang up --------------------------------------------------------
    async def _snapshot(self, ctx: RequestContext, cid: str) -> Snapshot:
        """The call, when the caller is one of its users; else ``not_found``."""
        try:
            snap = await self.store.load(cid)
        except BrokerError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "broker unavailable") from exc
        me = ctx.principal.user_id
        if snap is None or me not in (snap.state.caller, snap.state.callee):
            raise self.access.missing(ctx, cid, "call")
        return snap

    async def _allowed(self, ctx: RequestContext, snap: Snapshot, *, party: bool) -> None:
        """Rule 7 again; a ``party`` that lost its right ends the call (``forbidden``)."""
        s = snap.state
        me = ctx.principal.user_id
        decision = await self.access.still_allowed(s.conv, frozenset({s.caller, s.callee}), me)
        if decision:
            return
        if party and snap.ended is None:
            outcome = Outcome(now_ms(), "forbidden", by=me)
            try:
                won = (
                    await self.store.claim_end(s.id, outcome)
                    if snap.answered
                    else await self.store.claim_fate(s.id, outcome, ENDED_TTL_S)
                )
            except BrokerError as exc:
                raise HandlerError(ErrorCode.UNAVAILABLE, "broker unavailable") from exc
            if won:
                answered = snap.fate.at_ms if snap.fate is not None and snap.answered else None
                await self.life.finish(s, outcome, answered)
        raise self.access.deny(ctx, s.id, decision.reason)

    async def accept(self, ctx: RequestContext, msg: CallAccept) -> dict[str, Any]:
        """Answer from this device; the first device wins (see ``CallAccept``)."""
        problem = check_sdp_text(msg.answer)
        if problem is not None:
            raise HandlerError(ErrorCode.BAD_REQUEST, f"answer: {problem}")
        snap = await self._snapshot(ctx, msg.call)
        me, cid = ctx.principal.user_id, msg.call
        if snap.state.callee != me:
            raise self.access.missing(ctx, cid, "call")
        await self._allowed(ctx, snap, party=False)
        now, conn = now_ms(), ctx.peer.conn_id
        fate = Outcome(now, by=me, party=msg.party, node=self.node_id, conn=conn)
        ttl_s = self.settings.calls_max_duration_s
        try:
            if not await self.store.claim_fate(cid, fate, ttl_s):
                current = await self.store.fate(cid)
                answered = current is not None and current.answered
                raise HandlerError(
                    ErrorCode.CONFLICT, "answered elsewhere" if answered else "the call has ended"
                )
            party = PartyState(me, msg.party, self.node_id, conn, True, now)
            await self.store.set_party(cid, CALLEE, party, ttl_s)
            await self.store.extend(snap, ttl_s, self._claimed_users(snap.state), msg.answer)
            view = self.life.add_view(snap.state)
            view.answered = True
            self.life.refresh_other(view, CALLER, snap.parties[CALLER])
            self.life.attach_party(view, CALLEE, party, ctx.peer)
            await self.channels.attach(ctx.peer, channel_of(cid))
        except BrokerError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "broker unavailable") from exc
        self.life.cancel_ring(cid)
        self.life.arm_max(view)
        self.access.recorder.record(
            self.access.event(ctx, AuditAction.UPDATE, cid, reason="answered")
        )
        data = {"call": cid, "party": msg.party, "node": self.node_id, "conn": conn}
        self.life.publish(cid, "accepted", {**data, "answer": msg.answer})
        self.channels.notify_users([me], ANSWERED, {"call": cid, "conn": conn})
        return {"call": cid, "state": "connected"}

    async def reject(self, ctx: RequestContext, msg: CallReject) -> dict[str, Any]:
        """Decline a ringing call (the callee): it stops ringing on every device."""
        snap = await self._snapshot(ctx, msg.call)
        if snap.state.callee != ctx.principal.user_id:
            raise self.access.missing(ctx, msg.call, "call")
        return await self._unanswered(snap, "rejected", ctx.principal.user_id)

    async def cancel(self, ctx: RequestContext, msg: CallCancel) -> dict[str, Any]:
        """Give up a ringing call (the caller)."""
        snap = await self._snapshot(ctx, msg.call)
        if snap.state.caller != ctx.principal.user_id:
            raise self.access.missing(ctx, msg.call, "call")
        return await self._unanswered(snap, "cancelled", ctx.principal.user_id)

    async def _unanswered(self, snap: Snapshot, reason: str, by: str) -> dict[str, Any]:
        outcome = Outcome(now_ms(), reason, by=by)
        try:
            won = await self.store.claim_fate(snap.state.id, outcome, ENDED_TTL_S)
        except BrokerError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "broker unavailable") from exc
        if not won:
            raise HandlerError(ErrorCode.CONFLICT, "already answered or ended")
        await self.life.finish(snap.state, outcome, None)
        return {"call": snap.state.id, "state": "ended", "reason": reason}

    async def hangup(self, ctx: RequestContext, msg: CallHangup) -> dict[str, Any]:
        """End a call I am a party of (before an answer: cancel or reject)."""
        snap = await self._snapshot(ctx, msg.call)
        me = ctx.principal.user_id
        ended = snap.ended
        if ended is not None:
            return {"call": msg.call, "state": "ended", "reason": ended.reason}
        if not snap.answered:
            reason = "cancelled" if me == snap.state.caller else "rejected"
            return await self._unanswered(snap, reason, me)
        outcome = Outcome(now_ms(), msg.reason, by=me)
        try:
            won = await self.store.claim_end(msg.call, outcome)
        except BrokerError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "broker unavailable") from exc
        if won:
            assert snap.fate is not None
            await self.life.finish(snap.state, outcome, snap.fate.at_ms)
        return {"call": msg.call, "state": "ended", "reason": msg.reason if won else "ended"}

    # -- resume -------------------------------------------------------------------------------
    async def resume(self, ctx: RequestContext, msg: CallResume) -> dict[str, Any]:
        """Take my place in the call again from this socket (see ``CallResume``)."""
        snap = await self._snapshot(ctx, msg.call)
        me, cid = ctx.principal.user_id, msg.call
        role = snap.role_of(me, msg.party)
        if role is None:
            raise self.access.missing(ctx, cid, "call")
        ended = snap.ended
        if ended is not None:
            return {"call": cid, "state": "ended", "reason": ended.reason}
        await self._allowed(ctx, snap, party=True)
        party = PartyState(me, msg.party, self.node_id, ctx.peer.conn_id, True, now_ms())
        try:
            await self.store.set_party(cid, role, party, self.settings.calls_max_duration_s)
            view = self.life.add_view(snap.state)
            view.answered = snap.answered
            self.life.refresh_other(view, 1 - role, snap.parties[1 - role])
            self.life.attach_party(view, role, party, ctx.peer)
            await self.channels.attach(ctx.peer, channel_of(cid))
        except BrokerError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "broker unavailable") from exc
        timer = view.timers.pop(f"grace{role}", None)
        if timer is not None:
            timer.cancel()
        if snap.answered:
            self.life.arm_max(view)
        elif role == CALLER:
            self.life.arm_ring(view)
        data = {"call": cid, "role": ROLES[role], "party": msg.party}
        self.life.publish(cid, "resumed", {**data, "node": self.node_id, "conn": party.conn})
        other = snap.state.user(1 - role)
        reply: dict[str, Any] = {
            "call": cid, "state": "connected" if snap.answered else "ringing",
            "role": ROLES[role], "conv": snap.state.conv, "peer": other,
        }  # fmt: skip
        if snap.answered and role == CALLER:  # it may have missed `accepted` while away
            try:
                reply["answer"] = await self.store.answer(cid)
            except BrokerError as exc:
                raise HandlerError(ErrorCode.UNAVAILABLE, "broker unavailable") from exc
        return reply

    # -- pending ring, quality ---------------------------------------------------------------------
    async def pending(self, ctx: RequestContext, msg: CallPending) -> dict[str, Any]:
        """The call ringing for me now, if any (a device that connected after the ring)."""
        me = ctx.principal.user_id
        try:
            held = await self.broker.get_value(k_user(me))
            snap = None if held is None else await self.store.load(held.decode())
            if snap is None or snap.state.callee != me or snap.fate is not None:
                return {"calls": []}
            offer = await self.store.offer(snap.state.id)
        except BrokerError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "broker unavailable") from exc
        if offer is None:
            return {"calls": []}
        s = snap.state
        ring = Ring(
            call=s.id, caller=s.caller, offer=offer, media=s.media, lifetime_ms=s.lifetime_ms,
            invited_ms=s.invited_ms, conv=s.conv, echo=s.kind == "echo",
        )  # fmt: skip
        return {"calls": [msgspec.to_builtins(ring)]}

    async def quality(self, ctx: StreamContext, msg: CallQuality) -> None:
        """Keep a party's quality report with the call (the newest few, for support)."""
        view = self.relay.view(msg.call)
        role = None if view is None else view.role_of(ctx.peer)
        if view is None or role is None:
            raise HandlerError(ErrorCode.NOT_FOUND, "no such call")
        report = Quality(
            now_ms(), msg.rtt_ms, msg.loss, msg.bitrate_kbps, msg.jitter_ms, msg.frames_per_s
        )
        view.quality[role].append(_QUALITY_LIST.encode(report))
        reports = b"".join([_array_header(len(view.quality[role])), *view.quality[role]])
        try:
            await self.store.save_quality(
                msg.call, role, reports, self.settings.calls_max_duration_s
            )
        except BrokerError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "broker unavailable") from exc


def _array_header(n: int) -> bytes:
    """The msgpack header of an array of ``n`` items."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 65536:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


__all__ = ["CALLEE", "CALLER", "Calls"]
