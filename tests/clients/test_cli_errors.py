"""medhub-chat when things go wrong, run as a person runs it: the installed script, a real hub.

Errors a user can cause print one line on stderr that says what to do, never a
traceback, and exit non-zero; ``tail`` survives a hub restart.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx

from clients.sdk import MedhubClient
from server.accounts import totp
from tests.accountstest import PASSWORD, Enrolled, accounts_settings, enrol
from tests.clients.clitest import (
    CLI,
    TIME,
    WAIT_S,
    assert_one_line,
    cli_env,
    read_until,
    run_cli,
)
from tests.hubtest import RunningHub, free_socket, run_hub


async def test_unreachable_hub_one_line_each(tmp_path: Path) -> None:
    with free_socket() as sock:  # bound, never listening: connections are refused
        server = f"http://127.0.0.1:{sock.getsockname()[1]}"
        env = cli_env(tmp_path, server, "t" * 43)
        fast = ("--connect-timeout", "0.5")
        for command in (["conversations"], ["send", "c-1", "hi"], ["tail", "c-1"]):
            status, out, err = await run_cli(env, *fast, *command)
            assert_one_line(status, err, 3, "no connection to the server", server, "--server")
            assert out == ""
        # Sign-in against nothing: the same kind of line (after getpass's own warning).
        status, out, err = await run_cli(
            env, "--server", server, "login", "--email", "a@x.test", stdin=b"pw\n123456\n"
        )
        assert "Traceback" not in err, err
        assert status == 3, err
        assert err.strip().splitlines()[-1].startswith("medhub-chat: no connection to the server")
        # A malformed --server is a usage error.
        status, _, err = await run_cli(env, "--server", "127.0.0.1:8000", "conversations")
        assert status == 2
        assert "Traceback" not in err
        assert "http:// or https://" in err


async def sign_in_pair(hub: RunningHub) -> tuple[MedhubClient, Enrolled, str, str]:
    """alice (an SDK client) and bob's bearer token; a direct conversation with "hello"."""
    org = (await hub.components.accounts.admin.create_org(None, "Clinique A")).id
    async with httpx.AsyncClient(base_url=hub.api) as http:
        now = time.time()
        a = await enrol(http, hub.components.accounts, org, "practitioner", "a@x.test", now)
        b = await enrol(http, hub.components.accounts, org, "practitioner", "b@x.test", now)
    step = totp.step_at(time.time()) + 1  # enrolment spent the current step
    alice = MedhubClient(hub.http, backoff_initial_s=0.05, backoff_max_s=0.5)
    bob = MedhubClient(hub.http)
    await alice.sign_in(a.email, PASSWORD, totp.code_at(a.secret, step))
    bob_token = (await bob.sign_in(b.email, PASSWORD, totp.code_at(b.secret, step))).token
    await alice.connect()
    conv = await alice.create_conversation("direct", [b.user_id])
    assert await alice.send_message(conv, "hello") == 1
    return alice, b, bob_token, conv


async def test_revoked_session_one_line(tmp_path: Path) -> None:
    settings = accounts_settings(tmp_path, shutdown_grace_s=1.0)
    async with run_hub(settings) as hub:
        alice, _, token, conv = await sign_in_pair(hub)
        try:
            env = cli_env(tmp_path, hub.http, token)
            status, out, err = await run_cli(env, "conversations")
            assert status == 0, err
            assert conv in out

            tail = await asyncio.create_subprocess_exec(
                CLI, "tail", conv, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True,
            )  # fmt: skip
            assert tail.stdout is not None
            assert tail.stderr is not None
            await asyncio.wait_for(read_until(tail.stdout, "hello", []), WAIT_S)
            async with httpx.AsyncClient(base_url=hub.api) as http:
                r = await http.post("/logout", headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 200, r.text
            err = (await asyncio.wait_for(tail.stderr.read(), WAIT_S)).decode()
            assert_one_line(await tail.wait(), err, 1, "session has ended", "medhub-chat login")

            for command in (["conversations"], ["send", conv, "hi"], ["tail", conv]):
                status, out, err = await run_cli(env, *command)
                assert_one_line(status, err, 1, "session has ended", "medhub-chat login")
                assert out == ""
        finally:
            await alice.close()


async def test_tail_survives_a_hub_restart(tmp_path: Path) -> None:
    """The hub stops while ``tail`` runs: it says so, reconnects, and misses nothing."""
    settings = accounts_settings(tmp_path, shutdown_grace_s=1.0)
    async with run_hub(settings) as first:
        port = first.port
        alice, _, token, conv = await sign_in_pair(first)
        env = cli_env(tmp_path, first.http, token)
        tail = await asyncio.create_subprocess_exec(
            CLI, "tail", conv, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True,
        )  # fmt: skip
        assert tail.stdout is not None
        assert tail.stderr is not None
        out: list[str] = []
        err: list[str] = []
        try:
            await asyncio.wait_for(read_until(tail.stdout, "hello", out), WAIT_S)
            first.server.should_exit = True  # stop this hub now; the context exits later
            await asyncio.wait_for(first.task, WAIT_S)
            await asyncio.wait_for(read_until(tail.stderr, "connection lost", err), WAIT_S)
            async with run_hub(settings, port=port):
                assert await alice.send_message(conv, "after the restart") == 2
                await asyncio.wait_for(read_until(tail.stdout, "after the restart", out), WAIT_S)
                await asyncio.wait_for(read_until(tail.stderr, "reconnected", err), WAIT_S)
        finally:
            await alice.close()
            if tail.returncode is None:
                tail.terminate()
            await tail.wait()
    lines = "".join(out).splitlines()
    assert len(lines) == 2, lines  # each once, in order, readable: "[10:42] Ada Lovelace: hello"
    assert re.fullmatch(TIME + " Ada Lovelace: hello", lines[0]), lines
    assert re.fullmatch(TIME + " Ada Lovelace: after the restart", lines[1]), lines
    assert "Traceback" not in "".join(err)
