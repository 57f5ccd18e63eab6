"""Pages are bounded by bytes as well as by count, and chat.list is paginated."""

from __future__ import annotations

from tests.chat.helpers import peer
from tests.hubtest import RunningHub

LONG = "x" * 3900  # near the 4,000-character limit


async def test_a_history_of_long_messages_comes_in_byte_bounded_pages(hub: RunningHub) -> None:
    async with peer(hub, "alice") as alice:
        conv = (await alice.ok("chat.create", kind="direct", members=["bob"]))["conv"]
        for i in range(300):
            await alice.ok("chat.send", conv=conv, client_msg_id=f"m{i}", text=f"{i}{LONG}")
    async with peer(hub, "bob") as bob:
        page = await bob.ok("chat.history", conv=conv, limit=500)
        assert page["more"] is True  # cut by bytes, not by the 500 asked
        assert 0 < len(page["events"]) < 300
        seqs = [e["seq"] for e in page["events"]]
        assert seqs == list(range(301 - len(seqs), 301))  # the newest ones, in order
        older = await bob.ok("chat.history", conv=conv, before=seqs[0], limit=500)
        assert [e["seq"] for e in older["events"]][-1] == seqs[0] - 1
        # sync replays the whole history in steps the socket can take, never 4009
        got: list[int] = []
        last = 0
        while True:
            step = await bob.ok("chat.sync", conv=conv, after_seq=last, limit=500)
            while len(got) < step["last_seq"]:
                got.append((await bob.event("message"))["seq"])
            last = step["last_seq"]
            if step["caught_up"]:
                break
        assert got == list(range(1, 301))


async def test_the_conversation_list_is_paginated(hub: RunningHub) -> None:
    async with peer(hub, "alice") as alice:
        made = set()
        for other in ("bob", "carol"):
            made.add((await alice.ok("chat.create", kind="direct", members=[other]))["conv"])
        made.add((await alice.ok("chat.create", kind="group", members=["bob", "carol"]))["conv"])
        first = await alice.ok("chat.list", limit=2)
        assert (len(first["conversations"]), first["more"]) == (2, True)
        rest = await alice.ok("chat.list", limit=2, after=first["next"])
        assert (len(rest["conversations"]), rest["more"]) == (1, False)
        listed = [c["conv"] for c in first["conversations"] + rest["conversations"]]
        assert sorted(listed) == listed
        assert set(listed) == made
        group = next(
            c for c in rest["conversations"] + first["conversations"] if c["kind"] == "group"
        )
        assert sorted(group["members"]) == ["alice", "bob", "carol"]
