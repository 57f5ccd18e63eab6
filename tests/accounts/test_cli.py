"""``medhub admin ...`` end to end on a SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.cli import main


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDHUB_DATA_DIR", str(tmp_path / "var"))
    return tmp_path / "var"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    assert main(list(argv)) == 0
    return capsys.readouterr().out.strip().splitlines()


def test_superadmin_orgs_and_users(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "admin", "create-superadmin", "--name", "Root", "--email", "r@p.example")
    assert out[0].startswith("superadmin u-")
    assert len(out[-1]) >= 43  # the one-time enrolment code
    org = _run(capsys, "admin", "org", "create", "Clinique A")[0]
    assert org.startswith("o-")
    listed = _run(capsys, "admin", "org", "list")
    assert any(line.startswith(org) for line in listed)
    out = _run(
        capsys,
        "admin",
        "user",
        "invite",
        "--org",
        org,
        "--role",
        "admin",
        "--name",
        "Ann",
        "--email",
        "ann@a.example",
    )
    user = out[0].split()[1]
    users = _run(capsys, "admin", "user", "list", "--org", org)
    assert users == [f"{user}\t{org}\tadmin\tinvited"]
    assert _run(capsys, "admin", "user", "disable", user)[0].endswith("sessions revoked")
    assert _run(capsys, "admin", "user", "list", "--org", org)[0].endswith("disabled")
    assert (
        main(
            [
                "admin",
                "user",
                "invite",
                "--org",
                "o-00",
                "--role",
                "admin",
                "--name",
                "X",
                "--email",
                "x@a.example",
            ]
        )
        == 1
    )
