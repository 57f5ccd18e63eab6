"""Chat over real sockets to a real hub: send, ack, fan-out, history, refusals, audit."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from server.store.schema import audit_log
from tests.chat.helpers import peer
from tests.hubtest import RunningHub


async def denied_rows(hub: RunningHub, actor: str) -> list[sa.Row[object]]:
    await hub.components.audit.flush()
    async with hub.components.database.begin(readonly=True) as conn:
        q = sa.select(audit_log).where(audit_log.c.actor == actor, audit_log.c.action == "denied")
        return list((await conn.execute(q)).all())


async def test_two_users_chat_and_a_stranger_is_refused_and_audited(hub: RunningHub) -> None:
    async with peer(hub, "alice") as alice, peer(hub, "bob", binary=False) as bob:
        created = await alice.ok("chat.create", kind="direct", members=["bob"])
        conv = created["conv"]
        assert created["created"] is True
        again = await alice.ok("chat.create", kind="direct", members=["bob"])
        assert again == {"conv": conv, "created": False}
        assert await bob.ok("chat.sync", conv=conv, after_seq=0) == {
            "last_seq": 0,
            "caught_up": True,
        }

        ack = await alice.ok("chat.send", conv=conv, client_msg_id="m1", text="hello bob")
        assert ack == {"seq": 1, "duplicate": False}
        ev = await bob.event("message")
        assert ev["ch"] == f"conv:{conv}"
        assert ev["seq"] == 1
        assert ev["data"]["text"] == "hello bob"
        assert ev["data"]["sender"] == "alice"
        mine = await alice.event("message")  # the sender's socket follows too
        assert mine["seq"] == 1

        ack = await bob.ok("chat.send", conv=conv, client_msg_id="b1", text="hi alice")
        assert ack["seq"] == 2
        assert (await alice.event("message"))["data"]["text"] == "hi alice"

        # a retry with the same client id never duplicates
        retry = await alice.ok("chat.send", conv=conv, client_msg_id="m1", text="hello bob")
        assert retry == {"seq": 1, "duplicate": True}

        page = await bob.ok("chat.history", conv=conv, limit=10)
        assert [e["seq"] for e in page["events"]] == [1, 2]
        assert page["more"] is False
        older = await bob.ok("chat.history", conv=conv, before=2, limit=10)
        assert [e["text"] for e in older["events"]] == ["hello bob"]

        async with peer(hub, "carol") as carol:
            for kind, fields in [
                ("chat.send", {"client_msg_id": "c1", "text": "let me in"}),
                ("chat.sync", {"after_seq": 0}),
                ("chat.history", {}),
            ]:
                reply = await carol.call(kind, conv=conv, **fields)
                assert reply["type"] == "error", reply
                assert reply["code"] == "forbidden", reply
        rows = await denied_rows(hub, "carol")
        assert len(rows) == 3
        assert {r.reason for r in rows} == {"not_member"}
        assert {r.target_id for r in rows} == {conv}

        listed = await bob.ok("chat.list")
        (entry,) = listed["conversations"]
        assert entry["conv"] == conv
        assert entry["last_seq"] == 2
        assert entry["unread"] == 1
        receipt = await bob.ok("chat.receipt", conv=conv, seq=1, kind="read")
        assert receipt == {"delivered_seq": 1, "read_seq": 1}
        assert (await alice.event("receipt"))["data"]["read_seq"] == 1
        assert (await bob.ok("chat.list"))["conversations"][0]["unread"] == 0


async def test_cross_organisation_attempts_fail(hub: RunningHub) -> None:
    async with peer(hub, "alice") as alice, peer(hub, "dave") as dave:
        reply = await dave.call("chat.create", kind="direct", members=["alice"])
        assert reply["type"] == "error"
        assert reply["code"] == "forbidden"
        conv = (await alice.ok("chat.create", kind="group", members=["bob"], title="ward"))["conv"]
        for kind, fields in [("chat.sync", {}), ("chat.send", {"client_msg_id": "x", "text": "x"})]:
            reply = await dave.call(kind, conv=conv, **fields)
            assert reply["type"] == "error"
            assert reply["code"] == "forbidden"
        reasons = {r.reason for r in await denied_rows(hub, "dave")}
        assert reasons == {"other_org"}


async def test_consultation_conversation_members_come_from_the_policy(hub: RunningHub) -> None:
    async with peer(hub, "pat") as pat, peer(hub, "sam") as sam, peer(hub, "bob") as bob:
        conv = (await pat.ok("chat.create", kind="consultation", consultation="k1"))["conv"]
        await sam.ok("chat.sync", conv=conv)
        await pat.ok("chat.send", conv=conv, client_msg_id="p1", text="my results?")
        assert (await sam.event("message"))["data"]["sender"] == "pat"
        reply = await bob.call("chat.sync", conv=conv)
        assert reply["code"] == "forbidden"
        # a patient may not open staff conversations
        reply = await pat.call("chat.create", kind="direct", members=["alice"])
        assert reply["code"] == "forbidden"


async def test_edit_and_delete_keep_versions(hub: RunningHub) -> None:
    async with peer(hub, "alice") as alice, peer(hub, "bob") as bob:
        conv = (await alice.ok("chat.create", kind="direct", members=["bob"]))["conv"]
        assert (await bob.event())["kind"] == "conversation"  # bob hears of it at once
        await bob.ok("chat.sync", conv=conv)
        await alice.ok("chat.send", conv=conv, client_msg_id="m1", text="draft")
        edit = await alice.ok("chat.edit", conv=conv, seq=1, client_msg_id="e1", text="final")
        assert edit == {"seq": 2, "version": 2}
        reply = await bob.call("chat.edit", conv=conv, seq=1, client_msg_id="e2", text="mine now")
        assert reply["code"] == "forbidden"
        assert (await alice.ok("chat.delete", conv=conv, seq=1, client_msg_id="d1")) == {"seq": 3}
        kinds = [(await bob.event())["kind"] for _ in range(3)]
        assert kinds == ["message", "edit", "delete"]
        versions = (await bob.ok("chat.versions", conv=conv, seq=1))["versions"]
        assert [(v["version"], v["action"], v["by"], v["text"]) for v in versions] == [
            (1, "edit", "alice", "draft"),
            (2, "delete", "alice", "final"),
        ]
        (msg,) = (await bob.ok("chat.history", conv=conv, after=0, limit=1))["events"]
        assert "text" not in msg  # omitted once deleted
        assert msg["deleted_at"]
        assert msg["version"] == 2


async def test_typing_is_forwarded_and_rate_limited(hub: RunningHub) -> None:
    async with peer(hub, "alice") as alice, peer(hub, "bob") as bob:
        conv = (await alice.ok("chat.create", kind="direct", members=["bob"]))["conv"]
        await bob.ok("chat.sync", conv=conv)
        assert await alice.ok("chat.typing", conv=conv) == {"forwarded": True}
        assert await alice.ok("chat.typing", conv=conv) == {"forwarded": False}
        ev = await bob.event("typing")
        assert ev["seq"] == 0
        assert ev["data"] == {"user": "alice"}


async def test_concurrent_senders_keep_one_order(hub: RunningHub) -> None:
    async with peer(hub, "alice") as alice, peer(hub, "bob") as bob, peer(hub, "carol") as watcher:
        conv = (await alice.ok("chat.create", kind="group", members=["bob", "carol"]))["conv"]
        await watcher.ok("chat.sync", conv=conv)
        senders = [alice, bob]

        async def burst(p: object, name: str) -> list[int]:
            out = []
            for i in range(100):
                ack = await p.ok(
                    "chat.send", conv=conv, client_msg_id=f"{name}{i}", text=f"{name} {i}"
                )  # type: ignore[attr-defined]
                out.append(ack["seq"])
            return out

        acks = await asyncio.gather(*(burst(p, n) for p, n in zip(senders, "ab", strict=True)))
        assert sorted(acks[0] + acks[1]) == list(range(1, 201))
        got = [await watcher.event("message") for _ in range(200)]
        assert [e["seq"] for e in got] == list(range(1, 201))
        for name in "ab":  # each sender's messages keep their sending order
            texts = [e["data"]["text"] for e in got if e["data"]["text"].startswith(name)]
            assert texts == [f"{name} {i}" for i in range(100)]


async def test_members_hear_of_a_new_conversation_at_once(hub: RunningHub) -> None:
    async with peer(hub, "alice") as alice, peer(hub, "bob") as bob, peer(hub, "carol") as carol:
        conv = (await alice.ok("chat.create", kind="group", members=["bob", "carol"]))["conv"]
        for member in (bob, carol):
            news = await member.event("conversation")
            assert news["ch"] == f"conv:{conv}"
            assert news["seq"] == 0  # ephemeral: not stored, not replayed
            assert news["data"] == {
                "conv": conv,
                "kind": "group",
                "members": ["alice", "bob", "carol"],
            }
        await bob.ok("chat.sync", conv=conv, after_seq=0)
        await alice.ok("chat.send", conv=conv, client_msg_id="g1", text="welcome")
        assert (await bob.event("message"))["data"]["text"] == "welcome"
        # The creator's socket already follows: it gets the message, not the notice.
        assert (await alice.event())["kind"] == "message"
        # Finding the same direct conversation again announces nothing.
        await alice.ok("chat.create", kind="direct", members=["bob"])
        await alice.ok("chat.create", kind="direct", members=["bob"])
        assert (await bob.event("conversation"))["data"]["kind"] == "direct"
        assert bob.events.empty()
