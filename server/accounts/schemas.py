"""Request and response bodies of the accounts API (msgspec Structs).

Requests refuse unknown fields (``forbid_unknown_fields=True``); bounds and
patterns are part of the types, so validation and the OpenAPI document
(:mod:`server.accounts.openapi`) come from the same classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from server.accounts.errors import ApiError

Email = Annotated[str, msgspec.Meta(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
Code = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6}$")]
RecoveryCode = Annotated[str, msgspec.Meta(min_length=10, max_length=32)]
Token = Annotated[str, msgspec.Meta(min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]
Id = Annotated[str, msgspec.Meta(min_length=3, max_length=40, pattern=r"^[a-z]-[0-9a-f]{1,38}$")]
#: A person's or organisation's name: 1-200 characters, not only spaces.
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"\S")]
Phone = Annotated[str, msgspec.Meta(max_length=40, pattern=r"^[0-9+() .-]*$")]
RefId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
RoleName = Literal[
    "patient", "secretary", "practitioner", "technician", "interpreter", "admin", "superadmin"
]
ScopeName = Literal["consultations", "contact", "records"]
RelationName = Literal["follows", "consultation", "eeg_technician", "eeg_interpreter"]
SessionMode = Literal["bearer", "cookie"]
#: Ids one ``POST /directory`` may name.
DIRECTORY_MAX_IDS = 256
R = TypeVar("R", bound=msgspec.Struct)


def parse(kind: type[R], data: Mapping[str, Any]) -> R:
    """``data`` validated into the request Struct ``kind``: the REST API's check, for
    callers that are not HTTP (the ``medhub admin`` CLI).

    Raises ``ApiError("bad_request")`` with msgspec's message, the one the API answers.
    """
    try:
        return msgspec.convert(dict(data), kind)
    except msgspec.ValidationError as exc:
        raise ApiError("bad_request", str(exc)) from None


class Request(msgspec.Struct, forbid_unknown_fields=True):
    """Base of request bodies: unknown fields are refused."""


class Reply(msgspec.Struct):
    """Base of response bodies."""


class LoginRequest(Request):
    email: Email
    password: Password


class Challenge(Reply):
    """``next``: ``mfa`` (send the code to ``/login/mfa``) or ``enrol`` (an admin reset
    the MFA: add ``otpauth_uri`` to an app, send its first code to ``/mfa/enrol``)."""

    challenge: str
    expires_in_s: float
    next: str = "mfa"
    otpauth_uri: str | None = None
    qr_svg: str | None = None


class MfaRequest(Request):
    challenge: Token
    code: Code | None = None
    recovery_code: RecoveryCode | None = None
    session: SessionMode = "bearer"


class NoticeOut(Reply):
    """Told to the account's owner at login. ``account_locked_recently``: since the
    previous successful login, the account was locked or saw ``failures`` failed
    attempts; ``at``: the last lock (or failure), unix seconds."""

    code: str
    at: int
    failures: int


class SessionOut(Reply):
    session_id: str
    user_id: str
    org_id: str
    role: str
    csrf_token: str
    expires_at_us: int
    restricted: str | None = None
    token: str | None = None
    recovery_codes: list[str] | None = None
    notices: list[NoticeOut] = []


class InvitationAccept(Request):
    token: Token
    password: Password


class EnrolmentOut(Reply):
    otpauth_uri: str
    qr_svg: str
    challenge: str | None = None


class EnrolConfirm(Request):
    challenge: Token
    code: Code
    session: SessionMode = "bearer"


class ReauthRequest(Request):
    password: Password
    code: Code


class PasswordChange(Request):
    new_password: Password


class EmailChange(Request):
    email: Email


class CodeRequest(Request):
    code: Code


class RecoveryCodesOut(Reply):
    recovery_codes: list[str]


class SessionItem(Reply):
    session_id: str
    created_at_us: int
    last_seen_at_us: int
    expires_at_us: int
    current: bool
    source: str | None = None


class SessionList(Reply):
    sessions: list[SessionItem]


class Revoked(Reply):
    revoked: int


class TicketOut(Reply):
    ticket: str
    expires_in_s: float


class OrgCreate(Request):
    name: Name


class OrgOut(Reply):
    id: str
    name: str
    disabled: bool


class OrgList(Reply):
    orgs: list[OrgOut]


class InviteRequest(Request):
    role: RoleName
    name: Name
    email: Email
    phone: Phone = ""
    guest_days: Annotated[int, msgspec.Meta(ge=1, le=365)] | None = None


class InviteOut(Reply):
    user_id: str
    invitation_token: str
    expires_at_us: int


class UserOut(Reply):
    """``status``: invited, active or disabled; ``locked``: the account is locked for
    every address now (failed sign-ins); ``created_at``: unix seconds."""

    id: str
    org_id: str
    role: str
    name: str
    email: str
    phone: str
    status: str
    locked: bool = False
    created_at: int = 0


class UserList(Reply):
    users: list[UserOut]


class ReinviteOut(Reply):
    """A new one-time invitation token (shown once) and its end (unix seconds)."""

    invitation: str
    expires_at: int


class DirectoryRequest(Request):
    ids: Annotated[list[Id], msgspec.Meta(max_length=DIRECTORY_MAX_IDS)]


class PersonOut(Reply):
    name: str
    role: str
    org: str


class DirectoryOut(Reply):
    """Only the ids the caller may see; the others are left out (not revealed)."""

    people: dict[str, PersonOut]


class RoleChange(Request):
    role: RoleName


class DelegationCreate(Request):
    practitioner_id: Id
    delegate_id: Id
    scopes: Annotated[list[ScopeName], msgspec.Meta(min_length=1, max_length=3)]


class DelegationOut(Reply):
    id: str
    practitioner_id: str
    delegate_id: str
    scopes: list[str]


class DelegationList(Reply):
    delegations: list[DelegationOut]


class CareCreate(Request):
    kind: RelationName
    actor_id: Id
    patient_id: Id
    ref_id: RefId | None = None


class CareOut(Reply):
    id: str
    kind: str
    actor_id: str
    patient_id: str
    ref_id: str | None = None


class CareList(Reply):
    relationships: list[CareOut]


class Created(Reply):
    id: str


class Ok(Reply):
    ok: bool = True


class ErrorDetail(Reply):
    code: str
    message: str


class ErrorBody(Reply):
    error: ErrorDetail
