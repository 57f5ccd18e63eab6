"""Request and response bodies of the accounts API (msgspec Structs).

Requests refuse unknown fields (``forbid_unknown_fields=True``); bounds and
patterns are part of the types, so validation and the OpenAPI document
(:mod:`server.accounts.openapi`) come from the same classes.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Email = Annotated[str, msgspec.Meta(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
Code = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6}$")]
RecoveryCode = Annotated[str, msgspec.Meta(min_length=10, max_length=32)]
Token = Annotated[str, msgspec.Meta(min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]
Id = Annotated[str, msgspec.Meta(min_length=3, max_length=40, pattern=r"^[a-z]-[0-9a-f]{1,38}$")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Phone = Annotated[str, msgspec.Meta(max_length=40, pattern=r"^[0-9+() .-]*$")]
RefId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
RoleName = Literal[
    "patient", "secretary", "practitioner", "technician", "interpreter", "admin", "superadmin"
]
ScopeName = Literal["consultations", "contact", "records"]
RelationName = Literal["follows", "consultation", "eeg_technician", "eeg_interpreter"]
SessionMode = Literal["bearer", "cookie"]


class Request(msgspec.Struct, forbid_unknown_fields=True):
    """Base of request bodies: unknown fields are refused."""


class Reply(msgspec.Struct):
    """Base of response bodies."""


class LoginRequest(Request):
    email: Email
    password: Password


class Challenge(Reply):
    challenge: str
    expires_in_s: float
    next: str = "mfa"


class MfaRequest(Request):
    challenge: Token
    code: Code | None = None
    recovery_code: RecoveryCode | None = None
    session: SessionMode = "bearer"


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
    id: str
    org_id: str
    role: str
    name: str
    email: str
    phone: str
    status: str


class UserList(Reply):
    users: list[UserOut]


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


class Created(Reply):
    id: str


class Ok(Reply):
    ok: bool = True


class ErrorDetail(Reply):
    code: str
    message: str


class ErrorBody(Reply):
    error: ErrorDetail
