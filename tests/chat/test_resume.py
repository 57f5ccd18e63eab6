"""A receiver killed at random during a 1,000-message burst gets every message exactly once."""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.chat.helpers import Peer, open_peer, peer
from tests.hubtest import RunningHub

TOTAL = 1000
SENDERS = 4


@pytest.mark.slow
async def test_killed_receiver_resumes_exactly_once(hub: RunningHub) -> None:
    rng = random.Random(5)
    async with peer(hub, "alice") as alice:
        conv = (await alice.ok("chat.create", kind="group", members=["bob", "carol"]))["conv"]
        senders = [await open_peer(hub, "alice" if i % 2 else "carol") for i in range(SENDERS)]
        per = TOTAL // SENDERS

        async def send_all(p: Peer, n: int) -> None:
            for i in range(per):
                await p.ok("chat.send", conv=conv, client_msg_id=f"s{n}-{i}", text=f"{n}:{i}")

        received: list[int] = []
        texts: list[str] = []
        kills = 0
        receiver = await open_peer(hub, "bob")
        await receiver.ok("chat.sync", conv=conv, after_seq=0)
        sending = asyncio.gather(*(send_all(p, n) for n, p in enumerate(senders)))
        while len(received) < TOTAL:
            if rng.random() < 0.01:  # kill mid-burst, reconnect, resume from the last seq
                receiver.abort()
                kills += 1
                receiver = await open_peer(hub, "bob")
                last = received[-1] if received else 0
                while True:
                    step = await receiver.ok("chat.sync", conv=conv, after_seq=last, limit=100)
                    if step["caught_up"]:
                        break
                    while not received or received[-1] < step["last_seq"]:  # drain replay
                        ev = await receiver.event("message")
                        assert ev["seq"] == (received[-1] if received else 0) + 1
                        received.append(ev["seq"])
                        texts.append(ev["data"]["text"])
                    last = step["last_seq"]
                continue
            ev = await receiver.event("message")
            expected = (received[-1] if received else 0) + 1
            assert ev["seq"] == expected, (ev["seq"], expected)  # no gap, no duplicate
            received.append(ev["seq"])
            texts.append(ev["data"]["text"])
        await sending
        assert received == list(range(1, TOTAL + 1))
        assert sorted(texts) == sorted(f"{n}:{i}" for n in range(SENDERS) for i in range(per))
        assert kills >= 3
        with pytest.raises(asyncio.TimeoutError):  # nothing more, not even a duplicate
            await receiver.event("message", timeout=0.3)
        await receiver.close()
        for p in senders:
            await p.close()


async def test_hello_resume_replays_what_was_missed_then_follows_live(hub: RunningHub) -> None:
    async with peer(hub, "alice") as alice:
        conv = (await alice.ok("chat.create", kind="direct", members=["bob"]))["conv"]
        for i in range(5):
            await alice.ok("chat.send", conv=conv, client_msg_id=f"m{i}", text=f"t{i}")
        ch = f"conv:{conv}"
        bob = await open_peer(hub, "bob", resume={ch: 2, "conv:c-nosuch": 0, "weird:x": 1})
        replayed = [(await bob.event("message"))["seq"] for _ in range(3)]
        assert replayed == [3, 4, 5]
        outcomes = {}
        for _ in range(3):
            ev = await bob.event()
            outcomes[ev["ch"]] = (ev["kind"], ev["data"])
        assert outcomes[ch] == ("resumed", {"last_seq": 5, "caught_up": True})
        assert outcomes["conv:c-nosuch"][0] == "resume_failed"
        assert outcomes["conv:c-nosuch"][1]["code"] == "not_found"
        assert outcomes["weird:x"][1]["code"] == "unknown_type"
        await alice.ok("chat.send", conv=conv, client_msg_id="m5", text="live")
        assert (await bob.event("message"))["seq"] == 6  # followed live, no chat.sync needed
        await bob.close()


async def test_hello_resume_of_someone_elses_conversation_is_refused(hub: RunningHub) -> None:
    async with peer(hub, "alice") as alice:
        conv = (await alice.ok("chat.create", kind="direct", members=["bob"]))["conv"]
        await alice.ok("chat.send", conv=conv, client_msg_id="m0", text="private")
        carol = await open_peer(hub, "carol", resume={f"conv:{conv}": 0})
        ev = await carol.event()
        assert (ev["kind"], ev["data"]["code"]) == ("resume_failed", "forbidden")
        with pytest.raises(asyncio.TimeoutError):  # and nothing of the conversation
            await carol.event("message", timeout=0.3)
        await carol.close()
