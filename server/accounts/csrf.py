"""CSRF defence for cookie-authenticated requests, and the session cookie.

Browsers hold the session in the ``__Host-medhub-session`` cookie (``Secure``,
``HttpOnly``, ``SameSite=Strict``, ``Path=/``, no ``Domain``). Every
state-changing request (any method but GET, HEAD, OPTIONS) authenticated by
that cookie must carry:

- ``X-CSRF-Token``: a synchronizer token bound to the session,
  ``HMAC-SHA256(key, "csrf" | session token)``, given in the login answer and by
  ``GET /api/v1/session``; compared with ``hmac.compare_digest``;
- an ``Origin`` in ``allowed_origins``, or, when the browser sends no Origin,
  ``Sec-Fetch-Site: same-origin``. A request with neither is refused.

Bearer-token requests (API clients) carry no ambient credential, so they need
neither. Login endpoints (no session yet) get the Origin / Sec-Fetch-Site
check when a browser sends those headers (login CSRF).
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Collection, Mapping

COOKIE_NAME = "__Host-medhub-session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(key: bytes, session_token: str) -> str:
    """The CSRF token bound to ``session_token``."""
    mac = hmac.digest(key, b"csrf|" + session_token.encode(), "sha256")
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def csrf_ok(key: bytes, session_token: str, presented: str | None) -> bool:
    """True when ``presented`` is the session's CSRF token (constant-time)."""
    if not presented:
        return False
    return hmac.compare_digest(csrf_token(key, session_token), presented)


def origin_ok(headers: Mapping[str, str], allowed: Collection[str], *, require: bool) -> bool:
    """Check ``Origin`` (else ``Sec-Fetch-Site``) of a request.

    A present Origin must be allowed; a present Sec-Fetch-Site must be
    ``same-origin`` (or ``none``: typed by the user). With ``require``, a
    request that sends neither header is refused.
    """
    origin = headers.get("origin")
    if origin is not None:
        return origin in allowed
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    return not require


def session_cookie(token: str, max_age_s: int) -> str:
    """The ``Set-Cookie`` value carrying a session token."""
    return f"{COOKIE_NAME}={token}; Max-Age={max_age_s}; Path=/; Secure; HttpOnly; SameSite=Strict"


def clear_cookie() -> str:
    """The ``Set-Cookie`` value removing the session cookie."""
    return f"{COOKIE_NAME}=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Strict"
