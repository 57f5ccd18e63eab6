"""The life of a call on one node: events, inbox notices, timers, the end.

Split from :mod:`server.calls.service` (the request handlers). Every node that
holds a party socket of a call (or rings one of the callee's devices) keeps a
:class:`~server.calls.relay.CallView` and the call's timers; every decision is
taken in the shared state (:mod:`server.calls.state`), so several nodes may
arm the same timer and exactly one of them ends the call:

- **ring timeout**: on the caller's node and on every node that rang a device
  of the callee; at the invite's lifetime, the first to claim the call's fate
  ends it (``timeout``);
- **grace period**: a party socket dropped: its node marks the party away and
  publishes ``reconnecting``; that node and the other party's node wait
  ``calls_grace_s``; past it, if the party did not resume, the call ends
  (``timeout``);
- **longest duration**: ``calls_max_duration_s`` after the answer, the call ends
  (``timeout``).

Events travel on the call's channel ``call:<id>`` (RELIABLE: never dropped; a
socket that cannot keep up is closed 4009 and resumes the call) to the party
sockets; the channel's observer keeps every attached node's view current.
Ringing, "answered elsewhere" and the end of an unanswered call travel on the
callee's inbox, to every device on every node.

The node that wins the end claim publishes ``ended``, releases the users'
and conversation's claims and completes the call's record in the database
(through the node's write sequence, with its audit entry).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter

from protocol.calls import ROLES
from protocol.messages import Event
from server.audit.events import Action as AuditAction
from server.audit.events import AuditEvent, audit_id
from server.broker.base import BrokerError
from server.calls import records
from server.calls.relay import CallView, Party, Relay
from server.calls.state import CALLEE, CALLER, CallState, CallStore, Outcome, PartyState, now_ms
from server.channels import ChannelService, encode_event
from server.peer import Peer
from server.store.jobs import JobWriter, write
from server.supervise import Supervisor

log = logging.getLogger(__name__)

#: Inbox notice kinds (per-user topics, every device).
RING = "call.ring"
ANSWERED = "call.answered"
ENDED = "call.ended"

_EVENT = msgspec.msgpack.Decoder(Event)
#: Seconds ``ended`` waits for the call's record to commit, at most.
RECORD_WAIT_S = 5.0


def channel_of(cid: str) -> str:
    """The channel of call ``cid``."""
    return f"call:{cid}"


class NoHistory:
    """The call channels' recovery: call events are ephemeral (seq 0), never replayed."""

    async def read_range(self, channel: str, after: int, until: int) -> list[tuple[int, bytes]]:
        """Nothing is stored."""
        return []

    async def last_seqs(self, channels: Sequence[str]) -> dict[str, int]:
        """No channel has sequenced events."""
        return {}


class Lifecycle:
    """Events, notices, timers and the end of calls on one node (see the module doc)."""

    def __init__(
        self,
        *,
        node_id: str,
        channels: ChannelService,
        store: CallStore,
        relay: Relay,
        jobs: JobWriter,
        supervisor: Supervisor,
        registry: CollectorRegistry,
        grace_s: float,
        max_duration_s: float,
        quality_max: int,
    ) -> None:
        self.node_id = node_id
        self.channels, self.store, self.relay = channels, store, relay
        self.jobs, self.supervisor = jobs, supervisor
        self.grace_s, self.max_duration_s, self.quality_max = grace_s, max_duration_s, quality_max
        self.ringing: dict[str, asyncio.TimerHandle] = {}
        self.m_ended = Counter(
            "medhub_calls_ended", "Calls ended, by reason", ["reason"], registry=registry
        )
        channels.on_inbox(RING, self._on_ring)
        channels.on_inbox(ANSWERED, self._on_answered)
        channels.on_inbox(ENDED, self._on_ended)

    def close(self) -> None:
        """Cancel the ring timers (the views' timers go with the relay)."""
        for timer in self.ringing.values():
            timer.cancel()
        self.ringing.clear()

    # -- events -----------------------------------------------------------------------------
    def publish(self, cid: str, kind: str, data: dict[str, Any]) -> None:
        """Send an event to the call's party sockets, on every node."""
        ch = channel_of(cid)
        self.channels.publish(ch, encode_event(ch, 0, kind, data))

    def observe(self, topic: str, frame: bytes) -> None:
        """The call channel's observer: keep this node's view current (before delivery)."""
        try:
            ev = _EVENT.decode(frame)
            view = self.relay.view(str(ev.data["call"]))
            if view is not None:
                self._apply(topic, view, ev.kind, ev.data)
        except (msgspec.DecodeError, KeyError, TypeError, ValueError, UnicodeEncodeError):
            log.warning("malformed call event")

    def _apply(self, topic: str, view: CallView, kind: str, data: dict[str, Any]) -> None:
        if kind == "accepted":
            self.cancel_ring(view.id)
            view.answered = True
            mine = view.parties[CALLEE]
            if mine is None or mine.conn != data["conn"]:
                self._remote(view, CALLEE, data)
            self.arm_max(view)
        elif kind == "reconnecting":
            role = ROLES.index(data["role"])
            party = view.parties[role]
            if party is not None and party.conn == data["conn"]:
                self.relay.party_away(view, role)
                self.arm_grace(view, role)
        elif kind == "resumed":
            role = ROLES.index(data["role"])
            mine = view.parties[role]
            if mine is None or mine.conn != data["conn"]:
                if mine is not None and mine.peer is not None:  # its old socket, half-open
                    old = mine.peer
                    asyncio.get_running_loop().call_soon(self.channels.detach, old, topic)
                self._remote(view, role, data)
        elif kind == "ended":
            self.cancel_ring(view.id)
            # after this event has reached the local party sockets
            asyncio.get_running_loop().call_soon(self.forget, view)

    def _remote(self, view: CallView, role: int, data: dict[str, Any]) -> None:
        state = PartyState(
            view.state.user(role), str(data["party"]), str(data["node"]), str(data["conn"]),
            True, now_ms(),
        )  # fmt: skip
        self.relay.set_party(view, role, Party(state))

    def forget(self, view: CallView) -> None:
        """Drop an ended call's view here; its party sockets stop following it."""
        ch = channel_of(view.id)
        for peer in view.local_peers():
            self.channels.detach(peer, ch)
        self.relay.drop(view)

    # -- inbox notices (every device of a user) ------------------------------------------------
    def _on_ring(self, user: str, peers: list[Peer], data: Any) -> None:
        try:
            cid = str(data["call"])
            remaining = (int(data["invited_ms"]) + int(data["lifetime_ms"]) - now_ms()) / 1000
        except (KeyError, TypeError, ValueError):
            log.warning("malformed call.ring notice")
            return
        event = Event(ch=channel_of(cid), seq=0, kind="ring", data=data)
        for peer in peers:
            peer.send(event)
        if peers and cid not in self.ringing:
            self.ringing[cid] = self._later(max(remaining, 0.0), lambda: self.ring_over(cid))

    def _on_answered(self, user: str, peers: list[Peer], data: Any) -> None:
        try:
            cid, conn = str(data["call"]), str(data["conn"])
        except (KeyError, TypeError):
            log.warning("malformed call.answered notice")
            return
        self.cancel_ring(cid)
        event = Event(ch=channel_of(cid), seq=0, kind="answered_elsewhere", data={"call": cid})
        for peer in peers:
            if peer.conn_id != conn:
                peer.send(event)

    def _on_ended(self, user: str, peers: list[Peer], data: Any) -> None:
        try:
            cid = str(data["call"])
        except (KeyError, TypeError):
            log.warning("malformed call.ended notice")
            return
        self.cancel_ring(cid)
        event = Event(ch=channel_of(cid), seq=0, kind="ended", data=data)
        for peer in peers:
            peer.send(event)

    # -- timers -------------------------------------------------------------------------------
    def _later(
        self, delay_s: float, work: Callable[[], Coroutine[Any, Any, None]]
    ) -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_later(delay_s, lambda: self.supervisor.spawn("calls-timer", work()))

    def cancel_ring(self, cid: str) -> None:
        """Stop this node's ring timer of ``cid``."""
        timer = self.ringing.pop(cid, None)
        if timer is not None:
            timer.cancel()

    def arm_ring(self, view: CallView) -> None:
        """End the call with ``timeout`` at its lifetime if nobody answered (this node's part)."""
        s = view.state
        remaining = (s.invited_ms + s.lifetime_ms - now_ms()) / 1000
        self.cancel_ring(s.id)
        self.ringing[s.id] = self._later(max(remaining, 0.0), lambda: self.ring_over(s.id))

    def arm_grace(self, view: CallView, role: int) -> None:
        """End the call with ``timeout`` if ``role`` has not resumed after the grace period."""
        old = view.timers.pop(f"grace{role}", None)
        if old is not None:
            old.cancel()
        cid = view.id
        view.timers[f"grace{role}"] = self._later(self.grace_s, lambda: self.grace_over(cid, role))

    def arm_max(self, view: CallView) -> None:
        """End the call with ``timeout`` at its longest duration (once per view)."""
        if "max" not in view.timers:
            cid = view.id
            view.timers["max"] = self._later(self.max_duration_s, lambda: self.too_long(cid))

    async def ring_over(self, cid: str) -> None:
        """The ring lifetime passed: end the call unless it was answered."""
        self.ringing.pop(cid, None)
        snap = await self.store.load(cid)
        if snap is None or snap.fate is not None:
            return
        outcome = Outcome(now_ms(), "timeout")
        if await self.store.claim_fate(cid, outcome, self.max_duration_s):
            await self.finish(snap.state, outcome, None)

    async def grace_over(self, cid: str, role: int) -> None:
        """The grace period of ``role`` passed: end the call unless it resumed."""
        view = self.relay.view(cid)
        if view is not None:
            view.timers.pop(f"grace{role}", None)
        snap = await self.store.load(cid)
        party = None if snap is None else snap.parties[role]
        if snap is not None and snap.ended is None and party is not None and not party.live:
            outcome = Outcome(now_ms(), "timeout")
            won = (
                await self.store.claim_end(cid, outcome)
                if snap.answered
                else await self.store.claim_fate(cid, outcome, self.max_duration_s)
            )
            if won:
                answered = snap.fate.at_ms if snap.fate is not None and snap.answered else None
                await self.finish(snap.state, outcome, answered)
                return
        if view is not None and not view.local_peers():
            self.relay.drop(view)  # no party socket here any more: other nodes carry on

    async def too_long(self, cid: str) -> None:
        """The longest duration passed: end the call."""
        view = self.relay.view(cid)
        if view is not None:
            view.timers.pop("max", None)
            if not view.local_peers():
                self.relay.drop(view)
        snap = await self.store.load(cid)
        if snap is None or snap.ended is not None or snap.fate is None:
            return
        outcome = Outcome(now_ms(), "timeout")
        if await self.store.claim_end(cid, outcome):
            await self.finish(snap.state, outcome, snap.fate.at_ms)

    # -- a party socket dropped ---------------------------------------------------------------
    def party_dropped(self, peer: Peer) -> None:
        """``peer`` closed: for each call it was a party socket of, start the grace period."""
        for view in self.relay.calls_of(peer):
            role = view.role_of(peer)
            if role is not None:
                self.relay.party_away(view, role)
                self.supervisor.spawn("calls-away", self._went_away(view, role, peer.conn_id))

    async def _went_away(self, view: CallView, role: int, conn: str) -> None:
        snap = await self.store.load(view.id)
        party = None if snap is None else snap.parties[role]
        if snap is None or snap.ended is not None or party is None or party.conn != conn:
            return  # ended, or it resumed elsewhere already
        away = msgspec.structs.replace(party, live=False, since_ms=now_ms())
        await self.store.set_party(view.id, role, away, self.max_duration_s)
        self.publish(view.id, "reconnecting", {"call": view.id, "role": ROLES[role], "conn": conn})
        self.arm_grace(view, role)

    # -- the end --------------------------------------------------------------------------------
    async def finish(self, state: CallState, outcome: Outcome, answered_ms: int | None) -> None:
        """End a call whose end (or unanswered fate) this node claimed: complete the record
        (with its audit entry), release the claims, tell everyone.

        ``ended`` goes out once the record is committed (so whoever sees it finds the
        record complete), or after :data:`RECORD_WAIT_S` at most, or at once when the
        write fails: the parties are told in every case. Raises what the store raises
        (the record then stays incomplete).
        """
        cid = state.id
        data: dict[str, Any] = {"call": cid, "reason": outcome.reason}
        if outcome.by is not None:
            data["by"] = outcome.by
        self.m_ended.labels(outcome.reason).inc()
        try:
            quality: dict[str, bytes] = {}
            try:
                quality = await self.store.quality(cid)
                await self.store.release(state, [state.caller, state.callee])
            except BrokerError as exc:
                log.warning("call state not released", extra={"error": type(exc).__name__})
            ending = records.Ending(answered_ms, outcome.at_ms, outcome.reason, outcome.by, quality)
            audit = AuditEvent(
                action=AuditAction.UPDATE, actor=outcome.by, target_type="call",
                target_id=audit_id(cid), reason=outcome.reason,
            )  # fmt: skip
            written = write(self.jobs, lambda c: (records.finish(c, state, ending), [audit]))
            await asyncio.wait_for(written, RECORD_WAIT_S)
        finally:
            self.publish(cid, "ended", data)
            if answered_ms is None and outcome.reason != "busy":  # stop ringing (busy: never rang)
                self.channels.notify_users([state.callee], ENDED, data)

    def add_view(self, state: CallState) -> CallView:
        """This node's view of ``state`` (made when missing)."""
        return self.relay.add_view(CallView(state, self.quality_max))

    def attach_party(self, view: CallView, role: int, state: PartyState, peer: Peer) -> None:
        """``peer`` (here) is ``role`` of the call from now on."""
        self.relay.set_party(view, role, Party(state, peer))

    def refresh_other(self, view: CallView, role: int, state: PartyState | None) -> None:
        """Learn where ``role`` is from the shared state, unless its socket is here."""
        known = view.parties[role]
        if state is not None and (known is None or known.peer is None):
            self.relay.set_party(view, role, Party(state))


__all__ = ["ANSWERED", "CALLEE", "CALLER", "ENDED", "RING", "Lifecycle", "NoHistory", "channel_of"]
