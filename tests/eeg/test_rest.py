"""Exams over REST with real accounts: create, list, read, reassign (versioned, audited),
the OpenAPI document, and the EDF+ export; a removed interpreter stops receiving."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pyedflib
import pytest
import sqlalchemy as sa

from clients.eeg import EegError, Recorder, TokenAuth
from clients.eeg_view import Viewer
from media.eeg.synth import synthetic_meta
from server.store.schema import audit_log
from tests.accountstest import Enrolled, accounts_settings, enrol, run_accounts_hub
from tests.eeg.helpers import WAIT_S, source


def bearer(u: Enrolled) -> dict[str, str]:
    return {"authorization": f"Bearer {u.token}"}


async def test_exams_over_rest_and_their_export(tmp_path: Path) -> None:
    async with (
        run_accounts_hub(accounts_settings(tmp_path)) as hub,
        httpx.AsyncClient(base_url=hub.api) as http,
    ):
        accounts = hub.components.accounts
        org = await accounts.admin.create_org(None, "Clinique A")
        other = await accounts.admin.create_org(None, "Clinique B")
        now = time.time()
        people: dict[str, Enrolled] = {}
        for name, role, org_id in (
            ("admin", "admin", org.id),
            ("doc", "practitioner", org.id),
            ("tech", "technician", org.id),
            ("int1", "interpreter", org.id),
            ("int2", "interpreter", org.id),
            ("pat", "patient", org.id),
            ("far", "interpreter", other.id),
        ):
            people[name] = await enrol(http, accounts, org_id, role, f"{name}@x.example", now)
        p = {k: v.user_id for k, v in people.items()}
        body = {
            "patient_id": p["pat"],
            "ordering_id": p["doc"],
            "technician_id": p["tech"],
            "interpreters": [p["int1"], p["int2"]],
            "indication": "absences?",
        }

        # who may create: the organisation's admin; the people must have their roles
        r = await http.post("/eeg/exams", json=body, headers=bearer(people["tech"]))
        assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
        bad = {**body, "technician_id": p["int1"]}
        r = await http.post("/eeg/exams", json=bad, headers=bearer(people["admin"]))
        assert (r.status_code, r.json()["error"]["code"]) == (400, "bad_request")
        bad = {**body, "interpreters": [p["far"]]}
        r = await http.post("/eeg/exams", json=bad, headers=bearer(people["admin"]))
        assert r.status_code == 400
        r = await http.post("/eeg/exams", json=body, headers=bearer(people["admin"]))
        assert r.status_code == 201, r.text
        exam = r.json()
        assert (exam["version"], exam["interpreters"]) == (1, sorted([p["int1"], p["int2"]]))
        eid = exam["id"]

        # who sees it
        r = await http.get("/eeg/exams", headers=bearer(people["int1"]))
        assert [e["id"] for e in r.json()["exams"]] == [eid]
        r = await http.get("/eeg/exams", headers=bearer(people["far"]))
        assert r.json()["exams"] == []
        r = await http.get(f"/eeg/exams/{eid}", headers=bearer(people["far"]))
        assert r.status_code == 404  # another organisation's exam does not exist for them

        # a recording, watched by int2
        url = hub.url
        rec = Recorder(url, TokenAuth(people["tech"].token), eid, synthetic_meta(8, 128))
        sid = await rec.start()
        data = source(3, channels=8, rate=128)
        await rec.write(data[:128])
        view = Viewer(url, TokenAuth(people["int2"].token), sid)
        await view.start()
        revoked = asyncio.Event()
        on_event = view.sock.on_event

        def watch_events(e: dict[str, Any]) -> None:
            on_event(e)
            if e.get("kind") == "stream" and e["data"].get("state") == "revoked":
                revoked.set()

        view.sock.on_event = watch_events

        # reassign: int2 leaves (version 2); a stale version is a conflict
        change = {"version": 1, "interpreters": [p["int1"]]}
        r = await http.patch(f"/eeg/exams/{eid}", json=change, headers=bearer(people["admin"]))
        assert r.status_code == 200, r.text
        assert (r.json()["version"], r.json()["interpreters"]) == (2, [p["int1"]])
        r = await http.patch(f"/eeg/exams/{eid}", json=change, headers=bearer(people["admin"]))
        assert (r.status_code, r.json()["error"]["code"]) == (409, "conflict")
        await asyncio.wait_for(revoked.wait(), WAIT_S)
        frames = view.live_frames
        await rec.write(data[128:])
        await rec.wait_acked(timeout_s=WAIT_S)
        assert view.live_frames == frames  # detached: nothing more reaches int2
        with pytest.raises(EegError) as info:
            await view.sock.request("eeg.watch", stream=sid)
        assert info.value.code == "forbidden"
        await view.stop()
        await rec.close(timeout_s=WAIT_S)

        r = await http.get(f"/eeg/exams/{eid}/versions", headers=bearer(people["doc"]))
        versions = r.json()["versions"]
        assert [v["version"] for v in versions] == [1, 2]
        assert versions[1]["fields"] == ["interpreters"]
        assert versions[1]["changed_by"] == p["admin"]
        assert versions[0]["snapshot"]["interpreters"] == sorted([p["int1"], p["int2"]])
        r = await http.get(f"/eeg/exams/{eid}", headers=bearer(people["int1"]))
        assert [s["id"] for s in r.json()["streams"]] == [sid]
        assert r.json()["streams"][0]["state"] == "closed"

        # the export: EDF+ for who may watch, refused (and audited) for the others
        r = await http.get(f"/eeg/streams/{sid}/edf", headers=bearer(people["int2"]))
        assert r.status_code == 403
        r = await http.get(f"/eeg/streams/{sid}/edf", headers=bearer(people["int1"]))
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/octet-stream"
        path = tmp_path / "out.edf"
        path.write_bytes(r.content)
        edf = pyedflib.EdfReader(str(path))
        try:
            assert edf.getSignalLabels()[:3] == ["Fp1", "Fp2", "F7"]
            back = edf.readSignal(0, digital=True)[: len(data)]
            assert (back == data[:, 0]).all()
        finally:
            edf.close()

        # one OpenAPI document for accounts and exams
        doc = (await http.get("/openapi.json")).json()
        assert "/api/v1/login" in doc["paths"]
        assert "/api/v1/eeg/exams" in doc["paths"]
        assert set(doc["paths"]["/api/v1/eeg/exams/{exam_id}"]) == {"get", "patch"}
        assert "/api/v1/eeg/streams/{stream_id}/edf" in doc["paths"]
        assert "ExamCreate" in doc["components"]["schemas"]

        await hub.components.audit.flush()
        async with hub.components.database.begin(readonly=True) as conn:
            rows = list(await conn.execute(sa.select(audit_log)))
        seen = {(r.action, r.target_type, r.result) for r in rows}
        for expected in (
            ("create", "eeg_exam", "ok"),
            ("update", "eeg_exam", "ok"),
            ("denied", "eeg_exam", "denied"),
            ("export", "eeg_stream", "ok"),
            ("denied", "eeg_stream", "denied"),
            ("subscribe", "eeg_stream", "ok"),
        ):
            assert expected in seen, expected
