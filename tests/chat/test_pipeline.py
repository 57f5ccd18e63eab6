"""Several chat.send in flight on one socket: answered in request order, stored in order."""

from __future__ import annotations

from tests.chat.helpers import peer
from tests.hubtest import RunningHub, client


async def test_pipelined_sends_are_answered_and_stored_in_request_order(hub: RunningHub) -> None:
    async with peer(hub, "alice") as alice, peer(hub, "bob") as bob:
        conv = (await alice.ok("chat.create", kind="direct", members=["bob"]))["conv"]
        await bob.ok("chat.sync", conv=conv, after_seq=0)
        async with client(hub, "alice") as raw:
            await raw.request({"type": "chat.sync", "id": "s", "conv": conv, "after_seq": 0})
            sent: list[object] = []
            for i in range(60):  # more than ws_max_pipelined_requests (32)
                await raw.send(
                    {"type": "chat.send", "id": i, "conv": conv, "client_msg_id": f"p{i}",
                     "text": f"n{i}"}
                )  # fmt: skip
                sent.append(i)
                if i == 30:  # a quick request behind slow ones keeps its place
                    await raw.send({"type": "ping", "id": "mid"})
                    sent.append("mid")
            replies, own_events = [], []
            while len(replies) < len(sent) or len(own_events) < 60:
                msg = await raw.recv()
                if msg["type"] in ("result", "error"):
                    replies.append(msg)
                elif msg["type"] == "event":
                    own_events.append(msg["seq"])
        assert own_events == list(range(1, 61))  # the sender's socket follows too
        assert [r["id"] for r in replies] == sent
        seqs = [r["data"]["seq"] for r in replies if r["id"] != "mid"]
        assert seqs == list(range(1, 61))
        texts = []
        while len(texts) < 60:
            texts.append((await bob.event("message"))["data"]["text"])
        assert texts == [f"n{i}" for i in range(60)]
