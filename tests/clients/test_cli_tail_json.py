"""``medhub-chat tail CONV --json`` as a script runs it: the installed command at a pipe, a
real hub, two conversations of the same person with messages arriving in both."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx

from clients.sdk import MedhubClient
from server.accounts import totp
from tests.accountstest import PASSWORD, Enrolled, accounts_settings, enrol
from tests.clients.clitest import CLI, WAIT_S, cli_env, ok, read_until
from tests.hubtest import RunningHub, run_hub


async def alice_and_bob(hub: RunningHub) -> tuple[MedhubClient, Enrolled, Enrolled]:
    """Alice signed in with the SDK; Bob enrolled (his token is the CLI's session)."""
    org = (await hub.components.accounts.admin.create_org(None, "Clinique A")).id
    async with httpx.AsyncClient(base_url=hub.api) as http:
        now = time.time()
        a = await enrol(http, hub.components.accounts, org, "practitioner", "a@x.test", now,
                        name="Dr Alice Martin")  # fmt: skip
        b = await enrol(http, hub.components.accounts, org, "practitioner", "b@x.test", now,
                        name="Dr Bob Petit")  # fmt: skip
    alice = MedhubClient(hub.http)
    await alice.sign_in(a.email, PASSWORD, totp.code_at(a.secret, totp.step_at(time.time()) + 1))
    await alice.connect()
    return alice, a, b


async def test_tail_json_prints_the_named_conversation_only_as_json_lines(
    tmp_path: Path,
) -> None:
    async with run_hub(accounts_settings(tmp_path)) as hub:
        alice, a, bob = await alice_and_bob(hub)
        env = cli_env(tmp_path, hub.http, bob.token)  # the CLI runs as Bob
        tail: asyncio.subprocess.Process | None = None
        out: list[str] = []
        try:
            conv = await alice.create_conversation("direct", [bob.user_id])
            await alice.send_message(conv, "hello")
            tail = await asyncio.create_subprocess_exec(
                CLI, "tail", conv, "--json", stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True,
            )  # fmt: skip
            assert tail.stdout is not None
            await asyncio.wait_for(read_until(tail.stdout, '"hello"', out), WAIT_S)
            # a conversation created now: Bob's sockets hear of it (not tail's output)
            other = await alice.create_conversation("group", [bob.user_id], title="Staff room")
            assert other != conv
            await alice.send_message(other, "other: one")
            await alice.send_message(conv, "second")
            await ok(env, "send", other, "other: from bob")
            assert "sent as #3" in await ok(env, "send", conv, "from bob")
            await alice.send_message(other, "other: two")
            await alice.send_message(conv, "last")  # after all the others on the same socket
            await asyncio.wait_for(read_until(tail.stdout, '"last"', out), WAIT_S)
        finally:
            await alice.close()
            if tail is not None and tail.returncode is None:
                tail.terminate()
                await tail.wait()
    assert tail is not None
    assert tail.stdout is not None
    out.append((await tail.stdout.read()).decode())

    lines = [json.loads(line) for line in "".join(out).splitlines()]  # every line is JSON
    assert {line["ch"] for line in lines} == {f"conv:{conv}"}  # nothing of the other one
    messages = [line for line in lines if line["kind"] == "message"]
    assert messages == lines  # no receipts, typing or notices either
    assert [m["data"]["text"] for m in messages] == ["hello", "second", "from bob", "last"]
    assert [m["data"]["seq"] for m in messages] == [1, 2, 3, 4]
    names = {a.user_id: "Dr Alice Martin", bob.user_id: "Dr Bob Petit"}
    senders = [a.user_id, a.user_id, bob.user_id, a.user_id]
    assert [m["data"]["sender"] for m in messages] == senders
    for m in messages:  # the documented fields: ch, seq, kind, data, and the sender's name
        assert set(m) == {"ch", "seq", "kind", "data", "name"}, m
        assert m["data"]["kind"] == "message"
        assert m["name"] == names[m["data"]["sender"]]
