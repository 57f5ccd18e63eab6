"""Records fixtures: a clinic with every role, signed in through the real accounts flow.

``clinic`` is an accounts stack and the records sidecar on a SQLite file, with
the real audit trail (the node's write sequence), mounted as in
``server/app.py`` (the records part in the accounts app). People of org A:
a patient (named with canary text), a second patient, a practitioner who
follows the patient, a practitioner who does not, a secretary delegated
``consultations`` and one delegated ``records`` by that practitioner, an
interpreter and a technician assigned to an EEG exam of the patient, an
interpreter not assigned, an admin; and a practitioner of org B.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from server import policy
from server.accounts.module import Accounts, build_accounts
from server.audit.trail import AuditTrail
from server.broker import MemoryBroker
from server.config import Settings
from server.eeg import store as eeg_store
from server.facts import AccountsFacts, ExamPeople
from server.records.service import Records, build_records
from server.records.web import rest_part
from server.security.at_rest import settings_keyring
from server.security.crypto import Keyring
from server.store.db import Database
from server.store.jobs import write
from server.store.migrate import upgrade_to_head_async
from tests.accountstest import FakeClock, accounts_settings, enrol
from tests.pg import db_url, start_postgres

__all__ = ["db_url", "start_postgres"]

#: Canary strings seeded as health and identity data; none may appear in clear at rest.
CANARY_NAME = "Zebulon Quasimodo-Canary"
CANARY_TITLE = "Canary-Title-Epilepsia-7731"
CANARY_TEXT = "Canary-Report-Text-Absence-Seizures-9152"
CANARY_FILE = b"Canary-File-Content-Spike-Wave-4410"
CANARIES = [CANARY_NAME.encode(), CANARY_TITLE.encode(), CANARY_TEXT.encode(), CANARY_FILE]


def pdf(body: bytes = b"", size: int = 0) -> bytes:
    """A small PDF-looking content (its magic bytes, then ``body``, padded to ``size``)."""
    data = b"%PDF-1.7\n" + body + b"\n%%EOF\n"
    return data + b"\0" * max(0, size - len(data))


def edf(signals: int = 1) -> bytes:
    """An EDF header (256 bytes per signal + 256) and a few data bytes."""
    head = (b"0       " + b" " * 80 + b" " * 80 + b"01.01.24" + b"00.00.00"
            + str(256 * (signals + 1)).encode().ljust(8) + b" " * 44 + b"1       "
            + b"1       " + str(signals).encode().ljust(4))  # fmt: skip
    assert len(head) == 256
    return head + b" " * 256 * signals + b"\x01\x00" * 64


def exams_of(db: Database, keys: Keyring) -> ExamPeople:
    """The EEG exams lookup, as the EEG capability gives it to records in a hub."""

    async def people(exam_id: str) -> policy.Exam | None:
        row = await db.run(lambda c: eeg_store.get_exam(c, keys, exam_id), readonly=True)
        return None if row is None else row.people

    return people


PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 300


@dataclass
class Clinic:
    settings: Settings
    db: Database
    trail: AuditTrail
    accounts: Accounts
    records: Records
    app: Any
    tokens: dict[str, str]
    ids: dict[str, str]
    exam_id: str
    org_a: str

    def client(self, who: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=("10.0.0.9", 4444))
        return httpx.AsyncClient(
            transport=transport, base_url="http://testserver",
            headers={"authorization": f"Bearer {self.tokens[who]}"},
        )  # fmt: skip

    async def audit_rows(self) -> list[Any]:
        import sqlalchemy as sa

        from server.store.schema import audit_log

        await self.trail.flush()
        async with self.db.begin(readonly=True) as conn:
            return list(await conn.execute(sa.select(audit_log).order_by(audit_log.c.seq)))


PEOPLE = [
    ("patient", "patient", CANARY_NAME),
    ("patient2", "patient", "Other Patient"),
    ("doc", "practitioner", "Doctor Who"),
    ("doc2", "practitioner", "Doctor Nobody"),
    ("sec", "secretary", "Secretary Consult"),
    ("secrec", "secretary", "Secretary Records"),
    ("interp", "interpreter", "Interpreter Assigned"),
    ("interp2", "interpreter", "Interpreter Elsewhere"),
    ("tech", "technician", "Technician Assigned"),
    ("admin", "admin", "Admin A"),
]


@contextlib.asynccontextmanager
async def clinic_env(tmp_path: Path, url: str | None = None, **overrides: Any) -> AsyncIterator[
        Clinic]:  # fmt: skip
    settings = accounts_settings(tmp_path, **overrides)
    url = url or f"sqlite+aiosqlite:///{tmp_path / 'var' / 'medhub.db'}"
    if url.startswith("postgresql"):
        import msgspec

        settings = msgspec.structs.replace(settings, database_url=url)
    await upgrade_to_head_async(url, at_rest_key=settings.secret_at_rest_key)
    db = Database(url)
    await db.connect()
    broker = MemoryBroker()
    await broker.start()
    trail = AuditTrail.from_settings(settings, db)
    await trail.start()
    clock = FakeClock(time.time())
    accounts = build_accounts(settings, db, broker, trail, clock=clock)
    await accounts.start(None)
    keys = settings_keyring(settings)
    records = build_records(settings, db, AccountsFacts(db), trail, trail, keys,
                            exams=exams_of(db, keys))  # fmt: skip
    app = accounts.app([rest_part(records, accounts.shell)])
    try:
        org_a = (await accounts.admin.create_org(None, "Clinique A")).id
        org_b = (await accounts.admin.create_org(None, "Clinique B")).id
        tokens, ids = {}, {}
        plain = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                  base_url="http://testserver")  # fmt: skip
        async with plain:
            for n, (key, role, name) in enumerate([*PEOPLE, ("docb", "practitioner", "B")]):
                org = org_b if key == "docb" else org_a
                e = await enrol(plain, accounts, org, role, f"{key}-{n}@example.org", clock.now,
                                name=name)  # fmt: skip
                tokens[key], ids[key] = e.token, e.user_id
        admin = accounts.admin
        await admin.add_care(None, policy.Relationship("follows", ids["doc"], ids["patient"]))
        await admin.add_care(None, policy.Relationship("follows", ids["doc"], ids["patient2"]))
        await admin.grant_delegation(None, ids["doc"], ids["sec"], ["consultations"])
        await admin.grant_delegation(None, ids["doc"], ids["secrec"], ["records"])
        exam = policy.Exam("e-" + "ab" * 10, org_a, ids["patient"], ids["doc"], ids["tech"],
                           frozenset({ids["interp"]}))  # fmt: skip
        now = int(time.time() * 1e6)
        row = eeg_store.ExamRow(exam, "planned", "indication", 1, now, now)

        def create(c: Any) -> tuple[None, list[Any]]:
            eeg_store.create_exam(c, keys, row, ids["doc"])
            return None, []

        await write(trail, create)
        yield Clinic(settings, db, trail, accounts, records, app, tokens, ids, exam.id, org_a)
    finally:
        await accounts.close()
        await trail.close()
        await broker.close()
        await db.close()


@pytest.fixture
async def clinic(tmp_path: Path) -> AsyncIterator[Clinic]:
    async with clinic_env(tmp_path, records_chunk_bytes=4096) as c:
        yield c
