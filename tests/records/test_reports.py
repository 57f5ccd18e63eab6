"""Reports: draft, signature by the author, amendments citing the signed version, the
version history with every author, and what a secretary sees with each delegation."""

from __future__ import annotations

from tests.records.conftest import Clinic, pdf


async def _report(clinic: Clinic, who: str, **body: object) -> dict[str, object]:
    async with clinic.client(who) as http:
        r = await http.post("/records/reports", json={
            "patient_id": clinic.ids["patient"], "kind": "consultation_note",
            "title": "Consultation", "text": "draft one", **body})  # fmt: skip
        assert r.status_code == 201, r.text
        return dict(r.json())


async def test_draft_sign_amend_and_the_history_names_every_author(clinic: Clinic) -> None:
    rep = await _report(clinic, "doc")
    url = f"/records/reports/{rep['id']}"
    async with clinic.client("doc") as http:
        r = await http.patch(url, json={"version": 1, "text": "draft two"})
        assert (r.json()["version"], r.json()["status"]) == (2, "draft")
    async with clinic.client("patient") as http:  # a draft is not shown to the patient
        assert (await http.get(url)).status_code == 404
    async with clinic.client("doc") as http:
        r = await http.post(url + "/sign", json={"version": 2})
        signed = r.json()
        assert (signed["status"], signed["version"], signed["signed_by"]) == (
            "final",
            3,
            clinic.ids["doc"],
        )
        assert signed["signed_us"] > 0
        r = await http.patch(url, json={"version": 3, "text": "sneaky edit"})
        assert (r.status_code, r.json()["error"]["code"]) == (409, "conflict")
        assert (await http.delete(url)).status_code == 409  # a signed report stays
    async with clinic.client("interp") as http:  # not the patient's practitioner: hidden
        assert (await http.get(url)).status_code == 404
    async with clinic.client("doc") as http:
        r = await http.post(url + "/amend", json={"version": 3, "text": "corrected"})
        amended = r.json()
        assert (amended["status"], amended["version"], amended["cites"]) == ("draft", 4, 3)
    async with clinic.client("patient") as http:  # still the signed version until re-signed
        shown = (await http.get(url)).json()
        assert (shown["version"], shown["text"], shown["status"]) == (3, "draft two", "final")
    async with clinic.client("doc") as http:
        await http.post(url + "/sign", json={"version": 4})
        history = (await http.get(url + "/versions")).json()["versions"]
    assert [(v["version"], v["action"], v["status"], v["changed_by"]) for v in history] == [
        (1, "create", "draft", clinic.ids["doc"]), (2, "update", "draft", clinic.ids["doc"]),
        (3, "sign", "final", clinic.ids["doc"]), (4, "amend", "draft", clinic.ids["doc"]),
        (5, "sign", "final", clinic.ids["doc"]),
    ]  # fmt: skip
    assert [v["text"] for v in history] == ["draft one", "draft two", "draft two", "corrected",
                                            "corrected"]  # fmt: skip
    assert history[3]["cites"] == 3
    async with clinic.client("patient") as http:  # the patient sees the signed versions only
        mine = (await http.get(url + "/versions")).json()["versions"]
        assert [v["version"] for v in mine] == [3, 5]


async def test_only_the_author_signs_and_an_interpreter_writes_their_exams_report(
    clinic: Clinic,
) -> None:
    rep = await _report(clinic, "interp", kind="eeg_report", exam_id=clinic.exam_id,
                        title="EEG interpretation")  # fmt: skip
    url = f"/records/reports/{rep['id']}"
    async with clinic.client("doc") as http:  # may write for the patient, is not the author
        r = await http.post(url + "/sign", json={"version": 1})
        assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
    async with clinic.client("interp2") as http:
        assert (await http.post(url + "/sign", json={"version": 1})).status_code == 404
        r = await http.post("/records/reports", json={
            "patient_id": clinic.ids["patient"], "kind": "eeg_report", "title": "x",
            "exam_id": clinic.exam_id})  # fmt: skip
        assert r.status_code == 404
    async with clinic.client("interp") as http:
        assert (await http.post(url + "/sign", json={"version": 1})).json()["status"] == "final"
    async with clinic.client("tech") as http:  # the exam's technician: not its report
        assert (await http.get(url)).status_code == 403
    denied = [(r.actor, r.reason) for r in await clinic.audit_rows() if r.result == "denied"]
    assert (clinic.ids["doc"], "not_author") in denied


async def test_a_secretary_sees_the_index_but_reads_contents_only_with_the_records_scope(
    clinic: Clinic,
) -> None:
    rep = await _report(clinic, "doc")
    async with clinic.client("doc") as http:
        await http.post(f"/records/reports/{rep['id']}/sign", json={"version": 1})
        r = await http.post("/records/documents", json={
            "patient_id": clinic.ids["patient"], "title": "Referral letter"})  # fmt: skip
        doc = r.json()
        await http.put(f"/records/documents/{doc['id']}/content", content=pdf(b"letter"))
        draft = await _report(clinic, "doc", title="Unfinished")
    patient = clinic.ids["patient"]
    async with clinic.client("sec") as http:  # delegated "consultations" only
        index = (await http.get(f"/records/patients/{patient}")).json()
        assert [d["id"] for d in index["documents"]] == [doc["id"]]
        assert index["documents"][0]["title"] is None
        assert [(x["id"], x["title"], x["text"]) for x in index["reports"]] == [
            (rep["id"], None, None)
        ]
        assert (await http.get(f"/records/reports/{rep['id']}")).status_code == 403
        assert (await http.get(f"/records/documents/{doc['id']}/content")).status_code == 403
    async with clinic.client("secrec") as http:  # delegated "records"
        assert (await http.get(f"/records/reports/{rep['id']}")).json()["text"] == "draft one"
        r = await http.get(f"/records/documents/{doc['id']}/content")
        assert r.content == pdf(b"letter")
        assert (await http.get(f"/records/reports/{draft['id']}")).status_code == 404
        index = (await http.get(f"/records/patients/{patient}")).json()
        assert draft["id"] not in [x["id"] for x in index["reports"]]
        assert (
            await http.patch(f"/records/documents/{doc['id']}", json={"version": 2, "title": "x"})
        ).status_code == 403
    async with clinic.client("admin") as http:  # no medical content for an admin
        index = (await http.get(f"/records/patients/{patient}")).json()
        assert index == {"documents": [], "reports": []}
        assert (await http.get(f"/records/reports/{rep['id']}")).status_code == 404
