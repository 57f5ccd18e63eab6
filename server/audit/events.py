"""The typed audit event that capabilities build and hand to ``AuditTrail.record``.

Only pseudonymous identifiers go in an event: ids are checked against
:data:`ID_PATTERN` (letters, digits, ``. _ : -``; no ``@``, no spaces), so an
email address or a display name is rejected with ``ValueError`` when the
event is built, never written. Message bodies and EEG data have no field.

``Action`` and ``Result`` values are stable: they are stored, chained and
exported. Add members, never rename or reuse one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class Action(StrEnum):
    """What was done. Stored as its value."""

    # authentication and sessions
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    MFA_FAILED = "mfa_failed"
    LOCKOUT = "lockout"
    UNLOCK = "unlock"
    LOGOUT = "logout"
    PASSWORD_CHANGE = "password_change"  # noqa: S105 (an action name)
    MFA_ENROLL = "mfa_enroll"
    SESSION_REVOKE = "session_revoke"
    # real-time connections
    WS_CONNECT = "ws_connect"
    WS_DISCONNECT = "ws_disconnect"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    # data access
    READ = "read"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    EXPORT = "export"
    # authorisation refused (the attempted action goes in target / reason)
    DENIED = "denied"
    # administration
    ADMIN = "admin"
    ACCOUNT_CREATE = "account_create"
    ACCOUNT_DISABLE = "account_disable"
    ACCOUNT_PSEUDONYMISE = "account_pseudonymise"
    ROLE_GRANT = "role_grant"
    ROLE_REVOKE = "role_revoke"
    DELEGATION_GRANT = "delegation_grant"
    DELEGATION_REVOKE = "delegation_revoke"
    RATE_ALERT = "rate_alert"
    # the audit trail's own operations
    AUDIT_EXPORT = "audit_export"
    AUDIT_PURGE = "audit_purge"


class Result(StrEnum):
    """How it ended. ``DENIED`` and ``FAILED`` require a reason code."""

    OK = "ok"
    DENIED = "denied"
    FAILED = "failed"


#: A pseudonymous id (user, organisation, target, request, node): 1-128 chars.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
#: A short lower-case code (role, target type, reason): 1-64 chars.
CODE_PATTERN = re.compile(r"[a-z][a-z0-9_.]{0,47}")
REASON_PATTERN = re.compile(r"[a-z][a-z0-9_.]{0,63}")
#: An IPv4 or IPv6 address as produced by :func:`server.audit.source.client_address`.
ADDRESS_PATTERN = re.compile(r"[0-9A-Fa-f:.]{2,45}")

_ID_FIELDS = ("actor", "acting_for", "org", "target_id", "request_id")


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """One traced access or change.

    * ``action`` / ``result`` - what happened and how it ended; ``reason`` is a
      stable code (``bad_password``, ``not_in_org``) and is required unless
      ``result`` is ``OK``.
    * ``actor`` - the user id acting; ``acting_for`` - the practitioner a
      secretary acts for; ``role`` - the actor's role code; ``org`` - the
      organisation the access belongs to.
    * ``target_type`` / ``target_id`` - what was touched (``record``, ``r-123``).
    * ``source`` - the trusted client address (use ``client_address``).
    * ``request_id`` - the request or connection id, to join with the logs.
    * ``at`` - leave ``None``: the trail stamps the time from its UTC clock
      when :meth:`AuditTrail.record` is called. A naive datetime is taken as UTC.

    Raises ``ValueError`` when a field does not match its pattern (e.g. an
    email address as ``actor``) or a reason is missing.
    """

    action: Action
    result: Result = Result.OK
    actor: str | None = None
    acting_for: str | None = None
    role: str | None = None
    org: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    reason: str | None = None
    source: str | None = None
    request_id: str | None = None
    at: datetime | None = None

    def retarget(self, target_id: str) -> AuditEvent:
        """This event about ``target_id`` instead (only the new id is checked: cheap)."""
        if not ID_PATTERN.fullmatch(target_id):
            raise ValueError("audit field target_id is not a pseudonymous id")
        copy = object.__new__(AuditEvent)
        for name in self.__slots__:
            object.__setattr__(copy, name, getattr(self, name))
        object.__setattr__(copy, "target_id", target_id)
        return copy

    def __post_init__(self) -> None:
        # Accept the plain string values too (they are checked here).
        object.__setattr__(self, "action", Action(self.action))
        object.__setattr__(self, "result", Result(self.result))
        for name in _ID_FIELDS:
            value = getattr(self, name)
            if value is not None and not ID_PATTERN.fullmatch(value):
                raise ValueError(f"audit field {name} is not a pseudonymous id")
        for name in ("role", "target_type"):
            value = getattr(self, name)
            if value is not None and not CODE_PATTERN.fullmatch(value):
                raise ValueError(f"audit field {name} is not a lower-case code")
        if self.reason is not None and not REASON_PATTERN.fullmatch(self.reason):
            raise ValueError("audit field reason is not a lower-case code")
        if self.result is not Result.OK and self.reason is None:
            raise ValueError(f"an audit event with result {self.result.value} needs a reason")
        if self.source is not None and not ADDRESS_PATTERN.fullmatch(self.source):
            raise ValueError("audit field source is not an IP address")


class AuditRecorder(Protocol):
    """What every part of the hub needs of the audit trail: a non-blocking ``record``.

    :class:`server.audit.trail.AuditTrail` implements it; the hub, the
    capabilities and the accounts sidecar receive it in their constructors.
    """

    def record(self, event: AuditEvent) -> None:
        """Queue ``event`` for the audit writer; must not block."""


#: The audit target id recorded for a client-supplied id that is not a valid audit id.
INVALID_ID = "invalid"


def audit_id(value: str) -> str:
    """``value`` when the audit trail accepts it as an id, else :data:`INVALID_ID`.

    For ids supplied by clients: a malformed id is then refused with its
    proper error code instead of failing to build the audit event.
    """
    return value if ID_PATTERN.fullmatch(value) else INVALID_ID
