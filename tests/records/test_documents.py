"""Documents over HTTP: upload checked by content and size, streamed download, versions,
tombstones, and who may see what (rule 9), each access audited."""

from __future__ import annotations

import sqlalchemy as sa

from server.records.tables import record_blob_chunks, record_blobs
from tests.records.conftest import PNG, Clinic, edf, pdf


async def _new(clinic: Clinic, who: str, **body: object) -> dict[str, object]:
    async with clinic.client(who) as http:
        r = await http.post("/records/documents", json={
            "patient_id": clinic.ids["patient"], "title": "Scan", **body})  # fmt: skip
        assert r.status_code == 201, r.text
        return dict(r.json())


async def test_upload_download_replace_versions_and_tombstone(clinic: Clinic) -> None:
    doc = await _new(clinic, "doc", filename="scan.pdf", description="first scan")
    url = f"/records/documents/{doc['id']}"
    first = pdf(b"first", size=20_000)  # 5 chunks of 4 KiB
    async with clinic.client("doc") as http:
        r = await http.put(url + "/content", content=first)
        assert r.status_code == 200, r.text
        assert (r.json()["version"], r.json()["media_type"]) == (2, "application/pdf")
        r = await http.get(url + "/content")
        assert r.status_code == 200
        assert r.content == first
        assert r.headers["content-type"] == "application/pdf"
        r = await http.put(url + "/content", content=PNG)  # replace: a new version
        assert (r.json()["version"], r.json()["media_type"]) == (3, "image/png")
        assert (await http.get(url + "/content")).content == PNG
        assert (await http.get(url + "/content?version=2")).content == first
        r = await http.patch(url, json={"version": 3, "title": "Scan (left)"})
        assert r.json()["version"] == 4
        assert (await http.patch(url, json={"version": 3, "title": "late"})).status_code == 409
        versions = (await http.get(url + "/versions")).json()["versions"]
        assert [v["action"] for v in versions] == ["create", "content", "content", "update"]
        assert {v["changed_by"] for v in versions} == {clinic.ids["doc"]}
        assert versions[3]["snapshot"] == {"title": "Scan (left)"}
        assert (await http.delete(url)).status_code == 200
        assert (await http.get(url)).status_code == 404
        assert (await http.get(url + "/content")).status_code == 404
    audited = [(r.action, r.target_id) for r in await clinic.audit_rows()]
    assert ("create", doc["id"]) in audited
    assert ("delete", doc["id"]) in audited
    assert ("read", doc["id"]) in audited


async def test_type_by_content_and_size_limit(clinic: Clinic) -> None:
    doc = await _new(clinic, "doc")
    url = f"/records/documents/{doc['id']}/content"
    limit = clinic.settings.records_max_upload_bytes
    async with clinic.client("doc") as http:
        r = await http.put(url, content=b"MZ\x90\x00 not a pdf" * 100,
                           headers={"content-type": "application/pdf"})  # fmt: skip
        assert (r.status_code, r.json()["error"]["code"]) == (415, "unsupported_media_type")
        assert (await http.put(url, content=edf())).json()["media_type"] == "application/edf"

        async def chunked() -> object:  # no Content-Length: counted while read
            yield pdf()
            for _ in range(limit // 65536 + 2):
                yield b"\0" * 65536

        r = await http.put(url, content=chunked())
        assert (r.status_code, r.json()["error"]["code"]) == (413, "payload_too_large")
        r = await http.put(url, content=b"", headers={"content-length": str(limit + 1)})
        assert r.status_code == 413
        assert (await http.get(f"/records/documents/{doc['id']}")).json()["version"] == 2
    async with clinic.db.begin(readonly=True) as conn:  # refused uploads left nothing behind
        pending = await conn.execute(sa.select(record_blobs).where(record_blobs.c.state != "ready"))
        assert list(pending) == []
        rows = await conn.execute(sa.select(sa.func.count()).select_from(record_blob_chunks))
        assert rows.scalar() == 1  # the EDF's one chunk


async def test_interpreter_not_assigned_gets_404_for_the_exams_documents(clinic: Clinic) -> None:
    doc = await _new(clinic, "tech", exam_id=clinic.exam_id, title="EEG raw")
    url = f"/records/documents/{doc['id']}"
    async with clinic.client("tech") as http:
        assert (await http.put(url + "/content", content=edf())).status_code == 200
    for who in ("interp", "doc"):  # assigned interpreter, ordering (and caring) practitioner
        async with clinic.client(who) as http:
            assert (await http.get(url + "/content")).content == edf(), who
    for who in ("interp2", "doc2", "docb", "admin", "patient2"):
        async with clinic.client(who) as http:
            for path in ("", "/content", "/versions"):
                r = await http.get(url + path)
                assert r.status_code == 404, (who, path, r.text)
            assert (await http.put(url + "/content", content=pdf())).status_code == 404
    denied = [r for r in await clinic.audit_rows() if r.result == "denied"]
    assert {(r.actor, r.reason) for r in denied} >= {
        (clinic.ids["interp2"], "not_assigned"), (clinic.ids["doc2"], "no_care_relationship"),
        (clinic.ids["admin"], "no_clinical_access"),
    }  # fmt: skip


async def test_patient_reads_their_own_documents_but_does_not_write(clinic: Clinic) -> None:
    doc = await _new(clinic, "doc")
    url = f"/records/documents/{doc['id']}"
    async with clinic.client("doc") as http:
        await http.put(url + "/content", content=pdf(b"x"))
    async with clinic.client("patient") as http:
        assert (await http.get(url + "/content")).content == pdf(b"x")
        assert (await http.put(url + "/content", content=pdf())).status_code == 403
        r = await http.post("/records/documents", json={
            "patient_id": clinic.ids["patient"], "title": "mine"})  # fmt: skip
        assert r.status_code == 403
    async with clinic.client("patient2") as http:
        assert (await http.get(url)).status_code == 404


async def test_the_records_api_is_in_the_same_openapi_document(clinic: Clinic) -> None:
    async with clinic.client("doc") as http:
        doc = (await http.get("/openapi.json")).json()
    paths = doc["paths"]
    assert "/api/v1/login" in paths  # the accounts API's document, with ours added
    assert set(paths["/api/v1/records/documents/{document_id}/content"]) == {"get", "put"}
    assert "post" in paths["/api/v1/records/reports/{report_id}/sign"]
    assert "DocumentOut" in doc["components"]["schemas"]
