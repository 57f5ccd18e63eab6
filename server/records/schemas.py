"""The records API's request and reply bodies (msgspec Structs: validation and OpenAPI)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

UserId = Annotated[
    str, msgspec.Meta(min_length=3, max_length=40, pattern=r"^[a-z]-[0-9a-f]{1,38}$")
]
#: A consultation id (``consult-<hex>``) or an EEG exam id (``e-<hex>``).
Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
FileName = Annotated[str, msgspec.Meta(max_length=255)]
Description = Annotated[str, msgspec.Meta(max_length=2000)]
#: A report's text: at most 60,000 characters (the JSON body limit is 64 KiB).
Text = Annotated[str, msgspec.Meta(max_length=60000)]
Version = Annotated[int, msgspec.Meta(ge=1)]
ReportKind = Annotated[str, msgspec.Meta(pattern=r"^(consultation_note|eeg_report)$")]


class DocumentCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new document of ``patient_id`` (its content is uploaded next, with PUT .../content)."""

    patient_id: UserId
    title: Title
    filename: FileName = ""
    description: Description = ""
    consultation_id: Ref | None = None
    exam_id: Ref | None = None


class DocumentUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """New title or description of a document at ``version``."""

    version: Version
    title: Title | None = None
    description: Description | None = None


class DocumentOut(msgspec.Struct):
    """A document. ``title``, ``filename`` and ``description`` are null for a caller who
    may only see the record's index (a secretary without the ``records`` scope)."""

    id: str
    patient_id: str
    version: int
    consultation_id: str | None
    exam_id: str | None
    media_type: str | None
    size: int | None
    title: str | None
    filename: str | None
    description: str | None
    created_by: str | None
    created_us: int
    updated_us: int
    archived: bool


class DocumentVersion(msgspec.Struct):
    """One version: who, when, what (``fields``) and the new values (``snapshot``)."""

    version: int
    action: str
    changed_by: str | None
    changed_us: int
    fields: list[str]
    media_type: str | None
    size: int | None
    snapshot: dict[str, Any]


class DocumentVersions(msgspec.Struct):
    versions: list[DocumentVersion]


class ReportCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new draft report (an EEG report names its exam)."""

    patient_id: UserId
    kind: ReportKind
    title: Title
    text: Text = ""
    consultation_id: Ref | None = None
    exam_id: Ref | None = None


class ReportEdit(msgspec.Struct, forbid_unknown_fields=True):
    """Changes to a draft at ``version``."""

    version: Version
    title: Title | None = None
    text: Text | None = None


class ReportSign(msgspec.Struct, forbid_unknown_fields=True):
    """Sign the draft at ``version``."""

    version: Version


class ReportAmend(msgspec.Struct, forbid_unknown_fields=True):
    """A new draft version replacing the signed ``version``."""

    version: Version
    text: Text
    title: Title | None = None


class ReportOut(msgspec.Struct):
    """One version of a report (``version``), the newest (``latest_version``) and the
    newest signed (``final_version``); ``cites``: the signed version an amendment replaces.
    ``title`` and ``text`` are null for a caller who may only see the index."""

    id: str
    patient_id: str
    kind: str
    status: str
    version: int
    latest_version: int
    final_version: int | None
    author_id: str
    title: str | None
    text: str | None
    cites: int | None
    signed_by: str | None
    signed_us: int | None
    consultation_id: str | None
    exam_id: str | None
    created_us: int
    updated_us: int


class ReportVersion(msgspec.Struct):
    """One version: who, when, what, its status, its signature and what it cites."""

    version: int
    action: str
    status: str
    changed_by: str | None
    changed_us: int
    fields: list[str]
    cites: int | None
    signed_by: str | None
    signed_us: int | None
    title: str
    text: str


class ReportVersions(msgspec.Struct):
    versions: list[ReportVersion]


class RecordIndex(msgspec.Struct):
    """What the caller may see of a patient's record, newest first."""

    documents: list[DocumentOut]
    reports: list[ReportOut]


class ErasureOut(msgspec.Struct):
    """An account pseudonymised; its records are deleted after ``purge_after_us``."""

    user_id: str
    purge_after_us: int


class Ok(msgspec.Struct):
    ok: bool = True
