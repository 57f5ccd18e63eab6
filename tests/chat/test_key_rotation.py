"""At-rest key rotation over a real hub restart: old messages stay readable, new ones use r2."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from server.chat.tables import chat_message
from server.security.crypto import Keyring
from tests.chat.conftest import CARE, DELEGATED, PEOPLE
from tests.chat.helpers import peer, principals, seed
from tests.hubtest import RunningHub, hub_settings, run_hub

KEY_R1 = base64.b64encode(bytes(range(32))).decode()
KEY_R2 = base64.b64encode(bytes(range(200, 232))).decode()
SECRETS = {
    "secret_audit_key": base64.b64encode(bytes(range(32, 64))).decode(),
    "secret_totp_key": base64.b64encode(bytes(range(64, 96))).decode(),
    "ws_rate_per_s": 100000.0,
    "ws_rate_burst": 100000,
}
ENVELOPES = Keyring({"any": bytes(32)}, "any")  # reads the key id an envelope names


async def stored_key_ids(hub: RunningHub) -> list[str]:
    async with hub.components.database.begin(readonly=True) as conn:
        bodies = (await conn.execute(sa.select(chat_message.c.body).order_by("seq"))).scalars()
        return [ENVELOPES.key_id_of(body) for body in bodies]


async def test_message_sealed_under_r1_is_read_after_rotating_to_r2(tmp_path: Path) -> None:
    users: dict[str, Any] = principals(PEOPLE)
    before = hub_settings(tmp_path, secret_at_rest_key=KEY_R1, **SECRETS)
    async with run_hub(before, users) as hub:
        await seed(hub.components.database, PEOPLE, care=CARE, delegated=DELEGATED)
        async with peer(hub, "alice") as alice:
            conv = (await alice.ok("chat.create", kind="direct", members=["bob"]))["conv"]
            await alice.ok("chat.send", conv=conv, client_msg_id="m1", text="sealed under r1")
        assert await stored_key_ids(hub) == ["r1"]

    after = hub_settings(
        tmp_path,
        secret_at_rest_key=KEY_R2,
        at_rest_key_id="r2",
        secret_at_rest_retired_keys=[f"r1:{KEY_R1}"],
        **SECRETS,
    )
    async with run_hub(after, users) as hub, peer(hub, "bob") as bob:
        await bob.ok("chat.send", conv=conv, client_msg_id="b1", text="sealed under r2")
        page = await bob.ok("chat.history", conv=conv, limit=10)
        assert [e["text"] for e in page["events"]] == ["sealed under r1", "sealed under r2"]
        assert await stored_key_ids(hub) == ["r1", "r2"]

    # Without r1 (index re-derived from r2 too) the old message can no longer be opened.
    lost = hub_settings(
        tmp_path,
        secret_at_rest_key=KEY_R2,
        at_rest_key_id="r2",
        at_rest_index_key_id="r2",
        **SECRETS,
    )
    async with run_hub(lost, users) as hub, peer(hub, "bob") as bob:
        reply = await bob.call("chat.history", conv=conv, limit=10)
        assert reply["type"] == "error", reply
