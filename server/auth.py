"""Who is on a socket: the authenticator interface the WebSocket handshake calls.

The accounts sidecar provides the implementation (session tokens, single-use
tickets, cookies); the composition root always installs it, unless a test
passes its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from protocol.errors import ErrorCode
from protocol.messages import Auth


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user, by pseudonymous ids only."""

    user_id: str
    org_id: str
    role: str
    session_id: str
    acting_for: str | None = None
    #: Wall-clock time (``time.time()`` seconds) when the session ends for good
    #: (absolute timeout, guest expiry); the hub closes the socket then (4010).
    #: None: no end known (test authenticators).
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class HandshakeInfo:
    """What the WebSocket upgrade request told us, for cookie and Origin checks."""

    origin: str | None
    client_address: str | None
    cookies: Mapping[str, str] = field(default_factory=dict)


class AuthError(Exception):
    """Credentials refused; ``code`` is ``auth_failed`` or ``expired``.

    The message is for logs only: clients get the same answer whatever the
    cause, so it must not reveal whether an account exists.
    """

    def __init__(self, code: ErrorCode = ErrorCode.AUTH_FAILED, reason: str = "refused") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Authenticator(Protocol):
    """Turns ``hello`` credentials into a :class:`Principal`."""

    async def authenticate(self, auth: Auth, info: HandshakeInfo) -> Principal:
        """Return the principal, or raise :class:`AuthError`."""
        ...
