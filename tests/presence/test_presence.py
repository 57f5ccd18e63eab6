"""Presence over real sockets: devices coming and going, visibility, coalescing."""

from __future__ import annotations

from typing import Any

from tests.chat.helpers import Peer, open_peer, peer
from tests.hubtest import RunningHub


async def next_state(p: Peer, user: str) -> dict[str, Any]:
    while True:
        ev = await p.event("presence")
        if ev["data"]["user"] == user:
            assert ev["ch"] == f"presence:{user}"
            assert ev["seq"] == 0
            return ev["data"]


async def wait_state(p: Peer, user: str, state: str) -> dict[str, Any]:
    while True:
        data = await next_state(p, user)
        if data["state"] == state:
            return data


async def test_presence_follows_devices(hub: RunningHub) -> None:
    async with peer(hub, "alice") as alice:
        snap = await alice.ok("presence.subscribe", users=["bob"])
        assert snap["refused"] == []
        assert [(s["user"], s["state"]) for s in snap["presence"]] == [("bob", "offline")]
        phone = await open_peer(hub, "bob")
        await wait_state(alice, "bob", "online")
        laptop = await open_peer(hub, "bob")
        assert await laptop.ok("presence.set", state="busy") == {"state": "busy"}
        await wait_state(alice, "bob", "busy")
        assert await phone.ok("presence.set", state="in-call") == {"state": "in-call"}
        await wait_state(alice, "bob", "in-call")
        await phone.close()  # the in-call device goes: the other one is still busy
        await wait_state(alice, "bob", "busy")
        await laptop.close()
        gone = await wait_state(alice, "bob", "offline")
        assert gone["last_seen"] > 0
        again = await alice.ok("presence.get", users=["bob"])
        assert again["presence"][0]["state"] == "offline"


async def test_visibility_follows_the_policy(hub: RunningHub) -> None:
    async with peer(hub, "pat") as pat, peer(hub, "alice") as alice, peer(hub, "dave") as dave:
        # the patient sees their practitioner and her secretary, not other staff
        got = await pat.ok("presence.get", users=["alice", "sam", "bob", "dave"])
        assert {s["user"] for s in got["presence"]} == {"alice", "sam"}
        assert set(got["refused"]) == {"bob", "dave"}
        contacts = await pat.ok("presence.get", contacts=True)
        assert {s["user"] for s in contacts["presence"]} == {"alice", "sam"}
        assert (await pat.ok("presence.get", users=["alice"]))["presence"][0]["state"] == "online"
        # staff see colleagues and their own patients; nobody sees across organisations
        mine = await alice.ok("presence.get", contacts=True)
        assert {s["user"] for s in mine["presence"]} == {"bob", "carol", "sam", "pat"}
        bobs = await alice.ok("presence.get", users=["pat", "dave"])
        assert [s["user"] for s in bobs["presence"]] == ["pat"]
        assert bobs["refused"] == ["dave"]
        theirs = await dave.ok("presence.subscribe", users=["alice", "pat"])
        assert theirs == {"presence": [], "refused": ["alice", "pat"]}
        async with peer(hub, "bob") as bob:
            assert (await bob.ok("presence.get", users=["pat"]))["refused"] == ["pat"]
        await hub.components.audit.flush()
