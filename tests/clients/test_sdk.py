"""The SDK against a real hub with real sign-in: password + TOTP, ticket, chat, resume."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from clients.sdk import HubError, MedhubClient, TypedEvent
from server.accounts import totp
from tests.accountstest import PASSWORD, accounts_settings, enrol, run_accounts_hub


async def next_message(client: MedhubClient) -> TypedEvent:
    async def first() -> TypedEvent:
        async for ev in client.events():
            if ev.kind == "message":
                return ev
        raise AssertionError("events ended")

    return await asyncio.wait_for(first(), 10)


@pytest.mark.slow
async def test_sign_in_chat_and_resume_after_kills(tmp_path: Path) -> None:
    settings = accounts_settings(tmp_path, ws_rate_per_s=10000.0, ws_rate_burst=10000)
    async with run_accounts_hub(settings) as hub:
        base = f"http://127.0.0.1:{hub.port}"
        org = (await hub.components.accounts.admin.create_org(None, "Clinique A")).id
        async with httpx.AsyncClient(base_url=hub.api) as http:
            now = time.time()
            a = await enrol(http, hub.components.accounts, org, "practitioner", "a@x.test", now)
            b = await enrol(http, hub.components.accounts, org, "practitioner", "b@x.test", now)
        alice, bob = MedhubClient(base), MedhubClient(base)
        step = totp.step_at(time.time()) + 1  # enrolment spent the current step
        await alice.sign_in(a.email, PASSWORD, totp.code_at(a.secret, step))
        await bob.sign_in(b.email, PASSWORD, totp.code_at(b.secret, step))
        await alice.connect()
        await bob.connect()
        try:
            conv = await alice.create_conversation("direct", [b.user_id])
            await bob.follow(conv)
            assert await alice.send_message(conv, "hello", client_msg_id="m0") == 1
            first = await next_message(bob)
            assert first.seq == 1
            assert first.data.text == "hello"
            assert first.data.sender == a.user_id
            # a retry of the same client id answers the same seq
            assert await alice.send_message(conv, "hello", client_msg_id="m0") == 1

            got: list[int] = []
            for phase in range(4):  # a burst, then the receiver's socket is killed
                burst = [alice.send_message(conv, f"m{phase}-{i}") for i in range(15)]
                sending = asyncio.ensure_future(asyncio.gather(*burst))
                for _ in range(15):
                    got.append((await next_message(bob)).seq)
                await sending
                bob.kill_socket()  # reconnects with backoff, then chat.sync resumes
            assert got == list(range(2, 62))  # each exactly once, in order
            assert bob.reconnects >= 3
            assert await bob.send_message(conv, "back") == 62  # waits for the new socket
            (state,) = await alice.presence([b.user_id])
            assert state.state == "online"
            page, more = await bob.history(conv, before=3, limit=5)
            assert [e.seq for e in page] == [1, 2]
            assert more is False
            with pytest.raises(HubError) as info:
                await alice.request("chat.sync", conv="c-nope")
            assert info.value.code == "not_found"
        finally:
            await alice.close()
            await bob.close()


async def test_names_edits_and_every_page_of_conversations(tmp_path: Path) -> None:
    """names() tells who people are (only those I may see); edit and delete my own
    messages only; conversations() returns every page."""
    settings = accounts_settings(tmp_path)
    async with run_accounts_hub(settings) as hub:
        admin = hub.components.accounts.admin
        org_a, org_b = (
            (await admin.create_org(None, "A")).id,
            (await admin.create_org(None, "B")).id,
        )
        async with httpx.AsyncClient(base_url=hub.api) as http:
            now = time.time()
            accounts = hub.components.accounts
            a = await enrol(
                http, accounts, org_a, "practitioner", "a@x.test", now, name="Alice Martin"
            )
            b = await enrol(
                http, accounts, org_a, "practitioner", "b@x.test", now, name="Bob Durand"
            )
            c = await enrol(http, accounts, org_b, "practitioner", "c@x.test", now, name="Carol")
        alice, bob = MedhubClient(hub.http, token=a.token), MedhubClient(hub.http, token=b.token)
        await alice.connect()
        await bob.connect()
        try:
            people = await alice.names([b.user_id, c.user_id, a.user_id])
            assert {uid: p.name for uid, p in people.items()} == {
                a.user_id: "Alice Martin",
                b.user_id: "Bob Durand",
            }  # Carol is in another organisation: not told, not an error
            assert people[b.user_id].role == "practitioner"

            conv = await alice.create_conversation("direct", [b.user_id])
            for title in ("one", "two"):
                await alice.create_conversation("group", [b.user_id], title=title)
            listed = await alice.conversations(page_size=2)
            assert len({x["conv"] for x in listed}) == 3

            assert await alice.send_message(conv, "helo") == 1
            assert await alice.edit_message(conv, 1, "hello") == (2, 2)
            with pytest.raises(HubError) as info:
                await bob.edit_message(conv, 1, "not mine")
            assert info.value.code == "forbidden"
            (first, *_), _ = await bob.history(conv, limit=5)
            assert (first.text, first.version) == ("hello", 2)
            assert await alice.delete_message(conv, 1) == 3
            (first, *_), _ = await bob.history(conv, limit=5)
            assert first.text is None
            assert await bob.mark_read(conv) == 3
        finally:
            await alice.close()
            await bob.close()
