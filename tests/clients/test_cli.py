"""medhub-chat as a person uses it: a subprocess at a terminal-like pipe, a real hub."""

from __future__ import annotations

import asyncio
import os
import re
import stat
import sys
import time
from pathlib import Path

import pyotp

from tests.accountstest import PASSWORD, accounts_settings, run_accounts_hub


async def _read_until(stream: asyncio.StreamReader, marker: str, seen: list[str]) -> str:
    """Read the child's output until ``marker`` appears (bounded by the caller's timeout)."""
    while marker not in "".join(seen):
        chunk = await stream.read(4096)
        if not chunk:
            raise AssertionError(f"output ended before {marker!r}: {''.join(seen)}")
        seen.append(chunk.decode())
    return "".join(seen)


async def test_enrol_then_use_the_session(tmp_path: Path) -> None:
    settings = accounts_settings(tmp_path)
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    async with run_accounts_hub(settings) as hub:
        server = f"http://127.0.0.1:{hub.port}"
        invitation = await hub.components.accounts.admin.create_superadmin("Ada", "ada@x.test")
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "clients.cli", "--server", server, "enrol", invitation.token,
            "--qr", str(tmp_path / "totp.svg"),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env,
        )  # fmt: skip
        assert child.stdin is not None
        assert child.stdout is not None
        seen: list[str] = []
        child.stdin.write(f"{PASSWORD}\n{PASSWORD}\n".encode())
        out = await asyncio.wait_for(_read_until(child.stdout, "TOTP code:", seen), 30)
        secret = re.search(r"secret=([A-Z2-7]+)", out)
        assert secret is not None, out
        child.stdin.write(f"{pyotp.TOTP(secret.group(1)).at(time.time())}\n".encode())
        await child.stdin.drain()
        out = await asyncio.wait_for(_read_until(child.stdout, "keep them offline", seen), 30)
        rest, _ = await asyncio.wait_for(child.communicate(), 30)
        out += rest.decode()
        assert child.returncode == 0, out
        assert "enrolled" in out
        assert len(re.findall(r"^  \S{8,}$", out.split("keep them offline")[1], re.M)) == 10
        assert (tmp_path / "totp.svg").read_text().startswith("<svg")
        session = tmp_path / "config" / "medhub" / "session.json"
        assert stat.S_IMODE(session.stat().st_mode) == 0o600
        assert PASSWORD not in session.read_text()

        # The stored session works over the WebSocket (ticket, then hello).
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "clients.cli", "conversations",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
        )  # fmt: skip
        listing, _ = await asyncio.wait_for(child.communicate(), 30)
        assert child.returncode == 0, listing.decode()

        # A wrong code is refused with a stable code and exit status 1.
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "clients.cli", "--server", server, "enrol", "x" * 43,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env,
        )  # fmt: skip
        refused, _ = await asyncio.wait_for(
            child.communicate(f"{PASSWORD}\n{PASSWORD}\n".encode()), 30
        )
        assert child.returncode == 1, refused.decode()
        assert "invitation_invalid" in refused.decode()
