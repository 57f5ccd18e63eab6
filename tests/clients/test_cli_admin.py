"""``medhub-chat admin ...`` and what the people concerned then meet at sign-in: an MFA
reset (a new authenticator app), a forced password change, delegations, care
relationships, enable after disable; and the everyday ``open`` and ``presence``."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from tests.accountstest import accounts_settings, enrol, run_accounts_hub
from tests.clients.clitest import (
    CODE_PROMPT,
    PASSWORD,
    Codes,
    Prompted,
    assert_one_line,
    cli_env,
    login,
    ok,
    run_cli,
    secret_in,
)

NEW_PASSWORD = "Another-Staple-Horse-7"


async def test_admin_actions_and_what_people_meet(tmp_path: Path) -> None:
    async with run_accounts_hub(accounts_settings(tmp_path)) as hub:
        org = (await hub.components.accounts.admin.create_org(None, "Clinique A")).id
        accounts = hub.components.accounts
        async with httpx.AsyncClient(base_url=hub.api) as http:
            now = time.time()
            adm = await enrol(http, accounts, org, "admin", "adm@x.test", now, name="Ada Admin")
            alice = await enrol(http, accounts, org, "practitioner", "alice@x.test", now,
                                name="Dr Alice Martin")  # fmt: skip
            sam = await enrol(http, accounts, org, "secretary", "sam@x.test", now, name="Sam")
            paul = await enrol(http, accounts, org, "patient", "paul@x.test", now,
                               name="Paul Durand")  # fmt: skip
        env = cli_env(tmp_path, hub.http, adm.token)  # the admin's default profile
        codes = Codes()
        for person in (alice, paul):
            codes.spent(person.secret)

        # Delegations and care relationships, by name.
        out = await ok(env, "admin", "delegation", "grant", alice.user_id, sam.user_id,
                       "--scope", "consultations")  # fmt: skip
        assert "Sam" in out
        assert "acts for Dr Alice Martin" in out
        delegation = re.search(r"delegation (\S+):", out)
        assert delegation, out
        assert "Sam" in await ok(env, "admin", "delegation", "list")
        assert "revoked" in await ok(env, "admin", "delegation", "revoke", delegation.group(1))
        assert "no delegations" in await ok(env, "admin", "delegation", "list")
        out = await ok(env, "admin", "care", "add", alice.user_id, paul.user_id)
        rel = re.search(r"care relationship (\S+) recorded", out)
        assert rel, out
        assert "follows" in await ok(env, "admin", "care", "list")
        assert "ended" in await ok(env, "admin", "care", "end", rel.group(1))
        assert "no care relationships yet" in await ok(env, "admin", "care", "list")

        # An MFA reset: at her next sign-in Alice adds her account to an app again.
        out = await ok(env, "admin", "reset-mfa", alice.user_id)
        assert "Dr Alice Martin" in out
        assert "authenticator app again" in out
        p = await Prompted.start(env, "--profile", "alice", "--server", hub.http, "login",
                                 "--email", alice.email)  # fmt: skip
        await p.answer(PASSWORD)
        secret = secret_in(await p.expect(CODE_PROMPT))
        assert secret != alice.secret
        await p.answer(codes.take(secret))
        status, out, err = await p.finish()
        assert status == 0, err
        assert "reset by an administrator" in out
        assert "Recovery codes" in out
        assert "signed in as Dr Alice Martin" in out

        # A re-invitation of an enrolled account is refused in words.
        status, _, err = await run_cli(env, "admin", "reinvite", alice.user_id)
        assert_one_line(status, err, 1, "enrolled and active", "admin reset-mfa")

        # A forced password change: the next sign-in changes the password first.
        assert "new password" in await ok(env, "admin", "force-password-reset", paul.user_id)
        out = await ok(
            env, "--profile", "paul", "--server", hub.http, "login", "--email", paul.email,
            stdin=f"{PASSWORD}\n{codes.take(paul.secret)}\n{NEW_PASSWORD}\n{NEW_PASSWORD}\n"
            .encode(),
        )  # fmt: skip
        assert "password changed" in out
        assert "no conversations yet" in await ok(env, "--profile", "paul", "conversations")

        # Disabled, then enabled: the patient signs in again (with the new password).
        await ok(env, "admin", "disable", paul.user_id)
        assert "enabled" in await ok(env, "admin", "enable", paul.user_id)
        await login(env, paul.email, paul.recovery_codes[0], "--profile", "paul",
                    password=NEW_PASSWORD)  # fmt: skip
        users = await ok(env, "admin", "users")
        assert re.search(r"Paul Durand +paul@x\.test +patient +active ", users), users

        # Everyday: open a conversation by id, see who is online, by name.
        out = await ok(env, "--profile", "alice", "open", sam.user_id, "--message", "Bonjour")
        assert re.search(r"conversation c-[0-9a-f]+ with Sam\nsent as #1", out), out
        out = await ok(env, "--profile", "alice", "presence")
        assert re.search(r"^Ada Admin +offline", out, re.M), out
        assert "signed out" in await ok(env, "--profile", "alice", "logout")
