"""The SDK's call API (clients/calls.py) against a real hub: rings, busy, glare, signals, resume."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from clients.calls import CallBusyError, Calls, GlareError
from clients.sdk import MedhubClient
from protocol.calls import Signal
from tests.calls.helpers import ANSWER, OFFER
from tests.hubtest import RunningHub, token_for


@pytest.fixture
async def sdk(hub: RunningHub) -> AsyncIterator[dict[str, tuple[MedhubClient, Calls]]]:
    made: dict[str, tuple[MedhubClient, Calls]] = {}
    for name, user in (("alice", "alice"), ("bob", "bob"), ("bob2", "bob"), ("carol", "carol")):
        client = MedhubClient(
            hub.http, token=token_for(user), use_ticket=False, backoff_initial_s=0.05
        )
        made[name] = (client, Calls(client))
        await client.connect()
    try:
        yield made
    finally:
        for client, _ in made.values():
            await client.close()


async def test_ring_answer_signals_and_the_other_device(
    sdk: dict[str, tuple[MedhubClient, Calls]],
) -> None:
    (a, alice), (_, bob), (_, bob2) = sdk["alice"], sdk["bob"], sdk["bob2"]
    conv = await a.create_conversation("direct", ["bob"])
    call = await alice.invite(OFFER, conv=conv)
    ring, other = await bob.incoming(5), await bob2.incoming(5)
    assert (ring.id, ring.offer, ring.caller, ring.conv) == (call.id, OFFER, "alice", conv)
    await call.send_candidate({"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host",
                               "sdpMid": "0", "sdpMLineIndex": 0})  # fmt: skip
    await ring.accept(ANSWER)
    assert await call.answered(5) == ANSWER
    assert await other.ended(5) == "answered_elsewhere"
    first = await ring.next_signal(5)
    assert first is not None
    assert first.candidate == {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host",
                               "sdpMid": "0", "sdpMLineIndex": 0}  # fmt: skip
    await ring.send_offer(OFFER)
    got = await call.next_signal(5)
    assert got is not None
    assert (got.kind, got.sdp) == (Signal.OFFER, OFFER)
    await ring.hangup()
    assert await call.ended(5) == "user_hangup"


async def test_busy_and_glare_are_errors_the_caller_can_act_on(
    sdk: dict[str, tuple[MedhubClient, Calls]],
) -> None:
    (a, alice), (_, bob), (c, carol) = sdk["alice"], sdk["bob"], sdk["carol"]
    ab = await a.create_conversation("direct", ["bob"])
    first = await alice.invite(OFFER, conv=ab)
    with pytest.raises(GlareError) as glare:
        await bob.invite(OFFER, conv=ab)
    assert glare.value.call.id == first.id
    await glare.value.call.accept(ANSWER)
    await first.answered(5)
    cb = await c.create_conversation("direct", ["bob"])
    with pytest.raises(CallBusyError):
        await carol.invite(OFFER, conv=cb)
    await first.hangup()


async def test_signals_sent_while_reconnecting_leave_after_the_resume_in_order(
    sdk: dict[str, tuple[MedhubClient, Calls]],
) -> None:
    (a, alice), (_, bob) = sdk["alice"], sdk["bob"]
    conv = await a.create_conversation("direct", ["bob"])
    call = await alice.invite(OFFER, conv=conv)
    ring = await bob.incoming(5)
    await ring.accept(ANSWER)
    await call.answered(5)
    a.kill_socket()  # the SDK reconnects and resumes the call by itself
    changes = ring.changes()
    assert (await anext(changes)).kind == "accepted"
    assert (await anext(changes)).kind == "reconnecting"
    # alice's client is reconnecting, resuming or resumed: whichever, in order
    for n in range(3):
        await call.send_candidate({"candidate": f"candidate:{n} 1 udp 1 127.0.0.1 9 typ host",
                                   "sdpMid": "0", "sdpMLineIndex": 0})  # fmt: skip
    assert (await anext(changes)).kind == "resumed"
    for n in range(3):
        signal = await ring.next_signal(5)
        assert signal is not None
        assert signal.candidate is not None
        assert signal.candidate["candidate"].startswith(f"candidate:{n} ")
    await call.hangup()
    assert await ring.ended(5) == "user_hangup"
