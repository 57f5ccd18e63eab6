"""Helpers to drive ``medhub-chat`` (and ``medhub``) as a person does: installed scripts, pipes.

``run_cli`` runs one command to its end; :class:`Prompted` answers a command's
prompts as they appear (enrol, login); :class:`Codes` plays the authenticator
app (a TOTP code is accepted once per 30 s step, so it hands out each step
once); :class:`Server` is ``medhub serve`` as a child process that a test can
kill (SIGKILL) and start again on the same port and data.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyotp

from tests.server.serveproc import BANNER, Child, medhub_env
from tests.services import free_port

BIN = Path(sys.executable).parent
CLI = str(BIN / "medhub-chat")
WAIT_S = 30.0  # bound on anything a test waits for
PASSWORD = "Correct-Horse-Battery-9"
#: Prompts of medhub-chat (stdout, no newline: read up to them).
CODE_PROMPT = "Code from your authenticator app"
TIME = r"\[(?:\d{4}-\d\d-\d\d )?\d\d:\d\d\]"  # [10:42], or [2026-12-01 10:42] before today


def cli_env(tmp_path: Path, server: str | None = None, token: str | None = None) -> dict[str, str]:
    """An environment with its own config folder; with ``token``, a saved default session."""
    config = tmp_path / "config"
    (config / "medhub").mkdir(parents=True, exist_ok=True)
    if token is not None:
        saved = {"server": server, "token": token}
        (config / "medhub" / "session.json").write_text(json.dumps(saved))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDHUB_")}
    return {**env, "XDG_CONFIG_HOME": str(config)}


async def run_cli(env: dict[str, str], *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """Run medhub-chat to its end (no controlling terminal); exit status, stdout, stderr."""
    child = await asyncio.create_subprocess_exec(
        CLI, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True,
    )  # fmt: skip
    out, err = await asyncio.wait_for(child.communicate(stdin), WAIT_S)
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


async def ok(env: dict[str, str], *args: str, stdin: bytes = b"") -> str:
    """Run medhub-chat; assert it succeeded without a word on stderr; its stdout."""
    status, out, err = await run_cli(env, *args, stdin=stdin)
    assert status == 0, f"{args}: exit {status}\n{out}\n{err}"
    assert "Traceback" not in err, err
    return out


def assert_one_line(status: int, err: str, expected_status: int, *words: str) -> None:
    assert "Traceback" not in err, err
    assert status == expected_status, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("medhub-chat: "), err
    for word in words:
        assert word in lines[0], err


async def read_until(stream: asyncio.StreamReader, marker: str, seen: list[str]) -> str:
    """Read the child's stream until ``marker`` appears (bounded by the caller's timeout)."""
    while marker not in "".join(seen):
        chunk = await stream.read(4096)
        if not chunk:
            raise AssertionError(f"output ended before {marker!r}: {''.join(seen)}")
        seen.append(chunk.decode())
    return "".join(seen)


@dataclass
class Codes:
    """The authenticator app: the current code of a secret, each 30 s step handed out once."""

    used: dict[str, int] = field(default_factory=dict)

    def take(self, secret: str) -> str:
        """A code the server accepts now (the current step, or the next one once it is used)."""
        totp = pyotp.TOTP(secret)
        now = int(time.time() // 30)
        step = max(now, self.used.get(secret, now - 1) + 1)
        assert step <= now + 1, "this secret's codes for now are all used: plan fewer sign-ins"
        self.used[secret] = step
        return totp.generate_otp(step)

    def spent(self, secret: str) -> None:
        """The server took the current step (e.g. at enrolment)."""
        self.used[secret] = max(self.used.get(secret, 0), int(time.time() // 30))

    @staticmethod
    def wrong(secret: str) -> str:
        """Six digits that are none of the codes the server would accept now."""
        totp, now = pyotp.TOTP(secret), int(time.time() // 30)
        valid = {totp.generate_otp(s) for s in range(now - 2, now + 3)}
        return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


class Prompted:
    """A medhub-chat command whose prompts are answered as they appear."""

    def __init__(self, child: asyncio.subprocess.Process) -> None:
        self.child = child
        self.out: list[str] = []
        self.err: list[str] = []

    @classmethod
    async def start(cls, env: dict[str, str], *args: str) -> Prompted:
        child = await asyncio.create_subprocess_exec(
            CLI, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True,
        )  # fmt: skip
        return cls(child)

    async def expect(self, marker: str, count: int = 1) -> str:
        """All of stdout so far, once ``marker`` appeared ``count`` times in it."""
        assert self.child.stdout is not None

        async def enough() -> str:
            while "".join(self.out).count(marker) < count:
                chunk = await self.child.stdout.read(4096)  # type: ignore[union-attr]
                if not chunk:  # the command ended: say how, with what it wrote to stderr
                    err = await self.child.stderr.read()  # type: ignore[union-attr]
                    code = await self.child.wait()
                    raise AssertionError(
                        f"stdout ended before {marker!r} (exit {code}): {''.join(self.out)}\n"
                        f"stderr: {err.decode(errors='replace')}"
                    )
                self.out.append(chunk.decode())
            return "".join(self.out)

        return await asyncio.wait_for(enough(), WAIT_S)

    async def answer(self, *lines: str) -> None:
        assert self.child.stdin is not None
        self.child.stdin.write("".join(f"{line}\n" for line in lines).encode())
        await self.child.stdin.drain()

    async def finish(self) -> tuple[int, str, str]:
        """Close stdin, wait for the end; exit status, all of stdout, all of stderr."""
        out, err = await asyncio.wait_for(self.child.communicate(), WAIT_S)
        self.out.append(out.decode())
        assert self.child.returncode is not None
        return self.child.returncode, "".join(self.out), err.decode()


def secret_in(text: str) -> str:
    found = re.search(r"secret=([A-Z2-7]+)", text)
    assert found, text
    return found.group(1)


async def enrol(
    env: dict[str, str], code: str, codes: Codes, *prefix: str,
    wrong_first: bool = False, options: tuple[str, ...] = (),
) -> tuple[str, str]:  # fmt: skip
    """``medhub-chat [prefix] enrol CODE [options]`` as a person: password twice, the app's code.

    With ``wrong_first``, a wrong code is typed first and must be asked for again.
    Returns the TOTP secret and all of stdout.
    """
    p = await Prompted.start(env, *prefix, "enrol", code, *options)
    await p.answer(PASSWORD, PASSWORD)
    secret = secret_in(await p.expect(CODE_PROMPT))
    tries = 1
    if wrong_first:
        await p.answer(Codes.wrong(secret))
        tries = 2
        await p.expect(CODE_PROMPT, count=2)  # asked again, in the same run
    await p.answer(codes.take(secret))
    status, out, err = await p.finish()
    assert status == 0, f"{out}\n{err}"
    assert out.count(CODE_PROMPT) == tries, out
    if wrong_first:
        assert "not accepted" in err, err
    return secret, out


async def login(
    env: dict[str, str], email: str, code: str, *prefix: str, password: str = PASSWORD
) -> str:
    """``medhub-chat [prefix] login --email EMAIL``, typing the password and ``code``."""
    return await ok(env, *prefix, "login", "--email", email, stdin=f"{password}\n{code}\n".encode())


class Server:
    """``medhub serve`` as a child process on a fixed port and data folder."""

    def __init__(self, data: Path, **settings: object) -> None:
        self.port = free_port()
        cheap = {"argon2_time_cost": 1, "argon2_memory_kib": 1024, "shutdown_grace_s": 1}
        self.env = medhub_env(data, **{**cheap, **settings})
        self.url = f"http://127.0.0.1:{self.port}"
        self.child: Child | None = None

    def start(self) -> None:
        """Start and wait for the banner (printed once the port serves)."""
        self.child = Child(["serve", "--port", str(self.port)], self.env)
        self.child.out.wait_for(BANNER, WAIT_S)

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye; what was committed stays."""
        assert self.child is not None
        self.child.stop()

    def medhub(self, *args: str) -> str:
        """Run ``medhub ARGS`` (the server's own command line) on the same data; its stdout."""
        child = Child(list(args), self.env)
        code = child.wait(WAIT_S * 2)
        assert code == 0, f"medhub {args}: exit {code}\n{child.out.text()}\n{child.err.text()}"
        return child.out.text()
