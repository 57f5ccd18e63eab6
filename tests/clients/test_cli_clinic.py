"""A clinic's day with the command line only: ``medhub`` for the operator, ``medhub-chat``
for everyone else, each person with their profile, the server a real process that is
killed (SIGKILL) and started again under ``medhub-chat tail``."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

import pytest

from tests.clients.clitest import (
    CLI,
    TIME,
    WAIT_S,
    Codes,
    Server,
    assert_one_line,
    cli_env,
    enrol,
    ok,
    read_until,
    run_cli,
)

CONSULTATION = "k-2026-001"


def invitation_in(out: str) -> str:
    """The one-time code printed under "one-time ... code" (medhub admin, medhub-chat admin)."""
    found = re.search(r"one-time \w+ code[^\n]*:\n\s*(\S+)", out)
    assert found, out
    return found.group(1)


def user_in(out: str) -> str:
    found = re.search(r"\bas (u-[0-9a-f]+)", out)
    assert found, out
    return found.group(1)


@pytest.mark.slow
async def test_a_clinic_day_on_the_command_line(tmp_path: Path) -> None:
    server = Server(tmp_path / "var")
    server.start()
    env = cli_env(tmp_path)
    codes = Codes()
    tail: asyncio.subprocess.Process | None = None
    try:
        # The operator creates the platform's administrator, who enrols and opens the clinic.
        out = server.medhub("admin", "create-superadmin", "--name", "Sam Super", "--email",
                            "sam@x.test")  # fmt: skip
        await enrol(env, invitation_in(out), codes, "--profile", "sam", "--server", server.url)
        org = server.medhub("admin", "org", "create", "Clinique des Lilas").strip()
        out = await ok(env, "--profile", "sam", "admin", "invite", "--org", org, "--role",
                       "admin", "--name", "Ada Admin", "--email", "ada@x.test")  # fmt: skip
        await enrol(env, invitation_in(out), codes, "--profile", "ada", "--server", server.url)

        # The clinic's administrator invites a practitioner and a patient ...
        ada = ("--profile", "ada")
        out = await ok(env, *ada, "admin", "invite", "--role", "practitioner", "--name",
                       "Dr Alice Martin", "--email", "alice@x.test")  # fmt: skip
        alice_id, alice_code = user_in(out), invitation_in(out)
        out = await ok(env, *ada, "admin", "invite", "--role", "patient", "--name",
                       "Paul Durand", "--email", "paul@x.test")  # fmt: skip
        paul_id, paul_code = user_in(out), invitation_in(out)
        users = await ok(env, *ada, "admin", "users")
        assert re.search(r"Paul Durand +paul@x\.test +patient +invited ", users), users

        # ... who enrol, each mistyping the first code (asked again in the same run).
        alice, paul = ("--profile", "alice"), ("--profile", "paul")
        await enrol(env, alice_code, codes, *alice, "--server", server.url, wrong_first=True)
        await enrol(env, paul_code, codes, *paul, "--server", server.url, wrong_first=True)
        users = await ok(env, *ada, "admin", "users")
        assert re.search(r"Dr Alice Martin +alice@x\.test +practitioner +active ", users), users

        # A consultation: a care relationship with an id; the practitioner opens its chat.
        out = await ok(env, *ada, "admin", "care", "add", alice_id, paul_id,
                       "--consultation", CONSULTATION)  # fmt: skip
        assert f"Dr Alice Martin ({alice_id}), Paul Durand ({paul_id})" in out, out
        assert CONSULTATION in await ok(env, *ada, "admin", "care", "list")
        out = await ok(env, *alice, "consult", CONSULTATION, "Bonjour Paul, comment allez-vous ?")
        found = re.search(r"conversation (c-[0-9a-f]+) with Paul Durand\n", out)
        assert found, out
        conv = found.group(1)
        assert "sent as #1" in out

        # The patient sees it by name, follows it, and answers.
        assert f"{conv}  consultation  Dr Alice Martin  1 unread" in await ok(
            env, *paul, "conversations"
        )
        tail = await asyncio.create_subprocess_exec(
            CLI, *paul, "tail", conv, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True,
        )  # fmt: skip
        assert tail.stdout is not None
        assert tail.stderr is not None
        seen: list[str] = []
        errors: list[str] = []
        await asyncio.wait_for(read_until(tail.stdout, "comment allez-vous", seen), WAIT_S)
        assert "sent as #2" in await ok(env, *paul, "send", conv, "Bien, merci docteur")
        await asyncio.wait_for(read_until(tail.stdout, "merci docteur", seen), WAIT_S)
        history = await ok(env, *alice, "history", conv)
        assert re.search(
            r"^#1 +\d{4}-\d\d-\d\d \d\d:\d\d  Dr Alice Martin: Bonjour Paul", history, re.M
        ), history
        assert re.search(r"^#2 .*  Paul Durand: Bien, merci docteur$", history, re.M), history

        # The server is killed under tail, then started again: tail resumes, misses nothing.
        server.kill()
        await asyncio.wait_for(read_until(tail.stderr, "connection lost", errors), WAIT_S)
        server.start()
        assert "sent as #3" in await ok(env, *alice, "send", conv, "Après le redémarrage")
        await asyncio.wait_for(read_until(tail.stdout, "redémarrage", seen), WAIT_S)
        await asyncio.wait_for(read_until(tail.stderr, "reconnected", errors), WAIT_S)

        # Edit one's own message (not someone else's); mark as read; page through history.
        assert "message #1 edited (version 2)" in await ok(
            env, *alice, "edit", conv, "1", "Bonjour Paul, comment allez-vous aujourd'hui ?"
        )
        await asyncio.wait_for(read_until(tail.stdout, "aujourd'hui", seen), WAIT_S)
        status, _, err = await run_cli(env, *paul, "delete", conv, "1")
        assert_one_line(status, err, 1, "you can only delete your own messages")
        assert "read up to #4" in await ok(env, *paul, "read", conv)
        page = await ok(env, *alice, "history", conv, "--limit", "2")  # #3, and edit #4
        assert "Après le redémarrage" in page
        assert "Bonjour" not in page
        assert f"medhub-chat --profile alice history {conv} --before 3" in page
        older = await ok(env, *alice, "history", conv, "--before", "3")
        assert "comment allez-vous aujourd'hui ? (edited)" in older
        assert "Bien, merci docteur" in older

        # The patient's account is disabled: tail ends with one line that says what to do.
        assert "Paul Durand" in await ok(env, *ada, "admin", "disable", paul_id)
        err = (await asyncio.wait_for(tail.stderr.read(), WAIT_S)).decode()
        assert_one_line(await tail.wait(), err, 1, "session has ended",
                        "medhub-chat --profile paul login")  # fmt: skip
        seen.append((await tail.stdout.read()).decode())
        users = await ok(env, *ada, "admin", "users")
        assert re.search(r"Paul Durand +paul@x\.test +patient +disabled ", users), users

        # Re-invited, the patient enrols again (the profile knows the server) and reads on.
        out = await ok(env, *ada, "admin", "reinvite", paul_id)
        await enrol(env, invitation_in(out), codes, *paul)
        assert "Après le redémarrage" in await ok(env, *paul, "history", conv)
    finally:
        if tail is not None and tail.returncode is None:
            tail.terminate()
            with contextlib.suppress(Exception):
                await tail.wait()
        if server.child is not None:
            server.kill()

    # Every message exactly once, in order, as people read them.
    lines = "".join(seen).splitlines()
    assert "Traceback" not in "".join(errors)
    expected = [
        "Dr Alice Martin: Bonjour Paul, comment allez-vous ?",
        "Paul Durand: Bien, merci docteur",
        "Dr Alice Martin: Après le redémarrage",
        'Dr Alice Martin edited "Bonjour Paul, comment allez-vous ?": '
        "Bonjour Paul, comment allez-vous aujourd'hui ?",
    ]
    assert len(lines) == len(expected), lines
    for line, text in zip(lines, expected, strict=True):
        assert re.fullmatch(f"{TIME} {re.escape(text)}", line), lines
