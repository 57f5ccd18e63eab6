"""The echo service account: created by ``medhub calls echo-account``, enrolled and signed in
by ``medhub-call echo`` on its own (real accounts, password + TOTP), rung by test calls."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from pathlib import Path

import httpx
import msgspec

from clients.calls import Calls
from clients.cli_call import service_token
from clients.sdk import MedhubClient
from server.cli import main as medhub
from tests.accountstest import accounts_settings, enrol, run_accounts_hub
from tests.calls.helpers import ANSWER, OFFER


def config_file(tmp_path: Path, settings: msgspec.Struct) -> Path:
    """The hub's settings as a TOML file for the ``medhub`` command line."""
    values = msgspec.to_builtins(settings)
    lines = []
    for key, value in values.items():
        if value in ("", [], None):
            continue
        lines.append(f"{key} = {json.dumps(value)}")
    path = tmp_path / "medhub.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_the_echo_account_bootstraps_itself_and_answers_test_calls(tmp_path: Path) -> None:
    settings = accounts_settings(tmp_path)
    config = config_file(tmp_path, settings)
    creds = tmp_path / "echo-peer.json"
    args = ["--config", str(config), "calls", "echo-account", "--credentials", str(creds)]
    assert await asyncio.to_thread(medhub, args) == 0
    first = json.loads(creds.read_text())
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert set(first) == {"user_id", "org_id", "email", "invitation"}
    assert await asyncio.to_thread(medhub, args) == 0  # idempotent: the same account
    assert json.loads(creds.read_text()) == first
    echo_id = first["user_id"]

    settings = msgspec.structs.replace(settings, calls_echo_users=[echo_id])
    async with run_accounts_hub(settings) as hub:
        # first start: accepts the invitation, sets a password, enrols TOTP
        token = await service_token(hub.http, creds)
        enrolled = json.loads(creds.read_text())
        assert "invitation" not in enrolled
        assert {"password", "totp_secret", "totp_last_step"} <= set(enrolled)
        # a later start signs in with them (the next TOTP step: each code is used once)
        again = await service_token(hub.http, creds)
        assert again != token

        admin = hub.components.accounts.admin
        org = (await admin.create_org(None, "Clinique")).id
        async with httpx.AsyncClient(base_url=hub.api) as http:
            pat = await enrol(
                http, hub.components.accounts, org, "patient", "p@x.test", time.time()
            )
        echo = MedhubClient(hub.http, token=again, use_ticket=False)
        patient = MedhubClient(hub.http, token=pat.token, use_ticket=False)
        echo_calls, patient_calls = Calls(echo), Calls(patient)
        await echo.connect()
        await patient.connect()
        try:
            call = await patient_calls.invite(OFFER, echo=True)
            ring = await echo_calls.incoming(10)
            assert (ring.id, ring.echo, ring.caller) == (call.id, True, pat.user_id)
            await ring.accept(ANSWER)
            assert await call.answered(10) == ANSWER
            await call.hangup()
            assert await ring.ended(10) == "user_hangup"
        finally:
            await echo.close()
            await patient.close()
