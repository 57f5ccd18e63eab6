"""medhub-chat's first use, as a person does it: a subprocess at a pipe, a real hub."""

from __future__ import annotations

import argparse
import re
import stat
from pathlib import Path

from clients.cli import build_parser
from tests.accountstest import accounts_settings, run_accounts_hub
from tests.clients.clitest import (
    PASSWORD,
    Codes,
    assert_one_line,
    cli_env,
    enrol,
    ok,
    run_cli,
)


async def test_enrol_with_a_wrong_code_first_then_use_the_session(tmp_path: Path) -> None:
    """A mistyped first code is asked for again in the same run; the session is then saved."""
    settings = accounts_settings(tmp_path)
    env = cli_env(tmp_path)
    async with run_accounts_hub(settings) as hub:
        invitation = await hub.components.accounts.admin.create_superadmin("Ada", "ada@x.test")
        qr = tmp_path / "totp.svg"
        _, out = await enrol(
            env, invitation.token, Codes(), "--server", hub.http,
            wrong_first=True, options=("--qr", str(qr)),
        )  # fmt: skip
        assert "enrolled and signed in as Ada (superadmin)" in out
        assert len(re.findall(r"^  \S{8,}$", out.split("keep them offline")[1], re.M)) == 10
        assert qr.read_text().startswith("<svg")
        session = tmp_path / "config" / "medhub" / "session.json"
        assert stat.S_IMODE(session.stat().st_mode) == 0o600
        assert PASSWORD not in session.read_text()

        # The saved session (and its server) work over the WebSocket: no --server needed.
        assert "no conversations yet" in await ok(env, "conversations")

        # An unknown invitation code: one sentence saying what to do, exit status 1.
        status, _, err = await run_cli(
            env, "enrol", "x" * 43, stdin=f"{PASSWORD}\n{PASSWORD}\n".encode()
        )
        assert_one_line(
            status, err, 1,
            "invitation code is not valid", "invite you again",
        )  # fmt: skip


def test_every_command_and_option_has_help() -> None:
    """``--help`` tells a user what each command and option is for (none left blank)."""
    missing: list[str] = []

    def walk(parser: argparse.ArgumentParser, where: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not choice.help:
                        missing.append(f"{where} {choice.dest}")
                for name, sub in action.choices.items():
                    walk(sub, f"{where} {name}")
            elif action.help is None:
                missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "medhub-chat")
    assert not missing, missing
