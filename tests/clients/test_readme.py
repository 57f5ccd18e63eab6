"""The README's quick start, run command by command as a newcomer runs it, so it never rots.

The commands are read from README.md (between the quick-start markers) and run as
written, with what a person copies from the screen put in place of the
placeholders (the consultation and conversation ids) and typed at the prompts (the
password and code ``demo seed`` printed). Only the surroundings differ: a free port
and a private data folder (``PORT``, which the Makefile takes from the environment,
``MEDHUB_DATA_DIR`` and ``ECHO_CREDENTIALS`` so nothing lands in the checkout's ./var,
and ``MEDHUB_SERVER`` for medhub-chat, which otherwise goes to port 8000), and
``make`` is told that the virtualenv is set up (``--old-file``): the
test must not reinstall the checkout's shared .venv.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
from pathlib import Path

import pytest

from tests.clients.clitest import TIME, WAIT_S, read_until
from tests.server.serveproc import BANNER, ROOT
from tests.services import free_port

START = "<!-- quick start"
END = "<!-- end of quick start -->"


def quick_start() -> list[list[str]]:
    """The commands of the README's quick start, split as a shell splits them."""
    text = (ROOT / "README.md").read_text()
    assert START in text, "README.md lost its quick-start markers"
    block = text.split(START, 1)[1].split(END, 1)[0]
    commands: list[list[str]] = []
    for code in re.findall(r"```sh\n(.*?)```", block, re.S):
        commands += [words for line in code.splitlines() if (words := shlex.split(line, True))]
    return commands


def demo_logins(out: str) -> tuple[dict[str, dict[str, str]], str]:
    """The table ``medhub demo seed`` prints (by email) and the consultation id."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("ROLE "))
    titles = re.findall(r"\S+(?: \S+)*", lines[header])
    starts = [lines[header].index(t) for t in titles]
    rows: dict[str, dict[str, str]] = {}
    for line in lines[header + 1 :]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        row = dict(zip(titles, cells, strict=True))
        rows[row["EMAIL"]] = row
    found = re.search(r"^Consultation: (\S+)", out, re.M)
    assert found, out
    return rows, found.group(1)


async def _run(words: list[str], env: dict[str, str], stdin: str = "") -> tuple[int, str, str]:
    child = await asyncio.create_subprocess_exec(
        *words, cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    out, err = await asyncio.wait_for(child.communicate(stdin.encode()), WAIT_S * 2)
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


@pytest.mark.slow
async def test_quick_start_reaches_a_first_message(tmp_path: Path) -> None:
    commands = quick_start()
    assert len(commands) <= 6, commands
    assert not any(w in ("curl", "python", "python3") for c in commands for w in c), commands
    assert commands[0] == ["make", "run"], commands

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDHUB_")}
    env.update(
        PORT=str(port), HOST="127.0.0.1", MEDHUB_DATA_DIR=str(tmp_path / "var"),
        MEDHUB_SERVER=f"http://127.0.0.1:{port}", XDG_CONFIG_HOME=str(tmp_path / "config"),
        ECHO_CREDENTIALS=str(tmp_path / "var" / "echo-peer.json"),  # make run's, not ./var's
    )  # fmt: skip
    server = await asyncio.create_subprocess_exec(
        "make", "--old-file=.venv/.stamp-run", *commands[0][1:], cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    tail: asyncio.subprocess.Process | None = None
    try:
        assert server.stdout is not None
        banner: list[str] = []
        await asyncio.wait_for(read_until(server.stdout, BANNER, banner), WAIT_S * 2)
        assert f"{BANNER}http://127.0.0.1:{port}" in "".join(banner)

        people: dict[str, dict[str, str]] = {}
        consultation = conv = ""
        for words in commands[1:]:
            words = [{"CONSULTATION": consultation, "CONV": conv}.get(w, w) for w in words]
            if words[1:] == ["demo", "seed"]:
                status, out, err = await _run(words, env)
                assert status == 0, out + err
                people, consultation = demo_logins(out)
            elif "login" in words:
                person = people[words[words.index("--email") + 1]]
                typed = f"{person['PASSWORD']}\n{person['CODE NOW']}\n"
                status, out, err = await _run(words, env, typed)
                assert status == 0, out + err
                assert f"signed in as {person['NAME']}" in out
            elif "consult" in words:
                status, out, err = await _run(words, env)
                assert status == 0, out + err
                found = re.search(r"conversation (c-[0-9a-f]+) with ", out)
                assert found, out
                conv = found.group(1)
                message = words[-1]
            elif "tail" in words:
                tail = await asyncio.create_subprocess_exec(
                    *words, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE, start_new_session=True,
                )  # fmt: skip
                assert tail.stdout is not None
                seen: list[str] = []
                await asyncio.wait_for(read_until(tail.stdout, message, seen), WAIT_S)
                doctor = next(p for p in people.values() if p["ROLE"] == "practitioner 1")
                line = "".join(seen).splitlines()[0]
                assert re.fullmatch(f"{TIME} {doctor['NAME']}: {re.escape(message)}", line), line
            else:
                raise AssertionError(f"a quick-start command this test does not know: {words}")
        assert tail is not None, "the quick start never shows the message to the patient"
    finally:
        if tail is not None and tail.returncode is None:
            tail.terminate()
            with contextlib.suppress(Exception):
                await tail.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)  # make and the server it started
        try:
            await asyncio.wait_for(server.communicate(), WAIT_S)
        except TimeoutError:
            os.killpg(server.pid, signal.SIGKILL)
            await server.wait()
