"""``medhub admin ...`` end to end on a SQLite file: the same validation, service methods
and error codes as the REST API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from server.accounts.module import build_accounts
from server.broker import MemoryBroker
from server.cli import main
from server.config import ensure_secrets, load_settings
from server.store.db import Database
from tests.accountstest import FakeClock, Recorder, enrol


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDHUB_DATA_DIR", str(tmp_path / "var"))
    for name, value in (("ARGON2_TIME_COST", "1"), ("ARGON2_MEMORY_KIB", "1024")):
        monkeypatch.setenv(f"MEDHUB_{name}", value)
    return tmp_path / "var"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    code = main(list(argv))
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out.strip().splitlines()


def _fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    out = capsys.readouterr()
    assert code == 1, out.out
    lines = [line for line in out.err.splitlines() if line.startswith("medhub admin:")]
    assert len(lines) == 1, out.err
    return lines[0]


def _invite(capsys: pytest.CaptureFixture[str], org: str, role: str, name: str, email: str) -> str:
    out = _run(
        capsys, "admin", "user", "invite", "--org", org, "--role", role, "--name", name,
        "--email", email,
    )  # fmt: skip
    return out[0].split()[1]


def test_superadmin_orgs_and_users(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "admin", "create-superadmin", "--name", "Root", "--email", "r@p.example")
    assert out[0].startswith("superadmin u-")
    root = out[0].split()[1]
    first = out[-3]
    assert len(first) >= 43  # the one-time enrolment code
    # a second create-superadmin recovers one that never enrolled: a new code
    out = _run(capsys, "admin", "create-superadmin", "--name", "Root", "--email", "R@p.example")
    assert out[0] == f"superadmin {root} had not finished enrolling: its earlier codes are void"
    assert out[-3] != first
    org = _run(capsys, "admin", "org", "create", "Clinique A")[0]
    assert org.startswith("o-")
    listed = _run(capsys, "admin", "org", "list")
    assert any(line.startswith(org) and line.endswith("Clinique A") for line in listed)
    user = _invite(capsys, org, "admin", "Ann Lee", "ann@a.example")
    users = _run(capsys, "admin", "user", "list", "--org", org)
    assert users[0].split() == ["ID", "NAME", "EMAIL", "ROLE", "STATE", "LOCKED", "CREATED"]
    assert users[1].split()[:7] == [user, "Ann", "Lee", "ann@a.example", "admin", "invited", "-"]
    assert _run(capsys, "admin", "user", "disable", user)[0].endswith("sessions revoked")
    (entry,) = json.loads(_run(capsys, "admin", "user", "list", "--org", org, "--json")[0])["users"]
    assert (entry["id"], entry["name"], entry["status"], entry["locked"]) == (
        user,
        "Ann Lee",
        "disabled",
        False,
    )
    everyone = _run(capsys, "admin", "user", "list")
    assert everyone[0].split()[-1] == "ORGANISATION"
    assert any(line.endswith("medhub platform") for line in everyone)
    empty = _run(capsys, "admin", "org", "create", "Clinique B")[0]
    assert _run(capsys, "admin", "user", "list", "--org", empty) == ["no users"]
    line = _fails(capsys, "admin", "user", "invite", "--org", "o-00", "--role", "admin",
                  "--name", "X", "--email", "x@a.example")  # fmt: skip
    assert line == "medhub admin: not_found: no such resource"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--email", "not-an-email", "--name", "Ann"], "Expected `str` matching regex"),
        (["--email", "a@a.example", "--name", ""], "Expected `str` of length >= 1 - at `$.name`"),
        (["--email", "a@a.example", "--name", "   "], "Expected `str` matching regex '\\\\S'"),
        (["--email", "a@a.example", "--name", "A", "--phone", "call me"], "at `$.phone`"),
    ],
)
async def test_the_cli_refuses_what_the_api_refuses_with_the_same_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    org = (await asyncio.to_thread(_run, capsys, "admin", "org", "create", "Clinique A"))[0]
    line = await asyncio.to_thread(
        _fails, capsys, "admin", "user", "invite", "--org", org, "--role", "patient", *args
    )
    assert line.startswith("medhub admin: bad_request: ")
    assert message in line
    # the REST API answers the same code and message for the same body
    body = dict(zip(args[::2], args[1::2], strict=True))
    fields = {k.removeprefix("--"): v for k, v in body.items()}
    api_message = await _api_invite_error(tmp_path, org, {"role": "patient", **fields})
    assert line == f"medhub admin: bad_request: {api_message}"


async def _api_invite_error(tmp_path: Path, org: str, body: dict[str, str]) -> str:
    settings = ensure_secrets(load_settings(overrides={"data_dir": str(tmp_path / "var")}))
    db = Database(settings.effective_database_url)
    await db.connect()
    broker = MemoryBroker()
    await broker.start()
    clock = FakeClock()
    accounts = build_accounts(settings, db, broker, Recorder(), clock=clock)
    transport = httpx.ASGITransport(app=accounts.app())
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            admin = await enrol(http, accounts, org, "admin", "adm@a.example", clock())
            r = await http.post(
                f"/orgs/{org}/users", json=body, headers={"authorization": f"Bearer {admin.token}"}
            )
            assert r.status_code == 400
            return str(r.json()["error"]["message"])
    finally:
        accounts.hasher.close()
        await broker.close()
        await db.close()


def test_names_and_ids_are_checked_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails(capsys, "admin", "org", "create", " ")
    assert line.startswith("medhub admin: bad_request: Expected `str` matching regex")
    for argv in (
        ["user", "disable", "bob"],
        ["user", "reinvite", "u-xyz"],
        ["care", "end", "r-!"],
        ["delegation", "revoke", "../d-1"],
    ):
        assert _fails(capsys, "admin", *argv) == "medhub admin: not_found: no such resource"
    line = _fails(capsys, "admin", "care", "add", "--kind", "follows", "--actor", "bob",
                  "--patient", "u-1")  # fmt: skip
    assert "at `$.actor_id`" in line


def test_recovery_care_and_delegation_commands(capsys: pytest.CaptureFixture[str]) -> None:
    org = _run(capsys, "admin", "org", "create", "Clinique A")[0]
    doc = _invite(capsys, org, "practitioner", "Dan Doc", "doc@a.example")
    sec = _invite(capsys, org, "secretary", "Sam Sec", "sec@a.example")
    pat = _invite(capsys, org, "patient", "Pia Pat", "pia@a.example")
    # recovery: an invited account is re-invited; not reset, enabled or forced
    out = _run(capsys, "admin", "user", "reinvite", pat)
    assert "re-invited" in out[0]
    assert len(out[1]) >= 43
    assert _fails(capsys, "admin", "user", "reset-mfa", pat).startswith("medhub admin: conflict:")
    assert _fails(capsys, "admin", "user", "enable", pat).startswith("medhub admin: conflict:")
    line = _fails(capsys, "admin", "user", "force-password-reset", pat)
    assert line.startswith("medhub admin: conflict:")
    assert _run(capsys, "admin", "user", "unlock", pat) == [f"user {pat} unlocked"]
    _run(capsys, "admin", "user", "disable", pat)
    assert _run(capsys, "admin", "user", "enable", pat) == [f"user {pat} enabled (invited)"]
    # care relationships
    assert _run(capsys, "admin", "care", "list", "--org", org) == ["no care relationships"]
    rel = _run(capsys, "admin", "care", "add", "--kind", "follows", "--actor", doc,
               "--patient", pat)[0]  # fmt: skip
    assert rel.startswith("r-")
    line = _fails(capsys, "admin", "care", "add", "--kind", "follows", "--actor", sec,
                  "--patient", pat)  # fmt: skip
    assert line.startswith("medhub admin: forbidden:")
    listed = _run(capsys, "admin", "care", "list", "--org", org)
    assert listed[1].split()[:2] == [rel, "follows"]
    assert "Dan Doc" in listed[1]
    assert "Pia Pat" in listed[1]
    (item,) = json.loads(_run(capsys, "admin", "care", "list", "--org", org, "--json")[0])[
        "relationships"
    ]
    assert (item["actor_id"], item["patient_id"]) == (doc, pat)
    assert _run(capsys, "admin", "care", "end", rel) == [f"care relationship {rel} ended"]
    assert (
        _fails(capsys, "admin", "care", "end", rel) == "medhub admin: not_found: no such resource"
    )
    # delegations
    did = _run(capsys, "admin", "delegation", "grant", "--practitioner", doc, "--delegate", sec,
               "--scope", "consultations", "--scope", "contact")[0]  # fmt: skip
    assert did.startswith("d-")
    line = _fails(capsys, "admin", "delegation", "grant", "--practitioner", doc,
                  "--delegate", pat, "--scope", "contact")  # fmt: skip
    assert line.startswith("medhub admin: forbidden:")
    listed = _run(capsys, "admin", "delegation", "list", "--org", org)
    assert listed[1].split()[0] == did
    assert listed[1].endswith("consultations,contact")
    assert _run(capsys, "admin", "delegation", "revoke", did) == [f"delegation {did} revoked"]
    assert _run(capsys, "admin", "delegation", "list", "--org", org) == ["no delegations"]
