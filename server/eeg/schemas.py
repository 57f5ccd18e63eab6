"""Request and response bodies of the EEG exams API (msgspec Structs: validation and OpenAPI).

Requests refuse unknown fields; ids are the accounts API's (``^[a-z]-[0-9a-f]{1,38}$``).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

UserId = Annotated[
    str, msgspec.Meta(min_length=3, max_length=40, pattern=r"^[a-z]-[0-9a-f]{1,38}$")
]
Indication = Annotated[str, msgspec.Meta(max_length=500)]
State = Annotated[str, msgspec.Meta(pattern=r"^(planned|done|cancelled)$")]
MAX_INTERPRETERS = 32
#: Exams one list answers at most (newest first).
LIST_MAX = 500


class ExamCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new exam: ``ordering_id`` defaults to the caller (a practitioner)."""

    patient_id: UserId
    technician_id: UserId
    interpreters: Annotated[list[UserId], msgspec.Meta(min_length=1, max_length=MAX_INTERPRETERS)]
    ordering_id: UserId | None = None
    indication: Indication = ""


class ExamUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Changes to an exam at ``version`` (omitted fields stay)."""

    version: Annotated[int, msgspec.Meta(ge=1)]
    technician_id: UserId | None = None
    interpreters: (
        Annotated[list[UserId], msgspec.Meta(min_length=1, max_length=MAX_INTERPRETERS)] | None
    ) = None
    state: State | None = None
    indication: Indication | None = None


class StreamOut(msgspec.Struct):
    """A recording of an exam (``durable_end``: samples per channel stored)."""

    id: str
    state: str
    rate: int
    format: str
    channels: int
    durable_end: int
    created_us: int
    closed_us: int | None = None


class ExamOut(msgspec.Struct):
    """An exam, its people and its recordings."""

    id: str
    org_id: str
    patient_id: str
    ordering_id: str
    technician_id: str
    interpreters: list[str]
    state: str
    indication: str
    version: int
    created_us: int
    updated_us: int
    streams: list[StreamOut] = []


class ExamList(msgspec.Struct):
    exams: list[ExamOut]


class ExamVersion(msgspec.Struct):
    version: int
    action: str
    changed_by: str | None
    changed_us: int
    fields: list[str]
    snapshot: dict[str, Any]


class ExamVersions(msgspec.Struct):
    versions: list[ExamVersion]
