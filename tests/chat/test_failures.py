"""Chat over a real hub when parts fail: the broker, the writer, a client's position or ids."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
import sqlalchemy as sa

from protocol.chat import ChatCreate, ChatHistory, ChatSync
from protocol.errors import ErrorCode
from protocol.presence import PresenceGet
from server.audit.events import INVALID_ID, audit_id
from server.broker.base import BrokerError
from server.chat import store
from server.chat.service import Chat
from server.peer import Peer
from server.presence.service import Presence
from server.router import HandlerError, RequestContext
from server.store.schema import audit_log
from tests.chat.helpers import peer
from tests.hubtest import RunningHub, principal


async def test_a_follower_on_the_sending_node_gets_a_message_whose_publish_failed(
    hub: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = hub.components.broker
    real_publish = broker.publish
    failed: list[str] = []

    async def publish(topic: str, payload: bytes) -> None:
        if topic.startswith("conv:"):
            failed.append(topic)
            raise BrokerError("pub/sub down")
        await real_publish(topic, payload)

    async with peer(hub, "alice") as alice, peer(hub, "bob") as bob:
        conv = (await alice.ok("chat.create", kind="direct", members=["bob"]))["conv"]
        await bob.ok("chat.sync", conv=conv, after_seq=0)
        monkeypatch.setattr(broker, "publish", publish)
        ack = await alice.ok("chat.send", conv=conv, client_msg_id="m1", text="still here")
        assert ack == {"seq": 1, "duplicate": False}
        ev = await bob.event("message", timeout=3.0)
        assert (ev["seq"], ev["data"]["text"]) == (1, "still here")
        assert (await alice.event("message", timeout=3.0))["seq"] == 1
        assert failed == [f"conv:{conv}"]
        monkeypatch.undo()  # the broker is back: its notices are not delivered twice
        await alice.ok("chat.send", conv=conv, client_msg_id="m2", text="and again")
        assert (await bob.event("message"))["seq"] == 2
        assert (await alice.event("message"))["seq"] == 2
        await alice.ok("chat.typing", conv=conv)  # a marker: the notices of seq 2 are through
        assert (await bob.event())["kind"] == "typing"
        assert bob.events.empty()


async def test_sync_beyond_the_last_seq_is_clamped_and_later_events_arrive(
    hub: RunningHub,
) -> None:
    async with peer(hub, "alice") as alice, peer(hub, "bob") as bob:
        conv = (await alice.ok("chat.create", kind="direct", members=["bob"]))["conv"]
        for i in (1, 2):
            await alice.ok("chat.send", conv=conv, client_msg_id=f"m{i}", text=f"m{i}")
        reply = await bob.ok("chat.sync", conv=conv, after_seq=100)
        assert reply == {"last_seq": 2, "caught_up": True}
        assert (await alice.ok("chat.send", conv=conv, client_msg_id="m3", text="m3"))["seq"] == 3
        ev = await bob.event("message", timeout=3.0)
        assert (ev["seq"], ev["data"]["text"]) == (3, "m3")


async def test_a_failed_writer_batch_answers_unavailable_and_the_writer_goes_on(
    hub: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_insert = store.insert_messages
    calls = 0

    def insert_messages(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("injected bug")
        real_insert(*args, **kwargs)

    monkeypatch.setattr(store, "insert_messages", insert_messages)
    async with peer(hub, "alice") as alice, peer(hub, "bob") as bob:
        conv = (await alice.ok("chat.create", kind="direct", members=["bob"]))["conv"]
        await bob.ok("chat.sync", conv=conv)
        reply = await alice.call("chat.send", conv=conv, client_msg_id="m1", text="lost")
        assert reply["type"] == "error", reply
        assert reply["code"] == "unavailable"
        ack = await alice.ok("chat.send", conv=conv, client_msg_id="m1", text="lost")
        assert ack == {"seq": 1, "duplicate": False}  # the failed batch stored nothing
        assert (await alice.ok("chat.send", conv=conv, client_msg_id="m2", text="next")) == {
            "seq": 2,
            "duplicate": False,
        }
        assert [(await bob.event("message"))["seq"] for _ in range(2)] == [1, 2]


async def test_malformed_ids_are_bad_requests_over_the_wire(hub: RunningHub) -> None:
    requests: list[tuple[str, dict[str, Any]]] = [
        ("presence.get", {"users": ["bob smith"]}),
        ("presence.subscribe", {"users": ["bob", "bob smith"]}),
        ("chat.sync", {"conv": "-x"}),
        ("chat.history", {"conv": "-x"}),
        ("chat.send", {"conv": "-x", "client_msg_id": "m1", "text": "hi"}),
        ("chat.create", {"kind": "group", "members": ["-x"]}),
    ]
    async with peer(hub, "alice") as alice:
        for kind, fields in requests:
            reply = await alice.call(kind, **fields)
            assert reply["type"] == "error", reply
            assert reply["code"] == "bad_request", reply


async def denied_targets(hub: RunningHub, actor: str) -> set[str]:
    await hub.components.audit.flush()
    async with hub.components.database.begin(readonly=True) as conn:
        q = sa.select(audit_log.c.target_id).where(
            audit_log.c.actor == actor, audit_log.c.action == "denied"
        )
        return {r.target_id for r in (await conn.execute(q)).all()}


def test_audit_ids_are_sanitised() -> None:
    assert audit_id("c-5e0f") == "c-5e0f"
    assert audit_id("bob smith") == INVALID_ID
    assert audit_id("-x") == INVALID_ID
    assert audit_id("x" * 129) == INVALID_ID


async def test_handlers_given_ids_the_audit_rejects_answer_their_proper_code(
    hub: RunningHub,
) -> None:
    """The decoder refuses such ids now; the handlers must not rely on it."""
    caps = hub.components.capabilities
    presence, chat = cast(Presence, caps.get("presence")), cast(Chat, caps.get("chat"))
    conn = SimpleNamespace(client_address="127.0.0.1", conn_id="conn-1")
    ctx = RequestContext(cast(Peer, conn), principal("alice"), 1)
    got = await presence.get(ctx, PresenceGet(id=1, users=["bob smith"]))
    assert got == {"presence": [], "refused": ["bob smith"]}
    for call in (
        chat.sync(ctx, ChatSync(id=2, conv="-x")),
        chat.history(ctx, ChatHistory(id=3, conv="-x")),
    ):
        with pytest.raises(HandlerError) as info:
            await call
        assert info.value.code == ErrorCode.NOT_FOUND
    with pytest.raises(HandlerError) as info:
        await chat.create(ctx, ChatCreate(id=4, kind="group", members=["-x"]))
    assert info.value.code == ErrorCode.FORBIDDEN
    assert await denied_targets(hub, "alice") == {INVALID_ID}


async def test_a_tampered_message_is_an_integrity_incident_not_a_deleted_one(
    hub: RunningHub,
) -> None:
    import sqlalchemy as sa

    from server.chat.tables import chat_message
    from server.store.schema import audit_log

    async with peer(hub, "alice") as alice:
        conv = (await alice.ok("chat.create", kind="direct", members=["bob"]))["conv"]
        await alice.ok("chat.send", conv=conv, client_msg_id="m1", text="intact")
        db = hub.components.database
        async with db.begin() as conn:  # someone with database access flips a byte
            body = (
                await conn.execute(sa.select(chat_message.c.body).where(chat_message.c.seq == 1))
            ).scalar_one()
            tampered = body[:-1] + bytes([body[-1] ^ 1])
            await conn.execute(
                sa.update(chat_message).where(chat_message.c.seq == 1).values(body=tampered)
            )
        reply = await alice.call("chat.history", conv=conv)
        assert (reply["type"], reply["code"]) == ("error", "internal")
        assert "integrity" in reply["message"]
        edit = await alice.call("chat.edit", conv=conv, seq=1, client_msg_id="e1", text="x")
        assert edit["code"] == "internal"  # never "message already deleted"
    await hub.components.audit.flush()
    text = hub.components.metrics.render().decode()
    assert "medhub_integrity_failures_total 2.0" in text
    async with hub.components.database.begin() as conn:
        reasons = [
            r[0]
            for r in await conn.execute(
                sa.select(audit_log.c.reason).where(audit_log.c.result == "failed")
            )
        ]
    assert reasons.count("integrity_check_failed") == 2
