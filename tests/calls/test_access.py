"""Who may call whom, and bad input: refused with stable codes, never disturbing a call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from protocol.calls import CALL_FRAME_PREFIX, Signal
from server.accounts.tables import care_relationships
from tests.calls.conftest import CALL_SETTINGS
from tests.calls.helpers import ANSWER, OFFER, Party, candidate, parties
from tests.calls.test_signalling import direct
from tests.chat.conftest import CARE, DELEGATED, PEOPLE
from tests.chat.helpers import principals, seed
from tests.hubtest import RunningHub, hub_settings, run_hub


async def connected(hub: RunningHub, caller: Party, callee: Party, conv: str) -> str:
    invite = {"party": f"{caller.user}-dev-1", "offer": OFFER, "to": callee.user}
    call = (await caller.ok("call.invite", conv=conv, **invite))["call"]
    await callee.event("ring", call)
    await callee.ok("call.accept", call=call, party=f"{callee.user}-dev-1", answer=ANSWER)
    await caller.event("accepted", call)
    return str(call)


async def test_only_members_invite_or_are_invited(hub: RunningHub) -> None:
    ab = await direct(hub, "alice", "bob")
    async with parties(hub, "alice", "carol", "dave", "sam", "pat") as (
        alice, carol, dave, sam, pat,
    ):  # fmt: skip
        invite = {"party": "dev-000001", "offer": OFFER}
        assert await carol.refused("call.invite", conv=ab, **invite) == "forbidden"
        assert await dave.refused("call.invite", conv=ab, **invite) == "forbidden"
        assert await carol.refused("call.invite", conv="c-nope", **invite) == "not_found"
        assert await alice.refused("call.invite", conv=ab, to="carol", **invite) == "forbidden"
        assert await alice.refused("call.invite", conv=ab, to="alice", **invite) == "bad_request"
        assert await alice.refused("call.invite", **invite) == "bad_request"  # no conv

        # a consultation: its patient and practitioner call each other; the secretary,
        # a member by delegation, does not take part in calls
        k1 = (await alice.ok("chat.create", kind="consultation", consultation="k1"))["conv"]
        assert await sam.refused("call.invite", conv=k1, to="pat", **invite) == "forbidden"
        assert await alice.refused("call.invite", conv=k1, to="sam", **invite) == "forbidden"
        assert await alice.refused("call.invite", conv=k1, **invite) == "bad_request"  # whom?
        call = (await pat.ok("call.invite", conv=k1, to="alice", **invite))["call"]
        assert (await alice.event("ring", call))["data"]["conv"] == k1
        await alice.ok("call.reject", call=call)
        await pat.event("ended", call)
        await sam.ok("ping")  # a round trip: what the hub sent sam before has arrived
        assert sam.call_events() == []  # nobody else learns of it


async def test_non_parties_cannot_act_on_or_inject_into_a_call(hub: RunningHub) -> None:
    ab = await direct(hub, "alice", "bob")
    async with parties(hub, "alice", "bob", "bob", "carol") as (alice, bob, laptop, carol):
        call = await connected(hub, alice, bob, ab)
        for kind, fields in (
            ("call.accept", {"party": "carol-dev-1", "answer": ANSWER}),
            ("call.resume", {"party": "alice-dev-1"}),
            ("call.hangup", {}),
            ("call.reject", {}),
            ("call.cancel", {}),
        ):
            assert await carol.refused(kind, call=call, **fields) == "not_found", kind
        # injection: a frame naming the call, from a stranger or from a device that is
        # not the party (bob's laptop), is refused and reaches nobody
        for intruder in (carol, laptop):
            await intruder.signal(Signal.CANDIDATE, call, candidate(666))
            error = await intruder.error()
            assert (error["code"], error["ref"]) == ("not_found", "stream:call")
            await intruder.signal(Signal.OFFER, call, OFFER.encode())
            assert (await intruder.error())["code"] == "not_found"
        await alice.signal(Signal.CANDIDATE, call, candidate(1))
        assert await bob.frame() == (Signal.CANDIDATE, call, candidate(1))
        assert alice.frames.empty()
        assert bob.frames.empty()
        await carol.ok("ping")  # a round trip: what the hub sent carol before has arrived
        assert carol.call_events() == []


async def test_malformed_signals_get_errors_and_the_call_goes_on(hub: RunningHub) -> None:
    ab = await direct(hub, "alice", "bob")
    async with parties(hub, "alice", "bob") as (alice, bob):
        assert await alice.refused(
            "call.invite", conv=ab, party="alice-dev-1", offer="hello, not SDP"
        ) == "bad_request"  # fmt: skip
        call = await connected(hub, alice, bob, ab)
        assert await bob.refused(
            "call.accept", call=call, party="bob-dev-02", answer="v=0\r\nx"
        ) in ("bad_request", "conflict")  # fmt: skip
        cid = call.encode()
        bad: list[tuple[bytes, str]] = [
            (CALL_FRAME_PREFIX + b"\x01" + cid[:8], "bad_request"),  # cut short
            (CALL_FRAME_PREFIX + b"\x09" + cid + b"{}", "bad_request"),  # unknown kind
            (CALL_FRAME_PREFIX + b"\x01" + cid + b"not json", "bad_request"),
            (CALL_FRAME_PREFIX + b"\x01" + cid + b'{"candidate":"\xff\xfe"}', "bad_request"),
            (
                CALL_FRAME_PREFIX + b"\x01" + cid + b"{" + b" " * 2000 + b'"candidate"}',
                "bad_request",
            ),
            (CALL_FRAME_PREFIX + b"\x02" + cid + b"x", "bad_request"),  # end-of-candidates: empty
            (CALL_FRAME_PREFIX + b"\x03" + cid + b"m=video\r\n", "bad_request"),
            (
                CALL_FRAME_PREFIX + b"\x04" + cid + b"v=0\r\nno equals sign\r\nm=x\r\n",
                "bad_request",
            ),
            (CALL_FRAME_PREFIX + b"\x03" + cid + b"v=0\r\n" + b"a=x\r\n" * 9000, "too_large"),
            (CALL_FRAME_PREFIX + b"\x01" + b"0123456789abcdef" + candidate(1), "not_found"),
        ]
        for frame, code in bad:
            await alice.send_raw(frame)
            error = await alice.error()
            assert (error["code"], error["ref"]) == (code, "stream:call"), frame[:40]
        # nothing of it reached bob; the call works as before
        await alice.signal(Signal.CANDIDATE, call, candidate(5))
        await alice.signal(Signal.ANSWER, call, ANSWER.encode())
        assert await bob.frame() == (Signal.CANDIDATE, call, candidate(5))
        assert await bob.frame() == (Signal.ANSWER, call, ANSWER.encode())
        assert bob.errors.empty()
        await bob.ok("call.hangup", call=call)
        assert (await alice.event("ended", call))["data"]["reason"] == "user_hangup"


@pytest.fixture
async def echo_hub(tmp_path: Path) -> AsyncIterator[RunningHub]:
    settings = hub_settings(tmp_path, calls_echo_users=["dave"], **CALL_SETTINGS)
    async with run_hub(settings, principals(PEOPLE)) as running:
        await seed(running.components.database, PEOPLE, care=CARE, delegated=DELEGATED)
        yield running


async def test_anyone_test_calls_the_echo_service_whatever_the_organisation(
    echo_hub: RunningHub,
) -> None:
    async with parties(echo_hub, "pat", "dave", "dave", "alice") as (pat, echo1, echo2, alice):
        invite = {"echo": True, "party": "pat-dev-001", "offer": OFFER}
        call = (await pat.ok("call.invite", **invite))["call"]
        await echo1.event("ring", call)
        assert (await echo2.event("ring", call))["data"]["echo"] is True
        await echo2.ok("call.accept", call=call, party="echo-proc-2", answer=ANSWER)
        await echo1.event("answered_elsewhere", call)
        await pat.event("accepted", call)
        # the echo service takes several calls at once
        other = (await alice.ok("call.invite", **{**invite, "party": "alice-dev-1"}))["call"]
        await echo1.event("ring", other)
        await echo1.ok("call.accept", call=other, party="echo-proc-1", answer=ANSWER)
        await echo1.signal(Signal.CANDIDATE, other, candidate(3))
        assert await alice.frame() == (Signal.CANDIDATE, other, candidate(3))
        assert pat.frames.empty()
        # a test call names no conversation; and only the echo service is test-called
        assert await pat.refused("call.invite", conv="c-1", **invite) == "bad_request"
        assert await pat.refused("call.invite", party="pat-dev-001", offer=OFFER) == "bad_request"


async def test_a_party_that_lost_the_right_cannot_resume_and_the_call_ends(
    hub: RunningHub,
) -> None:
    async with parties(hub, "alice", "pat") as (alice, pat):
        k1 = (await alice.ok("chat.create", kind="consultation", consultation="k1"))["conv"]
        call = await connected(hub, pat, alice, k1)
        async with hub.components.database.begin() as conn:  # the care relationship ends
            await conn.execute(sa.update(care_relationships).values(ended_us=2))
        alice.abort()
        await pat.event("reconnecting", call)
        async with parties(hub, "alice") as (again,):
            assert await again.refused("call.resume", call=call, party="alice-dev-1") == (
                "forbidden"
            )
        ended = await pat.event("ended", call)
        assert ended["data"] == {"call": call, "reason": "forbidden", "by": "alice"}
