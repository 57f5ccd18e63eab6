"""The shared state of calls, in the broker: what every node must agree on.

A call's parties may sit on different hub processes, and either may move to
another one when it reconnects, so nothing about a call lives in one node's
memory only. Every value has a TTL, so a call whose nodes all died leaves
nothing behind for long. Keys (broker value namespace):

=============================  ============================================  =====================
key                            value (msgpack)                               written
=============================  ============================================  =====================
``calls:state:<id>``           :class:`CallState` (who, where, when)         once, at invite
``calls:offer:<id>``           the invite's SDP offer (while ringing only)   at invite
``calls:answer:<id>``          the winning SDP answer (a caller resuming)    at the answer
``calls:party:<id>:<role>``    :class:`PartyState` (device, node, live)      by that party's node
``calls:fate:<id>``            :class:`Outcome`: answered or ended unanswered  **set-if-absent**
``calls:end:<id>``             :class:`Outcome`: how an answered call ended  **set-if-absent**
``calls:user:<user>``          the call id the user is in (busy detection)   **set-if-absent**
``calls:conv:<conv>``          the conversation's live call (one at a time)  **set-if-absent**
``calls:quality:<id>:<role>``  the party's last quality reports              by that party's node
=============================  ============================================  =====================

The transitions that must happen once are decided by ``set_if_absent`` (one
atomic command on Redis): the **fate** of a ringing call (the first device to
answer wins, or it is cancelled, rejected or timed out: whichever claims first),
the **end** of an answered call, and the **busy** and **glare** checks
(``calls:user`` and ``calls:conv`` claims). A party key is written only by the
node holding that party's socket, so two nodes never race on one value.

Raises :class:`~server.broker.base.BrokerError` from the broker.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from server.broker.base import Broker

#: Roles, as indexes: the caller's party and the callee's.
CALLER, CALLEE = 0, 1
#: Seconds an ended call's markers stay readable (late requests learn it ended).
ENDED_TTL_S = 600.0


class CallState(msgspec.Struct, frozen=True, array_like=True):
    """Who calls whom, where, since when. Immutable once written."""

    id: str
    kind: str  # "conversation" | "echo"
    org: str
    conv: str | None
    consultation: str | None
    patient: str | None
    caller: str
    callee: str
    media: str
    invited_ms: int
    lifetime_ms: int

    def user(self, role: int) -> str:
        """The user id of ``role``."""
        return self.caller if role == CALLER else self.callee


class PartyState(msgspec.Struct, frozen=True, array_like=True):
    """One party: its user, device (party id), node and socket, and whether it is live."""

    user: str
    party: str
    node: str
    conn: str
    live: bool
    since_ms: int


class Outcome(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    """A decided transition: ``answered`` by a party (fate), or ``ended`` with a reason."""

    at_ms: int
    reason: str = ""  # "" when answered
    by: str | None = None  # the user who caused it (None: the hub, e.g. a timeout)
    party: str | None = None  # the answering device
    node: str | None = None
    conn: str | None = None

    @property
    def answered(self) -> bool:
        """True when this fate is an answer."""
        return not self.reason


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything shared about one call, read in one round trip."""

    state: CallState
    fate: Outcome | None
    end: Outcome | None
    parties: tuple[PartyState | None, PartyState | None]

    @property
    def answered(self) -> bool:
        """The call was answered."""
        return self.fate is not None and self.fate.answered

    @property
    def ended(self) -> Outcome | None:
        """How the call ended (unanswered fate, or end), or None while it lasts."""
        if self.end is not None:
            return self.end
        if self.fate is not None and not self.fate.answered:
            return self.fate
        return None

    def role_of(self, user: str, party: str | None = None) -> int | None:
        """The role ``user`` (and device ``party``, when given) holds, or None."""
        for role in (CALLER, CALLEE):
            p = self.parties[role]
            if self.state.user(role) == user and (
                party is None or (p is not None and p.party == party)
            ):
                return role
        return None


_STATE = msgspec.msgpack.Decoder(CallState)
_PARTY = msgspec.msgpack.Decoder(PartyState)
_OUTCOME = msgspec.msgpack.Decoder(Outcome)
_ENC = msgspec.msgpack.Encoder()


def now_ms() -> int:
    """Unix time in milliseconds."""
    return time.time_ns() // 1_000_000


def k_state(cid: str) -> str:
    return f"calls:state:{cid}"


def k_offer(cid: str) -> str:
    return f"calls:offer:{cid}"


def k_answer(cid: str) -> str:
    return f"calls:answer:{cid}"


def k_party(cid: str, role: int) -> str:
    return f"calls:party:{cid}:{role}"


def k_fate(cid: str) -> str:
    return f"calls:fate:{cid}"


def k_end(cid: str) -> str:
    return f"calls:end:{cid}"


def k_user(user: str) -> str:
    return f"calls:user:{user}"


def k_conv(conv: str) -> str:
    return f"calls:conv:{conv}"


def k_quality(cid: str, role: int) -> str:
    return f"calls:quality:{cid}:{role}"


def encode(value: msgspec.Struct) -> bytes:
    """msgpack of a state value."""
    return _ENC.encode(value)


class CallStore:
    """Reads and writes the shared call state through a broker."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def create(self, state: CallState, caller: PartyState, offer: str, ttl_s: float) -> None:
        """Write a new call's state, its caller party and its offer (TTL ``ttl_s``)."""
        await self.broker.set_values(
            [
                (k_state(state.id), encode(state)),
                (k_party(state.id, CALLER), encode(caller)),
                (k_offer(state.id), offer.encode("utf-8")),
            ],
            ttl_s,
        )

    async def load(self, cid: str) -> Snapshot | None:
        """The call's shared state, or None when it never existed or expired."""
        keys = [k_state(cid), k_fate(cid), k_end(cid), k_party(cid, CALLER), k_party(cid, CALLEE)]
        got = await self.broker.get_values(keys)
        raw = got.get(keys[0])
        if raw is None:
            return None
        fate, end, p0, p1 = (got.get(k) for k in keys[1:])
        return Snapshot(
            _STATE.decode(raw),
            None if fate is None else _OUTCOME.decode(fate),
            None if end is None else _OUTCOME.decode(end),
            (
                None if p0 is None else _PARTY.decode(p0),
                None if p1 is None else _PARTY.decode(p1),
            ),
        )

    async def offer(self, cid: str) -> str | None:
        """The ringing call's offer, or None."""
        raw = await self.broker.get_value(k_offer(cid))
        return None if raw is None else raw.decode("utf-8")

    async def answer(self, cid: str) -> str | None:
        """The answered call's SDP answer, or None."""
        raw = await self.broker.get_value(k_answer(cid))
        return None if raw is None else raw.decode("utf-8")

    async def claim_fate(self, cid: str, outcome: Outcome, ttl_s: float) -> bool:
        """Decide a ringing call's fate; True when this claim won (first wins)."""
        return await self.broker.set_if_absent(k_fate(cid), encode(outcome), ttl_s)

    async def claim_end(self, cid: str, outcome: Outcome) -> bool:
        """End an answered call; True when this claim won."""
        return await self.broker.set_if_absent(k_end(cid), encode(outcome), ENDED_TTL_S)

    async def fate(self, cid: str) -> Outcome | None:
        """The decided fate, or None while ringing."""
        raw = await self.broker.get_value(k_fate(cid))
        return None if raw is None else _OUTCOME.decode(raw)

    async def set_party(self, cid: str, role: int, party: PartyState, ttl_s: float) -> None:
        """Write ``role``'s party (only its own node does)."""
        await self.broker.set_value(k_party(cid, role), encode(party), ttl_s)

    async def claim_user(self, user: str, cid: str, ttl_s: float) -> str | None:
        """Mark ``user`` in call ``cid``; None when done, else the call they are in."""
        if await self.broker.set_if_absent(k_user(user), cid.encode(), ttl_s):
            return None
        held = await self.broker.get_value(k_user(user))
        if held is None:  # it expired meanwhile: try once more
            if await self.broker.set_if_absent(k_user(user), cid.encode(), ttl_s):
                return None
            held = await self.broker.get_value(k_user(user))
        return held.decode() if held is not None else cid

    async def claim_conv(self, conv: str, cid: str, ttl_s: float) -> str | None:
        """Make ``cid`` the conversation's call; None when done, else the call it has."""
        if await self.broker.set_if_absent(k_conv(conv), cid.encode(), ttl_s):
            return None
        held = await self.broker.get_value(k_conv(conv))
        return held.decode() if held is not None else cid

    async def extend(self, snap: Snapshot, ttl_s: float, users: Sequence[str], answer: str) -> None:
        """Keep an answered call's keys (its state, the ``users``' claims, the
        conversation's slot) for ``ttl_s``, its longest possible duration, with its
        ``answer`` (for a caller that resumes after missing ``accepted``)."""
        s = snap.state
        items = [(k_state(s.id), encode(s)), (k_answer(s.id), answer.encode("utf-8"))]
        items += [(k_user(u), s.id.encode()) for u in users]
        if s.conv is not None:
            items.append((k_conv(s.conv), s.id.encode()))
        await self.broker.set_values(items, ttl_s)

    async def release(self, state: CallState, users: Sequence[str]) -> None:
        """Forget an ended call's claims: the users' (when still this call) and the offer.

        The conversation's slot is released the same way. A tiny race (the key
        changing between the read and the delete) is harmless: claims are only
        taken while the previous call of these users has ended.
        """
        keys = [k_user(u) for u in users]
        if state.conv is not None:
            keys.append(k_conv(state.conv))
        held = await self.broker.get_values(keys)
        for key in keys:
            if held.get(key) == state.id.encode():
                await self.broker.delete_value(key)
        await self.broker.delete_value(k_offer(state.id))
        await self.broker.delete_value(k_answer(state.id))

    async def save_quality(self, cid: str, role: int, reports: bytes, ttl_s: float) -> None:
        """Keep ``role``'s quality reports (msgpack list) with the call."""
        await self.broker.set_value(k_quality(cid, role), reports, ttl_s)

    async def quality(self, cid: str) -> dict[str, bytes]:
        """Both parties' stored quality reports (msgpack lists), by role name."""
        keys = [k_quality(cid, CALLER), k_quality(cid, CALLEE)]
        got = await self.broker.get_values(keys)
        out = {}
        for name, key in zip(("caller", "callee"), keys, strict=True):
            raw = got.get(key)
            if raw is not None:
                out[name] = raw
        return out
