"""The accounts API's errors: an HTTP status and a stable code (clients branch on the code).

Answered as ``{"error": {"code": ..., "message": ...}}``; never a stack trace.
An error that says when to come back (``rate_limited``, an overloaded
``unavailable``) carries ``retry_after_s``, answered as a ``Retry-After`` header.
"""

from __future__ import annotations

#: code -> (HTTP status, default message). Stable: add codes, never rename one.
CODES: dict[str, tuple[int, str]] = {
    "bad_request": (400, "the request is malformed or has unknown fields"),
    "invitation_invalid": (400, "the invitation is unknown, used or expired"),
    "auth_failed": (401, "wrong email or password"),
    "mfa_failed": (401, "wrong or already used code"),
    "challenge_invalid": (401, "the login challenge is unknown or expired; log in again"),
    "unauthenticated": (401, "no valid session"),
    "forbidden": (403, "not allowed"),
    "csrf_failed": (403, "missing or wrong CSRF token"),
    "origin_refused": (403, "request origin not allowed"),
    "reauth_required": (403, "confirm your password and code first"),
    "password_expired": (403, "change your password first"),
    "not_found": (404, "no such resource"),
    "method_not_allowed": (405, "method not allowed"),
    "conflict": (409, "already exists"),
    "payload_too_large": (413, "the request body is too large"),
    "unsupported_media_type": (415, "send application/json"),
    "password_too_short": (422, "password too short"),
    "password_too_long": (422, "password too long"),
    "password_too_simple": (422, "password needs more character classes"),
    "password_common": (422, "password is too common"),
    "password_contains_context": (422, "password contains your name, email or the product name"),
    "password_reused": (422, "the new password must differ from the current one"),
    "rate_limited": (429, "too many requests right now; retry after Retry-After seconds"),
    "unavailable": (503, "busy or a backend is unreachable; retry later"),
    "internal": (500, "internal error"),
}


class ApiError(Exception):
    """An error answered to the client: ``code`` is a key of :data:`CODES`.

    ``retry_after_s`` (whole seconds, >= 1), when given, is sent as ``Retry-After``.
    """

    def __init__(
        self, code: str, message: str | None = None, *, retry_after_s: int | None = None
    ) -> None:
        status, default = CODES[code]
        super().__init__(code)
        self.code = code
        self.status = status
        self.message = message or default
        self.retry_after_s = None if retry_after_s is None else max(1, int(retry_after_s))
