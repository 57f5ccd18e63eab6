"""The call state machine: reject, cancel, timeout, busy, glare, grace period and resume."""

from __future__ import annotations

from protocol.calls import Signal
from tests.calls.helpers import ANSWER, OFFER, candidate, open_party, parties
from tests.calls.test_signalling import direct, record
from tests.hubtest import RunningHub


async def test_reject_cancel_and_timeout_stop_every_device_and_are_recorded(
    hub: RunningHub,
) -> None:
    conv = await direct(hub, "alice", "bob")
    async with parties(hub, "alice", "bob", "bob") as (alice, phone, laptop):
        # rejected by one device: the call ends on every device
        call = (await alice.ok("call.invite", conv=conv, party="alice-dev-1", offer=OFFER))["call"]
        await phone.event("ring")
        await laptop.event("ring")
        assert (await laptop.ok("call.reject", call=call))["reason"] == "rejected"
        assert (await alice.event("ended"))["data"]["reason"] == "rejected"
        assert (await phone.event("ended"))["data"]["reason"] == "rejected"
        assert await phone.refused(
            "call.accept", call=call, party="bob-phone-1", answer=ANSWER
        ) == ("conflict")
        assert (await record(hub, call)).end_reason == "rejected"

        # cancelled by the caller
        call = (await alice.ok("call.invite", conv=conv, party="alice-dev-1", offer=OFFER))["call"]
        await phone.event("ring", call)
        await alice.ok("call.cancel", call=call)
        assert (await phone.event("ended", call))["data"] == {
            "call": call, "reason": "cancelled", "by": "alice",
        }  # fmt: skip
        assert (await alice.event("ended", call))["data"]["reason"] == "cancelled"

        # nobody answers within the lifetime (calls_ring_timeout_s = 1 s)
        call = (await alice.ok("call.invite", conv=conv, party="alice-dev-1", offer=OFFER))["call"]
        assert (await laptop.event("ended", call))["data"] == {"call": call, "reason": "timeout"}
        assert (await alice.event("ended", call))["data"]["reason"] == "timeout"
        row = await record(hub, call)
        assert (row.end_reason, row.answered_us, row.duration_ms) == ("timeout", None, None)


async def test_busy_and_one_call_per_person(hub: RunningHub) -> None:
    ab, cb = await direct(hub, "alice", "bob"), await direct(hub, "carol", "bob")
    async with parties(hub, "alice", "bob", "carol") as (alice, bob, carol):
        call = (await alice.ok("call.invite", conv=ab, party="alice-dev-1", offer=OFFER))["call"]
        await bob.event("ring")
        await bob.ok("call.accept", call=call, party="bob-dev-01", answer=ANSWER)
        got = await carol.ok("call.invite", conv=cb, party="carol-dev-1", offer=OFFER)
        assert (got["state"], got["reason"]) == ("ended", "busy")
        assert (await record(hub, got["call"])).end_reason == "busy"
        assert bob.events.empty() or (await bob.event()).get("kind") != "ring"
        # the caller is in a call already
        ca = await direct(hub, "carol", "alice")
        assert await alice.refused("call.invite", conv=ca, party="alice-dev-2", offer=OFFER) == (
            "conflict"
        )
        await alice.ok("call.hangup", call=call)
        await bob.event("ended")
        # free again once it ended
        again = await carol.ok("call.invite", conv=cb, party="carol-dev-1", offer=OFFER)
        assert again["state"] == "ringing"


async def test_glare_one_invite_wins_the_other_caller_is_told_to_accept(hub: RunningHub) -> None:
    conv = await direct(hub, "alice", "bob")
    async with parties(hub, "alice", "bob") as (alice, bob):
        first = await alice.ok("call.invite", conv=conv, party="alice-dev-1", offer=OFFER)
        second = await bob.ok("call.invite", conv=conv, party="bob-dev-01", offer=OFFER)
        assert second == {"call": first["call"], "state": "glare", "caller": "alice"}
        await bob.event("ring")
        await bob.ok("call.accept", call=first["call"], party="bob-dev-01", answer=ANSWER)
        assert (await alice.event("accepted"))["data"]["answer"] == ANSWER


async def test_a_dropped_party_resumes_within_the_grace_period_else_the_call_ends(
    hub: RunningHub,
) -> None:
    conv = await direct(hub, "alice", "bob")
    async with parties(hub, "alice", "bob") as (alice, bob):
        call = (await alice.ok("call.invite", conv=conv, party="alice-dev-1", offer=OFFER))["call"]
        await bob.event("ring")
        await bob.ok("call.accept", call=call, party="bob-dev-01", answer=ANSWER)
        await alice.event("accepted")

        bob.abort()
        assert (await alice.event("reconnecting"))["data"]["role"] == "callee"
        # frames for a reconnecting party wait for it (in order)
        await alice.signal(Signal.CANDIDATE, call, candidate(1))
        bob2 = await open_party(hub, "bob")
        try:
            assert await bob2.refused("call.resume", call=call, party="someone-else") == (
                "not_found"
            )
            resumed = await bob2.ok("call.resume", call=call, party="bob-dev-01")
            assert resumed == {
                "call": call, "state": "connected", "role": "callee", "conv": conv,
                "peer": "alice",
            }  # fmt: skip
            assert (await alice.event("resumed"))["data"]["role"] == "callee"
            assert await bob2.frame() == (Signal.CANDIDATE, call, candidate(1))
            await bob2.signal(Signal.CANDIDATE, call, candidate(2))
            assert await alice.frame() == (Signal.CANDIDATE, call, candidate(2))

            # gone for longer than calls_grace_s (1 s): the call ends, reason timeout
            bob2.abort()
            await alice.event("reconnecting")
            ended = await alice.event("ended")
            assert ended["data"] == {"call": call, "reason": "timeout"}
        finally:
            await bob2.close()
    row = await record(hub, call)
    assert row.end_reason == "timeout"
    assert row.duration_ms is not None


async def test_json_sockets_get_the_same_frames_and_events(hub: RunningHub) -> None:
    conv = await direct(hub, "alice", "bob")
    async with parties(hub, "alice", "bob", binary=False) as (alice, bob):
        call = (await alice.ok("call.invite", conv=conv, party="alice-dev-1", offer=OFFER))["call"]
        assert (await bob.event("ring"))["data"]["offer"] == OFFER
        await bob.ok("call.accept", call=call, party="bob-dev-01", answer=ANSWER)
        await alice.event("accepted")
        await bob.signal(Signal.CANDIDATE, call, candidate(7))
        assert await alice.frame() == (Signal.CANDIDATE, call, candidate(7))
        await alice.ok("call.hangup", call=call, reason="media_failed")
        assert (await bob.event("ended"))["data"]["reason"] == "media_failed"


async def test_a_device_that_connects_while_ringing_finds_the_call(hub: RunningHub) -> None:
    conv = await direct(hub, "alice", "bob")
    async with parties(hub, "alice") as (alice,):
        call = (await alice.ok("call.invite", conv=conv, party="alice-dev-1", offer=OFFER))["call"]
        async with parties(hub, "bob", "carol") as (bob, carol):
            (ring,) = (await bob.ok("call.pending"))["calls"]
            assert (ring["call"], ring["caller"], ring["offer"]) == (call, "alice", OFFER)
            assert (await carol.ok("call.pending"))["calls"] == []
            await bob.ok("call.accept", call=call, party="bob-dev-01", answer=ANSWER)
            assert (await bob.ok("call.pending"))["calls"] == []
