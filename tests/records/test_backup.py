"""No health data in clear at rest or in backups; backup, destroy, restore, verify
(data, versions, audit chain), on SQLite through the commands and on PostgreSQL with
pg_dump / pg_restore against the real server the tests start."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from server.audit.checkpoints import FileCheckpointSink
from server.audit.keys import keyring
from server.audit.ops import verify_log
from server.backup import BackupError, backup, restore
from server.config import Settings
from server.facts import AccountsFacts
from server.records.access import Who
from server.records.service import build_records
from server.security.at_rest import settings_keyring
from server.store.db import Database
from server.store.migrate import current_revision_async, head_revision
from tests.pg import PostgresServer, fresh_database
from tests.records.conftest import (
    CANARIES,
    CANARY_FILE,
    CANARY_TEXT,
    CANARY_TITLE,
    Clinic,
    clinic_env,
    pdf,
)

ROOT = Path(__file__).resolve().parents[2]


def medhub(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the ``medhub`` command on the deployment in ``data_dir``."""
    full = {**os.environ, "MEDHUB_DATA_DIR": str(data_dir), **env}
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


async def seed(clinic: Clinic) -> dict[str, str]:
    """A document with canary metadata and content, a signed report with canary text."""
    async with clinic.client("doc") as http:
        r = await http.post("/records/documents", json={
            "patient_id": clinic.ids["patient"], "title": CANARY_TITLE,
            "filename": f"{CANARY_TITLE}.pdf", "description": CANARY_TEXT})  # fmt: skip
        doc = r.json()["id"]
        await http.put(f"/records/documents/{doc}/content", content=pdf(CANARY_FILE * 50))
        r = await http.post("/records/reports", json={
            "patient_id": clinic.ids["patient"], "kind": "consultation_note",
            "title": CANARY_TITLE, "text": CANARY_TEXT})  # fmt: skip
        rep = r.json()["id"]
        await http.post(f"/records/reports/{rep}/sign", json={"version": 1})
    await clinic.trail.flush()
    return {"doc": doc, "report": rep}


def files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def assert_no_canary(paths: list[Path]) -> None:
    for path in paths:
        data = path.read_bytes()
        for canary in CANARIES:
            assert canary not in data, f"{canary!r} in clear in {path.name}"


async def check_restored(settings: Settings, ids: dict[str, str], people: dict[str, str],
                         org: str) -> None:  # fmt: skip
    """The restored deployment serves the document, its versions and the report, and its
    audit chain verifies against the restored checkpoints."""
    async with Database(settings.effective_database_url) as db:
        records = build_records(settings, db, AccountsFacts(db), _Null(), _Null(),
                                settings_keyring(settings))  # fmt: skip
        who = Who(people["patient"], org, "patient")
        got = await records.documents.download(who, ids["doc"], None)
        assert b"".join([c async for c in got.chunks]) == pdf(CANARY_FILE * 50)
        doc_who = Who(people["doc"], org, "practitioner")
        versions = await records.documents.versions(doc_who, ids["doc"])
        assert [v["action"] for v in versions] == ["create", "content"]
        report = await records.reports.get(who, ids["report"])
        assert (report.text, report.status, report.signed_by) == (CANARY_TEXT, "final",
                                                                  people["doc"])  # fmt: skip
        sink = FileCheckpointSink(settings.effective_checkpoint_path)
        result = await verify_log(db, keyring(settings), sinks=[sink])
        assert result.ok, result.first_break
        assert result.checked > 20


class _Null:
    """The restored-deployment check writes nothing (reads only are audited: dropped here)."""

    def record(self, event: Any) -> None:
        pass

    def submit(self, job: Any) -> None:
        raise AssertionError("no write expected")


async def test_raw_database_and_backup_hold_no_canary_and_restore_round_trips(
    tmp_path: Path,
) -> None:
    first = tmp_path / "first"
    async with clinic_env(first) as clinic:
        ids = await seed(clinic)
        people, org, settings = dict(clinic.ids), clinic.org_a, clinic.settings
        data_dir = Path(settings.data_dir)
        assert_no_canary([p for p in files(data_dir) if p.name.startswith("medhub.db")])
        done = medhub(data_dir, "backup", "--out", str(tmp_path / "backups"))  # while serving
        assert done.returncode == 0, done.stderr
    backup_dir = Path(json.loads(done.stdout)["backup"])
    assert sorted(p.name for p in files(backup_dir)) == [
        "checkpoints.enc",
        "database.enc",
        "manifest.json",
    ]
    assert_no_canary(files(backup_dir))
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    assert (manifest["dialect"], manifest["revision"]) == ("sqlite", head_revision())
    secrets = (data_dir / "secrets").read_bytes()
    shutil.rmtree(first)  # the deployment is destroyed
    second = tmp_path / "second" / "var"
    second.mkdir(parents=True, mode=0o700)
    (second / "secrets").write_bytes(secrets)  # the operator restores the keys separately
    os.chmod(second / "secrets", 0o600)
    tampered = tmp_path / "tampered"
    shutil.copytree(backup_dir, tampered)
    raw = bytearray((tampered / "database.enc").read_bytes())
    raw[len(raw) // 2] ^= 1
    (tampered / "database.enc").write_bytes(bytes(raw))
    refused = medhub(second, "restore", str(tampered))
    assert (refused.returncode, "checksum mismatch" in refused.stderr) == (2, True)
    done = medhub(second, "restore", str(backup_dir))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["audit_chain_intact"] is True
    again = medhub(second, "restore", str(backup_dir))  # never over a deployment with data
    assert (again.returncode, "not empty" in again.stderr) == (2, True)
    verify = medhub(second, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    restored = msgspec.structs.replace(settings, data_dir=str(second))
    await check_restored(restored, ids, people, org)


async def test_postgresql_backup_with_pg_dump_and_restore(
    tmp_path: Path, start_postgres: PostgresServer
) -> None:
    url = await fresh_database(start_postgres)
    async with clinic_env(tmp_path / "pg", url) as clinic:
        ids = await seed(clinic)
        people, org, settings = dict(clinic.ids), clinic.org_a, clinic.settings
        revision = await current_revision_async(url)
        result = backup(settings, tmp_path / "backups", revision=revision)
    assert_no_canary(files(result.path))
    assert result.manifest["files"][1]["kind"] == "pg_dump"
    target_url = await fresh_database(start_postgres)
    target = msgspec.structs.replace(settings, database_url=target_url,
                                     data_dir=str(tmp_path / "pg-restored"))  # fmt: skip
    await asyncio.to_thread(restore, target, result.path)  # restore runs its own loop
    with pytest.raises(BackupError, match="not empty"):
        await asyncio.to_thread(restore, target, result.path)
    await check_restored(target, ids, people, org)
