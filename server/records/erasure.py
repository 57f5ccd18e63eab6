"""Account deletion requests: pseudonymise the person, keep their records under the pseudonym.

:func:`pseudonymise` runs in ONE transaction (a write job, committed with its
audit entries):

* the account's identity is replaced: name ``Pseudonym <id>``, email
  ``erased-<id>@invalid`` (its blind index too), phone empty; it is disabled,
  its password, TOTP secrets and recovery codes are cleared, its invitations
  voided, its sessions revoked (every node closes its sockets through the
  access change log);
* every earlier ``user_versions`` snapshot has its name, email and phone
  replaced the same way (the snapshots keep which fields changed, when, by
  whom); a ``delete`` version row records the erasure;
* the free text of the person's documents (title, file name, description),
  in the documents and in their version snapshots, is replaced by neutral
  labels; the medical contents (files, report texts) are kept, sealed,
  linked to the same pseudonymous id, for ``records_erasure_keep_days``
  (``record_erasures.purge_after_us``), then deleted by ``medhub retention run``;
* nothing of the audit trail changes: it only ever held pseudonymous ids, so
  the chain still verifies.

Raises ``LookupError`` for an unknown user, ``ValueError`` for one already
erased, :class:`~server.security.crypto.CryptoError` for a value that does
not open.
"""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.accounts.pii import ENCRYPTED, UserCipher
from server.accounts.tables import (
    access_changes,
    invitations,
    recovery_codes,
    sessions,
    user_versions,
    users,
)
from server.audit.events import Action as AuditAction
from server.audit.events import AuditEvent
from server.records import store
from server.records.sealing import RecordKeys
from server.records.tables import record_document_versions, record_documents, record_erasures

#: Fields of the account cleared or replaced (recorded in the ``delete`` version).
ERASED_FIELDS = ("name", "email", "phone", "status", "password_hash", "totp_secret", "totp_pending")


def pseudonyms(user_id: str) -> dict[str, str]:
    """The identity an erased account keeps."""
    return {"name": f"Pseudonym {user_id}", "email": f"erased-{user_id}@invalid", "phone": ""}


def pseudonymise(
    conn: Connection,
    cipher: UserCipher,
    keys: RecordKeys,
    user_id: str,
    by: str | None,
    now: int,
    keep_us: int,
    event: AuditEvent,
) -> list[AuditEvent]:
    """Erase ``user_id`` as the module docstring says; the audit events to commit."""
    u = users.c
    row = conn.execute(sa.select(users).where(u.id == user_id)).first()
    if row is None:
        raise LookupError(user_id)
    done = conn.execute(
        sa.select(record_erasures.c.user_id).where(record_erasures.c.user_id == user_id)
    ).first()
    if done is not None:
        raise ValueError("this account is already erased")
    fake = pseudonyms(user_id)
    version = int(row.version) + 1
    conn.execute(
        users.update()
        .where(u.id == user_id)
        .values(
            version=version,
            status="disabled",
            password_hash=None,
            totp_secret=None,
            totp_pending=None,
            **cipher.seal_columns(user_id, fake),
        )
    )
    _scrub_versions(conn, cipher, user_id, fake)
    snapshot = {
        **fake,
        "status": "disabled",
        "password_hash": None,
        "totp_secret": None,
        "totp_pending": None,
    }
    conn.execute(
        user_versions.insert().values(
            user_id=user_id,
            version=version,
            action="delete",
            changed_by=by,
            changed_us=now,
            fields=",".join(sorted(ERASED_FIELDS)),
            snapshot=cipher.seal_snapshot(user_id, version, snapshot),
        )
    )
    s = sessions.c
    revoked = [
        str(r.id)
        for r in conn.execute(sa.select(s.id).where(s.user_id == user_id, s.revoked_us.is_(None)))
    ]
    conn.execute(
        sessions.update().where(s.user_id == user_id, s.revoked_us.is_(None)).values(revoked_us=now)
    )
    conn.execute(recovery_codes.delete().where(recovery_codes.c.user_id == user_id))
    conn.execute(
        invitations.update()
        .where(invitations.c.user_id == user_id, invitations.c.used_us.is_(None))
        .values(used_us=now)
    )
    changes = [
        {"at_us": now, "user_id": user_id, "session_id": sid, "kind": "session"} for sid in revoked
    ]
    changes.append({"at_us": now, "user_id": user_id, "session_id": None, "kind": "rights"})
    conn.execute(access_changes.insert(), changes)
    documents = _scrub_documents(conn, keys, user_id)
    conn.execute(
        record_erasures.insert().values(
            user_id=user_id,
            org_id=row.org_id,
            requested_by=by,
            done_us=now,
            purge_after_us=now + keep_us,
            purged_us=None,
        )
    )
    events = [event]
    for sid in revoked:
        events.append(
            AuditEvent(
                action=AuditAction.SESSION_REVOKE,
                actor=event.actor,
                role=event.role,
                org=row.org_id,
                target_type="session",
                target_id=sid,
                reason="account_erased",
                source=event.source,
                request_id=event.request_id,
            )
        )
    for doc_id in documents:
        events.append(
            dataclasses.replace(
                event,
                action=AuditAction.UPDATE,
                target_type="record_document",
                target_id=doc_id,
                reason="account_erased",
            )
        )
    return events


def _scrub_versions(
    conn: Connection, cipher: UserCipher, user_id: str, fake: dict[str, str]
) -> None:
    v = user_versions.c
    rows = conn.execute(sa.select(v.version, v.snapshot).where(v.user_id == user_id)).all()
    for r in rows:
        snap = cipher.open_snapshot(user_id, r.version, bytes(r.snapshot))
        if not set(ENCRYPTED) & set(snap):
            continue
        snap.update({k: fake[k] for k in ENCRYPTED if k in snap})
        conn.execute(
            user_versions.update()
            .where(v.user_id == user_id, v.version == r.version)
            .values(snapshot=cipher.seal_snapshot(user_id, r.version, snap))
        )


def _scrub_documents(conn: Connection, keys: RecordKeys, patient_id: str) -> list[str]:
    """Neutral labels for the free text of ``patient_id``'s documents; their ids."""
    d = record_documents.c
    ids = [str(r.id) for r in conn.execute(sa.select(d.id).where(d.patient_id == patient_id))]
    dv = record_document_versions.c
    for doc_id in ids:
        cipher = store.cipher_of(conn, keys, doc_id)
        label = {"title": "document", "filename": doc_id, "description": ""}
        conn.execute(
            record_documents.update()
            .where(d.id == doc_id)
            .values(meta=cipher.seal("record_documents", "meta", doc_id, label))
        )
        for r in conn.execute(
            sa.select(dv.version, dv.snapshot).where(dv.document_id == doc_id)
        ).all():
            row = f"{doc_id}:{r.version}"
            snap = cipher.open("record_document_versions", "snapshot", row, bytes(r.snapshot))
            if not set(label) & set(snap):
                continue
            snap.update({k: v for k, v in label.items() if k in snap})
            conn.execute(
                record_document_versions.update()
                .where(dv.document_id == doc_id, dv.version == r.version)
                .values(snapshot=cipher.seal("record_document_versions", "snapshot", row, snap))
            )
    return ids
