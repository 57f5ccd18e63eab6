"""``POST /directory`` over real HTTP: names only for those the policy lets see them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from server.audit.events import Action
from server.policy import Relationship
from server.store.schema import audit_log
from tests.accounts.live import bearer, error_code, person
from tests.accountstest import Enrolled, LiveHub, accounts_settings, run_accounts_hub

UNKNOWN = "u-00000000000000000000"


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[LiveHub]:
    async with run_accounts_hub(accounts_settings(tmp_path)) as h:
        yield h


async def _clinic(hub: LiveHub, http: httpx.AsyncClient) -> dict[str, Enrolled]:
    accounts = hub.components.accounts
    admin = accounts.admin
    a = await admin.create_org(None, "Clinique A")
    b = await admin.create_org(None, "Clinique B")
    people = {}
    for key, org, role, name in (
        ("admin", a, "admin", "Ann Admin"),
        ("doc1", a, "practitioner", "Dan One"),
        ("doc2", a, "practitioner", "Dora Two"),
        ("sec", a, "secretary", "Sam Sec"),
        ("tech", a, "technician", "Tom Tech"),
        ("pat1", a, "patient", "Paul One"),
        ("pat2", a, "patient", "Pia Two"),
        ("pat3", a, "patient", "Pete Three"),
        ("doc_b", b, "practitioner", "Bob B"),
        ("pat_b", b, "patient", "Bea B"),
    ):
        people[key] = await person(http, accounts, org.id, role, f"{key}@x.example", name)
    ids = {k: p.user_id for k, p in people.items()}
    await admin.add_care(None, Relationship("follows", ids["doc1"], ids["pat1"]))
    await admin.add_care(None, Relationship("follows", ids["doc2"], ids["pat2"]))
    await admin.add_care(None, Relationship("eeg_technician", ids["tech"], ids["pat3"], "exam-1"))
    await admin.add_care(None, Relationship("follows", ids["doc_b"], ids["pat_b"]))
    await admin.grant_delegation(None, ids["doc1"], ids["sec"], ["consultations"])
    return people


STAFF_A = {"admin", "doc1", "doc2", "sec", "tech"}
EXPECTED = {
    "admin": STAFF_A | {"pat1", "pat2", "pat3"},
    "doc1": STAFF_A | {"pat1"},
    "doc2": STAFF_A | {"pat2"},
    "sec": STAFF_A | {"pat1"},
    "tech": STAFF_A | {"pat3"},
    "pat1": {"pat1", "doc1", "sec"},
    "pat2": {"pat2", "doc2"},
    "pat3": {"pat3", "tech"},
    "doc_b": {"doc_b", "pat_b"},
    "pat_b": {"pat_b", "doc_b"},
}


async def test_each_viewer_sees_exactly_the_names_the_policy_allows(hub: LiveHub) -> None:
    async with httpx.AsyncClient(base_url=hub.api) as http:
        people = await _clinic(hub, http)
        key_of = {p.user_id: k for k, p in people.items()}
        everyone = [p.user_id for p in people.values()] + [UNKNOWN]
        for viewer, expected in EXPECTED.items():
            r = await http.post(
                "/directory", json={"ids": everyone}, headers=bearer(people[viewer].token)
            )
            assert r.status_code == 200, r.text
            seen = r.json()["people"]
            assert {key_of[i] for i in seen} == expected, viewer
        # what is shown: the name, the role, the organisation
        r = await http.post(
            "/directory",
            json={"ids": [people["doc1"].user_id, people["pat1"].user_id]},
            headers=bearer(people["pat1"].token),
        )
        assert r.json()["people"][people["doc1"].user_id] == {
            "name": "Dan One",
            "role": "practitioner",
            "org": people["doc1"].org_id,
        }
        # a hidden id and an unknown one answer alike: both left out
        r = await http.post(
            "/directory",
            json={"ids": [people["pat_b"].user_id, UNKNOWN]},
            headers=bearer(people["doc1"].token),
        )
        assert r.json() == {"people": {}}


async def test_bounds_and_audit(hub: LiveHub) -> None:
    async with httpx.AsyncClient(base_url=hub.api) as http:
        people = await _clinic(hub, http)
        h = bearer(people["doc1"].token)
        r = await http.post("/directory", json={"ids": [UNKNOWN] * 257}, headers=h)
        assert (r.status_code, error_code(r)) == (400, "bad_request")
        r = await http.post("/directory", json={"ids": ["not an id"]}, headers=h)
        assert error_code(r) == "bad_request"
        r = await http.post("/directory", json={"ids": [UNKNOWN] * 256}, headers=h)
        assert r.status_code == 200
        r = await http.post("/directory", json={"ids": []})
        assert error_code(r) == "unauthenticated"
        before = await _directory_reads(hub)
        r = await http.post("/directory", json={"ids": [people["pat1"].user_id]}, headers=h)
        assert r.status_code == 200
        after = await _directory_reads(hub)
    assert len(after) == len(before) + 1  # one entry per call
    actor, result, request_id = after[-1]
    assert (actor, result) == (people["doc1"].user_id, "ok")
    assert request_id == r.headers["x-request-id"]  # joins the request's log line


async def _directory_reads(hub: LiveHub) -> list[tuple[str, str, str]]:
    c = hub.components
    await c.audit.flush()
    t = audit_log.c
    query = (
        select(t.actor, t.result, t.request_id)
        .where(t.action == Action.READ.value, t.target_type == "directory")
        .order_by(t.seq)
    )
    async with c.database.begin(readonly=True) as conn:
        return [(r.actor, r.result, r.request_id) for r in await conn.execute(query)]
