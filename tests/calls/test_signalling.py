"""Call signalling over real sockets: ring, answer, relay, hang up, and the record."""

from __future__ import annotations

import msgpack
import sqlalchemy as sa

from protocol.calls import Signal
from server.calls.tables import call_record
from tests.calls.helpers import ANSWER, OFFER, candidate, parties
from tests.hubtest import RunningHub


async def direct(hub: RunningHub, a: str, b: str) -> str:
    async with parties(hub, a) as (p,):
        return str((await p.ok("chat.create", kind="direct", members=[b]))["conv"])


async def record(hub: RunningHub, call: str) -> sa.Row[object]:
    async with hub.components.database.begin() as conn:
        row = (await conn.execute(sa.select(call_record).where(call_record.c.id == call))).first()
    assert row is not None
    return row


async def test_invite_rings_every_device_first_answer_wins_signals_relayed_in_order(
    hub: RunningHub,
) -> None:
    conv = await direct(hub, "alice", "bob")
    async with parties(hub, "alice", "bob", "bob") as (alice, phone, laptop):
        got = await alice.ok("call.invite", conv=conv, party="alice-dev-1", offer=OFFER)
        assert got["state"] == "ringing"
        assert got["callee"] == "bob"
        call = got["call"]
        for device in (phone, laptop):
            ring = await device.event("ring")
            assert ring["ch"] == f"call:{call}"
            assert ring["data"]["offer"] == OFFER
            assert ring["data"]["caller"] == "alice"
            assert ring["data"]["conv"] == conv
        # the caller trickles before anyone answers: kept, then delivered in order
        for n in range(3):
            await alice.signal(Signal.CANDIDATE, call, candidate(n))
        answer = await phone.ok("call.accept", call=call, party="bob-phone-1", answer=ANSWER)
        assert answer == {"call": call, "state": "connected"}
        assert (await laptop.event("answered_elsewhere"))["data"] == {"call": call}
        assert await laptop.refused(
            "call.accept", call=call, party="bob-lap-01", answer=ANSWER
        ) == ("conflict")
        accepted = await alice.event("accepted")
        assert accepted["data"]["answer"] == ANSWER
        assert accepted["data"]["party"] == "bob-phone-1"
        for n in range(3, 6):
            await alice.signal(Signal.CANDIDATE, call, candidate(n))
        for n in range(6):
            assert await phone.frame() == (Signal.CANDIDATE, call, candidate(n))
        # both ways, renegotiation included
        await phone.signal(Signal.CANDIDATE, call, candidate(99))
        await phone.signal(Signal.END_OF_CANDIDATES, call, b"")
        await alice.signal(Signal.OFFER, call, OFFER.encode())
        assert await alice.frame() == (Signal.CANDIDATE, call, candidate(99))
        assert await alice.frame() == (Signal.END_OF_CANDIDATES, call, b"")
        assert await phone.frame() == (Signal.OFFER, call, OFFER.encode())
        assert laptop.frames.empty()  # only the answering device is a party

        await alice.ws.send(
            alice.codec.encode_raw({"type": "call.quality", "call": call, "rtt_ms": 12.5})
        )
        await alice.ok("ping")  # one socket's messages are handled in order: it is kept
        hung = await phone.ok("call.hangup", call=call, reason="user_hangup")
        assert hung["state"] == "ended"
        for p in (alice, phone):
            ended = await p.event("ended")
            assert ended["data"] == {"call": call, "reason": "user_hangup", "by": "bob"}
    row = await record(hub, call)
    assert (row.caller, row.callee, row.conv_id, row.end_reason, row.ended_by) == (
        "alice", "bob", conv, "user_hangup", "bob",
    )  # fmt: skip
    assert row.answered_us is not None
    assert row.duration_ms is not None
    quality = msgpack.unpackb(row.quality)
    assert [q[1] for q in quality["caller"]] == [12.5]  # [at_ms, rtt_ms, ...]
