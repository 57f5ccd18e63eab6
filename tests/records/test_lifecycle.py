"""Account erasure (pseudonymisation), the right-of-access export, the retention run and
the master key rotation: each as a user or operator would notice it."""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import sqlalchemy as sa

from server.accounts.pii import UserCipher
from server.accounts.tables import user_versions, users
from server.facts import AccountsFacts
from server.records.access import Who
from server.records.retention import run
from server.records.sealing import RecordKeys
from server.records.service import build_records
from server.records.tables import (
    record_blob_chunks,
    record_blob_chunks_cold,
    record_documents,
    record_erasures,
    record_keys,
)
from server.security.at_rest import BlindIndex, settings_keyring
from server.security.crypto import Keyring, decode_key
from tests.accountstest import PASSWORD
from tests.records.conftest import CANARY_NAME, CANARY_TEXT, Clinic, clinic_env, exams_of, pdf
from tests.records.test_backup import medhub, seed


async def test_erasure_pseudonymises_keeps_records_and_the_chain_verifies(
    clinic: Clinic,
) -> None:
    ids = await seed(clinic)
    patient = clinic.ids["patient"]
    async with clinic.client("doc") as http:  # a practitioner may not erase
        r = await http.post(f"/records/accounts/{patient}/erase")
        assert r.status_code == 403
    async with clinic.client("admin") as http:
        r = await http.post(f"/records/accounts/{patient}/erase")
        assert r.status_code == 200, r.text
        assert r.json()["purge_after_us"] > 0
        again = await http.post(f"/records/accounts/{patient}/erase")
        assert again.status_code == 409
        user = (await http.get(f"/users/{patient}")).json()
        assert (user["name"], user["email"], user["status"]) == (
            f"Pseudonym {patient}",
            f"erased-{patient}@invalid",
            "disabled",
        )
    async with clinic.client("patient") as http:  # their sessions are revoked
        assert (await http.get("/session")).status_code == 401
        r = await http.post("/login", json={"email": "patient-0@example.org",
                                             "password": PASSWORD})  # fmt: skip
        assert r.status_code == 401
    async with clinic.client("doc") as http:  # the records stay, under the pseudonym
        report = (await http.get(f"/records/reports/{ids['report']}")).json()
        assert (report["patient_id"], report["text"]) == (patient, CANARY_TEXT)
        doc = (await http.get(f"/records/documents/{ids['doc']}")).json()
        assert (doc["title"], doc["filename"], doc["description"]) == ("document", ids["doc"], "")
        assert (await http.get(f"/records/documents/{ids['doc']}/content")).content.startswith(
            b"%PDF"
        )
        versions = (await http.get(f"/records/documents/{ids['doc']}/versions")).json()
        assert "Canary" not in json.dumps(versions)
    cipher = UserCipher(_at_rest(clinic), BlindIndex(clinic.settings.secret_at_rest_key))
    async with clinic.db.begin(readonly=True) as conn:
        rows = list(await conn.execute(sa.select(user_versions).where(
            user_versions.c.user_id == patient).order_by(user_versions.c.version)))  # fmt: skip
    snapshots = [cipher.open_snapshot(patient, r.version, r.snapshot) for r in rows]
    assert rows[-1].action == "delete"
    assert CANARY_NAME not in json.dumps(snapshots, default=str)
    assert snapshots[0]["name"] == f"Pseudonym {patient}"  # the create snapshot, rewritten
    audit = [(r.action, r.target_id) for r in await clinic.audit_rows()]
    assert ("account_pseudonymise", patient) in audit
    verify = medhub(Path(clinic.settings.data_dir), "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _at_rest(clinic: Clinic) -> Keyring:
    return settings_keyring(clinic.settings)


async def test_a_patient_exports_everything_about_themselves(clinic: Clinic) -> None:
    ids = await seed(clinic)
    async with clinic.client("patient") as http:
        r = await http.get("/records/me/export")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        names = tar.getnames()
        data = json.loads(tar.extractfile("export.json").read())  # type: ignore[union-attr]
        file = tar.extractfile(f"files/{ids['doc']}.pdf").read()  # type: ignore[union-attr]
    assert names == ["export.json", f"files/{ids['doc']}.pdf"]
    assert data["account"]["name"] == CANARY_NAME
    assert [d["id"] for d in data["documents"]] == [ids["doc"]]
    assert data["reports"][0]["versions"][0]["text"] == CANARY_TEXT
    assert file.startswith(b"%PDF")
    async with clinic.client("doc") as http:  # only the patient themself
        assert (await http.get("/records/me/export")).status_code == 404


async def test_retention_archives_purges_and_reports(tmp_path: Path) -> None:
    async with clinic_env(tmp_path, records_chunk_bytes=4096) as clinic:
        old, young = await seed(clinic), await seed(clinic)
        async with clinic.client("doc") as http:
            r = await http.post("/records/documents", json={
                "patient_id": clinic.ids["patient2"], "title": "theirs"})  # fmt: skip
            theirs = r.json()["id"]
            await http.put(f"/records/documents/{theirs}/content", content=pdf(size=9000))
        async with clinic.client("admin") as http:
            await http.post(f"/records/accounts/{clinic.ids['patient2']}/erase")
        long_ago = int((datetime.now(UTC) - timedelta(days=800)).timestamp() * 1e6)
        async with clinic.db.begin() as conn:
            await conn.execute(record_documents.update().where(
                record_documents.c.id == old["doc"]).values(updated_us=long_ago))  # fmt: skip
            await conn.execute(record_erasures.update().values(purge_after_us=1))
        report = await run(clinic.records)
        assert report.as_dict() | {"audit_cutoff": ""} == {
            "archived_documents": 1, "archived_bytes": len(pdf(_canary_body())),
            "purged_accounts": 1, "purged_documents": 1, "purged_reports": 0,
            "abandoned_uploads": 0, "audit_purged": 0, "audit_cutoff": "",
        }  # fmt: skip
        async with clinic.client("patient") as http:  # archived: still served, still sealed
            r = await http.get(f"/records/documents/{old['doc']}/content")
            assert r.content == pdf(_canary_body())
            assert (await http.get(f"/records/documents/{old['doc']}")).json()["archived"]
            assert not (await http.get(f"/records/documents/{young['doc']}")).json()["archived"]
        async with clinic.client("doc") as http:
            versions = (await http.get(f"/records/documents/{old['doc']}/versions")).json()
            assert versions["versions"][-1]["action"] == "archive"
            assert (await http.get(f"/records/documents/{theirs}")).status_code == 404
        async with clinic.db.begin(readonly=True) as conn:
            cold = await conn.execute(sa.select(sa.func.count()).select_from(
                record_blob_chunks_cold))  # fmt: skip
            assert cold.scalar() == 1
            hot = await conn.execute(sa.select(sa.func.count()).select_from(record_blob_chunks))
            assert hot.scalar() == 1  # the young document's
        assert (await run(clinic.records)).archived_documents == 0  # nothing left to do
        done = medhub(Path(clinic.settings.data_dir), "retention", "run")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["purged_accounts"] == 0


def _canary_body() -> bytes:
    from tests.records.conftest import CANARY_FILE

    return CANARY_FILE * 50


async def test_keys_rotate_rewraps_every_data_key_while_records_stay_readable(
    tmp_path: Path,
) -> None:
    async with clinic_env(tmp_path) as clinic:
        ids = await seed(clinic)
        data_dir = Path(clinic.settings.data_dir)
        old_key = clinic.settings.secret_at_rest_key
        new_key = base64.b64encode(os.urandom(32)).decode()
        env = {"MEDHUB_SECRET_AT_REST_KEY": new_key, "MEDHUB_AT_REST_KEY_ID": "r2",
               "MEDHUB_SECRET_AT_REST_RETIRED_KEYS": f"r1:{old_key}"}  # fmt: skip
        done = medhub(data_dir, "keys", "rotate", **env)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["key_id"] == "r2"
        assert report["data_keys"] == 2  # the document's and the report's
        assert report["user_columns"] == 3 * 11  # name, email, phone of 11 people
        assert report["user_snapshots"] >= 11
        async with clinic.db.begin(readonly=True) as conn:
            wrapped = list(await conn.execute(sa.select(record_keys)))
            people = list(await conn.execute(sa.select(users)))
        only_new = Keyring({"r2": decode_key(new_key)}, "r2")  # the old key can go
        for row in wrapped:
            assert row.key_id == "r2"
            RecordKeys(only_new).cipher(row.record_id, row.wrapped)
        names = UserCipher(only_new, BlindIndex(old_key))
        assert (
            names.open_column(
                clinic.ids["patient"],
                "name",
                next(p.name_enc for p in people if p.id == clinic.ids["patient"]),
            )
            == CANARY_NAME
        )
        again = medhub(data_dir, "keys", "rotate", **env)
        assert json.loads(again.stdout)["data_keys"] == 0
        # a node restarted with the new key current and the old one retired (as the
        # procedure asks before rotating) serves everything, before and after the rotation
        rotated = msgspec.structs.replace(
            clinic.settings, secret_at_rest_key=new_key, at_rest_key_id="r2",
            secret_at_rest_retired_keys=[f"r1:{old_key}"],
        )  # fmt: skip
        keys = settings_keyring(rotated)
        node = build_records(rotated, clinic.db, AccountsFacts(clinic.db), clinic.trail,
                             clinic.trail, keys, exams=exams_of(clinic.db, keys))  # fmt: skip
        got = await node.documents.download(
            Who(clinic.ids["patient"], clinic.org_a, "patient"), ids["doc"], None
        )
        assert b"".join([c async for c in got.chunks]) == pdf(_canary_body())
