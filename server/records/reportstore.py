"""The SQL of structured records (consultation notes, EEG interpretation reports).

A report is a sequence of immutable versions (``record_report_versions``),
each holding the whole sealed body (title, text) at that version, its status
and, once signed, who signed it and when. ``record_reports`` is the header:
the current version, its status and author, and the newest signed version.

* a draft is edited (``update``) by its author, then signed (``sign``: a new
  version, ``final``, ``signed_by`` = the author, ``signed_us`` = now);
* a final version never changes: ``amend`` starts a new draft version that
  cites (``cites``) the signed version it replaces; readers who may not see
  drafts keep seeing the newest signed version until the amendment is signed;
* a report never signed may be deleted (a tombstone version); a signed one
  may not.

Same conventions as :mod:`server.records.store` (synchronous, one
transaction, :class:`~server.records.store.Conflict`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.records.sealing import RecordKeys
from server.records.store import Conflict, cipher_of, new_key
from server.records.tables import record_report_versions, record_reports


@dataclass(frozen=True, slots=True)
class Report:
    """One version of a report, as shown (``version``: the version shown)."""

    id: str
    org_id: str
    patient_id: str
    kind: str
    consultation_id: str | None
    exam_id: str | None
    status: str
    version: int
    latest_version: int
    final_version: int | None
    author_id: str
    title: str
    text: str
    cites: int | None
    signed_by: str | None
    signed_us: int | None
    created_us: int
    updated_us: int
    deleted_us: int | None


@dataclass(frozen=True, slots=True)
class Header:
    """A report's header row (no body)."""

    id: str
    org_id: str
    patient_id: str
    kind: str
    consultation_id: str | None
    exam_id: str | None
    status: str
    version: int
    final_version: int | None
    author_id: str
    created_us: int
    updated_us: int
    deleted_us: int | None


#: A change applied inside the write transaction to the current header.
Change = Callable[[Connection, RecordKeys, Header], Report]


def _header(r: Any) -> Header:
    return Header(
        r.id,
        r.org_id,
        r.patient_id,
        r.kind,
        r.consultation_id,
        r.exam_id,
        r.status,
        r.version,
        r.final_version,
        r.author_id,
        r.created_us,
        r.updated_us,
        r.deleted_us,
    )


def header(conn: Connection, report_id: str) -> Header | None:
    """The header of ``report_id`` (tombstoned too), or None."""
    r = conn.execute(sa.select(record_reports).where(record_reports.c.id == report_id)).first()
    return None if r is None else _header(r)


def headers_of(conn: Connection, org_id: str, patient_id: str, limit: int) -> list[Header]:
    """The live reports of a patient, newest first."""
    c = record_reports.c
    rows = conn.execute(
        sa.select(record_reports)
        .where(c.org_id == org_id, c.patient_id == patient_id, c.deleted_us.is_(None))
        .order_by(c.updated_us.desc())
        .limit(limit)
    ).all()
    return [_header(r) for r in rows]


def _aad_row(report_id: str, version: int) -> str:
    return f"{report_id}:{version}"


def read(conn: Connection, keys: RecordKeys, h: Header, version: int) -> Report:
    """Version ``version`` of the report ``h``, its body opened."""
    c = record_report_versions.c
    r = conn.execute(
        sa.select(record_report_versions).where(c.report_id == h.id, c.version == version)
    ).first()
    if r is None:
        raise LookupError(f"{h.id}:{version}")
    body = cipher_of(conn, keys, h.id).open(
        "record_report_versions", "body", _aad_row(h.id, version), bytes(r.body)
    )
    return Report(
        h.id,
        h.org_id,
        h.patient_id,
        h.kind,
        h.consultation_id,
        h.exam_id,
        r.status,
        version,
        h.version,
        h.final_version,
        r.changed_by or h.author_id,
        str(body.get("title", "")),
        str(body.get("text", "")),
        r.cites,
        r.signed_by,
        r.signed_us,
        h.created_us,
        h.updated_us,
        h.deleted_us,
    )


def _version(
    conn: Connection,
    keys: RecordKeys,
    report_id: str,
    version: int,
    action: str,
    status: str,
    by: str | None,
    now: int,
    fields: list[str],
    body: dict[str, str],
    cites: int | None = None,
    signed: bool = False,
) -> None:
    sealed = cipher_of(conn, keys, report_id).seal(
        "record_report_versions", "body", _aad_row(report_id, version), body
    )
    conn.execute(
        record_report_versions.insert().values(
            report_id=report_id,
            version=version,
            action=action,
            status=status,
            changed_by=by,
            changed_us=now,
            fields=",".join(sorted(fields)),
            cites=cites,
            signed_by=by if signed else None,
            signed_us=now if signed else None,
            body=sealed,
        )
    )


def create(
    conn: Connection, keys: RecordKeys, h: Header, title: str, text: str, now: int
) -> Report:
    """Insert a new draft report ``h`` (version 1) by ``h.author_id``."""
    new_key(conn, keys, h.id, now)
    conn.execute(
        record_reports.insert().values(
            id=h.id,
            org_id=h.org_id,
            patient_id=h.patient_id,
            kind=h.kind,
            consultation_id=h.consultation_id,
            exam_id=h.exam_id,
            status="draft",
            version=1,
            final_version=None,
            author_id=h.author_id,
            created_us=now,
            updated_us=now,
            deleted_us=None,
        )
    )
    fields = ["title", "text", "patient_id", "kind"]
    _version(
        conn,
        keys,
        h.id,
        1,
        "create",
        "draft",
        h.author_id,
        now,
        fields,
        {"title": title, "text": text},
    )
    return read(conn, keys, header(conn, h.id) or h, 1)


def _advance(conn: Connection, h: Header, expected: int, **values: Any) -> int:
    """Move the header to the next version (``expected`` must be current)."""
    if h.deleted_us is not None or expected != h.version:
        raise Conflict(h.id)
    c = record_reports.c
    done = conn.execute(
        record_reports.update()
        .where(c.id == h.id, c.version == h.version)
        .values(version=h.version + 1, **values)
    )
    if done.rowcount != 1:
        raise Conflict(h.id)
    return h.version + 1


def edit(
    conn: Connection,
    keys: RecordKeys,
    h: Header,
    expected: int,
    by: str,
    now: int,
    title: str | None,
    text: str | None,
) -> Report:
    """A new draft version with ``title``/``text`` changed; only a draft changes this way."""
    if h.status != "draft":
        raise Conflict(h.id)
    old = read(conn, keys, h, h.version)
    body = {
        "title": old.title if title is None else title,
        "text": old.text if text is None else text,
    }
    fields = [f for f, v in (("title", title), ("text", text)) if v is not None]
    v = _advance(conn, h, expected, updated_us=now, author_id=by)
    _version(conn, keys, h.id, v, "update", "draft", by, now, fields, body, old.cites)
    return read(conn, keys, header(conn, h.id) or h, v)


def sign(conn: Connection, keys: RecordKeys, h: Header, expected: int, by: str, now: int) -> Report:
    """Sign the current draft: a new ``final`` version signed by ``by`` at ``now``."""
    if h.status != "draft":
        raise Conflict(h.id)
    old = read(conn, keys, h, h.version)
    v = _advance(conn, h, expected, status="final", final_version=h.version + 1, updated_us=now)
    _version(
        conn,
        keys,
        h.id,
        v,
        "sign",
        "final",
        by,
        now,
        ["status"],
        {"title": old.title, "text": old.text},
        old.cites,
        signed=True,
    )
    return read(conn, keys, header(conn, h.id) or h, v)


def amend(
    conn: Connection,
    keys: RecordKeys,
    h: Header,
    expected: int,
    by: str,
    now: int,
    title: str | None,
    text: str,
) -> Report:
    """Start an amendment of the signed current version: a new draft citing it."""
    if h.status != "final" or h.final_version is None:
        raise Conflict(h.id)
    old = read(conn, keys, h, h.version)
    body = {"title": old.title if title is None else title, "text": text}
    v = _advance(conn, h, expected, status="draft", author_id=by, updated_us=now)
    fields = ["text", *(["title"] if title is not None else [])]
    _version(conn, keys, h.id, v, "amend", "draft", by, now, fields, body, h.final_version)
    return read(conn, keys, header(conn, h.id) or h, v)


def delete(conn: Connection, keys: RecordKeys, h: Header, by: str | None, now: int) -> None:
    """Tombstone a report never signed (a tombstone version); :class:`Conflict` otherwise."""
    if h.final_version is not None:
        raise Conflict(h.id)
    old = read(conn, keys, h, h.version)
    v = _advance(conn, h, h.version, deleted_us=now, updated_us=now)
    _version(
        conn,
        keys,
        h.id,
        v,
        "delete",
        h.status,
        by,
        now,
        ["deleted"],
        {"title": old.title, "text": old.text},
    )


def versions(conn: Connection, keys: RecordKeys, report_id: str) -> list[dict[str, Any]]:
    """Every version of a report, oldest first (who, when, action, status, body, citation)."""
    cipher = cipher_of(conn, keys, report_id)
    c = record_report_versions.c
    rows = conn.execute(
        sa.select(record_report_versions).where(c.report_id == report_id).order_by(c.version)
    ).all()
    out = []
    for r in rows:
        body = cipher.open(
            "record_report_versions", "body", _aad_row(report_id, r.version), bytes(r.body)
        )
        out.append(
            {
                "version": r.version,
                "action": r.action,
                "status": r.status,
                "changed_by": r.changed_by,
                "changed_us": r.changed_us,
                "fields": [f for f in r.fields.split(",") if f],
                "cites": r.cites,
                "signed_by": r.signed_by,
                "signed_us": r.signed_us,
                "title": str(body.get("title", "")),
                "text": str(body.get("text", "")),
            }
        )
    return out
