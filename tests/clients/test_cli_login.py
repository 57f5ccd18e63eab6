"""``medhub-chat login`` as people use it: recovery codes, the profile's server, profiles,
a mistyped code, a lockout told to the owner at the next sign-in."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.accountstest import accounts_settings, enrol, run_accounts_hub
from tests.clients.clitest import (
    PASSWORD,
    Codes,
    Prompted,
    assert_one_line,
    cli_env,
    login,
    ok,
    run_cli,
)
from tests.hubtest import RunningHub

CODE = "Code from your authenticator app (or a recovery code): "


async def _org(hub: RunningHub) -> str:
    return (await hub.components.accounts.admin.create_org(None, "Clinique A")).id


async def test_recovery_code_and_the_profile_server(tmp_path: Path) -> None:
    """A recovery code signs in; a later login (no --server) goes where the profile went."""
    settings = accounts_settings(tmp_path)
    env = cli_env(tmp_path)
    codes = Codes()
    async with run_accounts_hub(settings) as hub:
        org = await _org(hub)
        async with httpx.AsyncClient(base_url=hub.api) as http:
            now = time.time()
            ada = await enrol(http, hub.components.accounts, org, "practitioner", "a@x.test", now)
            bob = await enrol(
                http, hub.components.accounts, org, "practitioner", "b@x.test", now, name="Bob"
            )
        codes.spent(ada.secret)  # enrolment took the current step

        # 1. A recovery code in place of the app's code (it was refused with 400 before).
        out = await login(env, ada.email, ada.recovery_codes[0], "--profile", "ada",
                          "--server", hub.http)  # fmt: skip
        assert "signed in as" in out
        assert f"on {hub.http}" in out

        # 2. Signed out: the profile keeps its server and email, not the session.
        assert "signed out (profile ada)" in await ok(env, "--profile", "ada", "logout")
        status, _, err = await run_cli(env, "--profile", "ada", "conversations")
        assert_one_line(status, err, 1, "not signed in", "medhub-chat --profile ada login")

        # 3. No --server, no --email: the profile's; a mistyped code is asked for again.
        p = await Prompted.start(env, "--profile", "ada", "login")
        await p.answer(PASSWORD, Codes.wrong(ada.secret))
        await p.expect(CODE, count=2)
        await p.answer(codes.take(ada.secret))
        status, out, err = await p.finish()
        assert status == 0, err
        assert f"on {hub.http}" in out  # not http://127.0.0.1:8000
        assert "code was not accepted" in err

        # 4. A second person on the same machine: their own profile, their own session.
        await login(env, bob.email, bob.recovery_codes[0], "--profile", "bob", "--server", hub.http)
        assert ada.user_id in await ok(env, "--profile", "ada", "whoami")
        assert bob.user_id in await ok(env, "--profile", "bob", "whoami")
        listed = await ok(env, "profiles")
        assert "ada" in listed
        assert "bob" in listed

        # 5. A recovery code works once.
        status, _, err = await run_cli(
            env, "--profile", "bob", "login",
            stdin=f"{PASSWORD}\n{bob.recovery_codes[0]}\n".encode(),
        )  # fmt: skip
        assert status != 0
        assert "code was not accepted" in err
        assert "Traceback" not in err


async def test_login_help_says_where_it_goes(tmp_path: Path) -> None:
    out = " ".join((await ok(cli_env(tmp_path), "login", "--help")).split())
    assert (
        "The server is --server, else $MEDHUB_SERVER, else the server this profile last "
        "signed in to (or enrolled on), else http://127.0.0.1:8000." in out
    )


async def test_locked_owner_is_told_at_the_next_sign_in(tmp_path: Path) -> None:
    """Five wrong passwords lock the pair; an admin unlocks (medhub-chat admin unlock);
    the owner's next sign-in says what happened; the attacker saw only 'wrong password'."""
    settings = accounts_settings(tmp_path)
    env = cli_env(tmp_path)
    codes = Codes()
    async with run_accounts_hub(settings) as hub:
        org = await _org(hub)
        async with httpx.AsyncClient(base_url=hub.api) as http:
            now = time.time()
            ada = await enrol(http, hub.components.accounts, org, "practitioner", "a@x.test", now)
            admin = await enrol(http, hub.components.accounts, org, "admin", "adm@x.test", now)
        codes.spent(ada.secret)
        admin_env = cli_env(tmp_path / "admin", hub.http, admin.token)
        for _ in range(6):  # the sixth is refused by the lock, with the same words
            status, _, err = await run_cli(
                env, "--server", hub.http, "login", "--email", ada.email,
                stdin=b"Wrong-Horse-Battery-9\n",
            )  # fmt: skip
            assert_one_line(status, err, 1, "wrong email or password")
        assert "unlocked" in await ok(admin_env, "admin", "unlock", ada.user_id)
        out = await login(env, ada.email, codes.take(ada.secret), "--server", hub.http)
        assert "note: your account was locked on " in out
        assert "failed sign-in attempts" in out
        assert "tell your administrator" in out
