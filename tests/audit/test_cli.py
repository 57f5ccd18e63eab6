"""``medhub audit ...`` through ``server.cli.main`` on a SQLite data dir: exit codes and output."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from pathlib import Path

import pytest

from server.audit.events import Action, AuditEvent, Result
from server.audit.trail import AuditTrail
from server.cli import main
from server.config import load_settings
from server.store.db import Database
from tests.audit.conftest import KEY


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MEDHUB_CONFIG", raising=False)
    monkeypatch.delenv("MEDHUB_DATABASE_URL", raising=False)
    monkeypatch.setenv("MEDHUB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MEDHUB_SECRET_AUDIT_KEY", base64.b64encode(KEY).decode())
    monkeypatch.setenv("MEDHUB_NODE_ID", "cli-test")
    return tmp_path


def write_entries(n: int) -> None:
    async def go() -> None:
        settings = load_settings()
        async with Database(settings.effective_database_url) as db:
            trail = AuditTrail.from_settings(settings, db)
            await trail.start()
            for i in range(n):
                org = "org-1" if i % 2 else "org-2"
                result = Result.OK if i % 3 else Result.DENIED
                trail.record(AuditEvent(action=Action.READ, result=result, actor=f"u-{i}", org=org,
                                        reason=None if i % 3 else "not_in_org"))  # fmt: skip
            await trail.close()

    asyncio.run(go())


def tamper(data_dir: Path, statement: str) -> None:
    with sqlite3.connect(data_dir / "medhub.db") as conn:
        conn.execute(statement)


def test_verify_exit_codes(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify"]) == 2  # not migrated: an operational error
    assert main(["migrate"]) == 0
    assert main(["audit", "verify"]) == 0  # empty chain is intact
    write_entries(12)
    capsys.readouterr()
    assert main(["audit", "verify"]) == 0
    assert "intact: 12 entries (seq 1..12), 1 checkpoint(s) matched" in capsys.readouterr().out
    assert main(["audit", "verify", "--from-seq", "5", "--to-seq", "9"]) == 0
    assert "5 entries (seq 5..9)" in capsys.readouterr().out
    tamper(data_dir, "UPDATE audit_log SET actor = 'u-99' WHERE seq = 7")
    assert main(["audit", "verify"]) == 1
    assert "BROKEN at seq 7: bad_tag" in capsys.readouterr().out
    assert main(["audit", "verify", "--to-seq", "6"]) == 0  # the range before it is fine
    assert main(["audit", "purge"]) == 1  # refuses to destroy evidence


def test_truncation_named_from_the_checkpoint_file(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate"]) == 0
    write_entries(10)
    tamper(data_dir, "DELETE FROM audit_log WHERE seq > 6")
    tamper(data_dir, "UPDATE audit_chain_head SET seq = 6")
    capsys.readouterr()
    assert main(["audit", "verify"]) == 1
    assert "BROKEN at seq 7: truncated" in capsys.readouterr().out
    other = data_dir / "elsewhere.checkpoints"
    other.write_text("")
    assert main(["audit", "verify", "--checkpoints", str(other)]) == 0


def test_export_stats_and_purge(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate"]) == 0
    write_entries(9)
    capsys.readouterr()
    args = ["audit", "export", "--org", "org-1", "--from", "2000-01-01", "--to", "2999-01-01"]
    assert main([*args, "--actor", "op-7"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {x["org"] for x in lines} == {"org-1"}
    assert [x["actor"] for x in lines[:4]] == ["u-1", "u-3", "u-5", "u-7"]
    assert lines[-1]["action"] == "audit_export"  # the export itself is traced first
    assert lines[-1]["actor"] == "op-7"
    assert set(lines[0]) >= {"seq", "time", "tag", "key_id", "result", "source", "request_id"}
    assert main(["audit", "stats"]) == 0
    stats = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert set(stats[0]) == {"hour", "action", "result", "count"}  # no ids
    by_kind = {(s["action"], s["result"]): s["count"] for s in stats}
    assert by_kind[("read", "ok")] == 6
    assert by_kind[("read", "denied")] == 3
    assert main(["audit", "purge", "--actor", "op-7"]) == 0
    assert "purged 0 entries (nothing old enough" in capsys.readouterr().out
    assert main(["audit", "verify"]) == 0
    bad = ["audit", "export", "--org", "org-1", "--from", "2000-01-01", "--to", "2999-01-01"]
    assert main([*bad, "--actor", "someone@example.org"]) == 2  # not a pseudonymous id
