"""The accounts API calls the SDK and ``medhub-chat`` make over REST (``<base_url>/api/v1``).

Sign-in (password, then TOTP), accepting an invitation, confirming TOTP
enrolment, and the single-use WebSocket ticket. Every function raises only
:mod:`clients.errors` exceptions: :class:`SignInError` when the API refuses,
:class:`TransportError` when it cannot be reached (the ``httpx`` exception is
``__cause__``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from clients.errors import SessionEndedError, SignInError, TransportError


@dataclass(frozen=True)
class SessionInfo:
    """A signed-in session: the bearer token and who it is."""

    token: str
    user_id: str
    org_id: str
    role: str


@dataclass(frozen=True, slots=True)
class Enrolment:
    """What accepting an invitation gives: the TOTP secret to add, and a challenge."""

    otpauth_uri: str
    qr_svg: str
    challenge: str


def api_url(base_url: str) -> str:
    """``<base_url>/api/v1``; raises ValueError unless ``base_url`` is http(s)://host[...]."""
    scheme, sep, rest = base_url.rstrip("/").partition("://")
    if scheme not in ("http", "https") or not sep or not rest:
        raise ValueError(f"not an http:// or https:// URL: {base_url!r}")
    return base_url.rstrip("/") + "/api/v1"


def describe(exc: BaseException) -> str:
    """A short, secret-free description of a library exception, for messages."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _post(base_url: str, path: str, timeout_s: float, **kwargs: Any) -> httpx.Response:
    """POST to the accounts API; transport failures become :class:`TransportError`."""
    try:
        async with httpx.AsyncClient(base_url=api_url(base_url), timeout=timeout_s) as http:
            return await http.post(path, **kwargs)
    except httpx.TransportError as exc:
        raise TransportError(describe(exc)) from exc


def _body(response: httpx.Response, *fields: str) -> dict[str, Any]:
    """The JSON body of a 200 answer with ``fields``; anything else is a transport error."""
    try:
        body = response.json()
        if isinstance(body, dict) and all(f in body for f in fields):
            return body
    except ValueError:
        pass
    raise TransportError(f"unexpected answer from {response.request.url.path} (not medhub?)")


async def sign_in(base_url: str, email: str, password: str, totp_code: str) -> SessionInfo:
    """Password, then TOTP, against ``<base_url>/api/v1``; returns the bearer session.

    Raises :class:`SignInError` on refusal, :class:`TransportError` when unreachable.
    """
    r = await _post(base_url, "/login", 30, json={"email": email, "password": password})
    if r.status_code != 200:
        raise SignInError(code_of(r), r.status_code)
    challenge = _body(r, "challenge")["challenge"]
    mfa = {"challenge": challenge, "code": totp_code, "session": "bearer"}
    r = await _post(base_url, "/login/mfa", 30, json=mfa)
    if r.status_code != 200:
        raise SignInError(code_of(r), r.status_code)
    body = _body(r, "token", "user_id", "org_id", "role")
    return SessionInfo(body["token"], body["user_id"], body["org_id"], body["role"])


async def accept_invitation(base_url: str, token: str, password: str) -> Enrolment:
    """Set the password of an invited account (or a new superadmin's enrolment code).

    The caller adds ``otpauth_uri`` to an authenticator app, then calls
    :func:`confirm_enrolment` with its first code. Raises :class:`SignInError`
    or :class:`TransportError`.
    """
    body = {"token": token, "password": password}
    r = await _post(base_url, "/invitations/accept", 30, json=body)
    if r.status_code != 200:
        raise SignInError(code_of(r), r.status_code)
    out = _body(r, "otpauth_uri", "qr_svg", "challenge")
    return Enrolment(out["otpauth_uri"], out["qr_svg"], out["challenge"])


async def confirm_enrolment(
    base_url: str, challenge: str, totp_code: str
) -> tuple[SessionInfo, list[str]]:
    """Confirm TOTP with its first code; returns the session and the 10 recovery codes.

    Raises :class:`SignInError` or :class:`TransportError`.
    """
    body = {"challenge": challenge, "code": totp_code, "session": "bearer"}
    r = await _post(base_url, "/mfa/enrol", 30, json=body)
    if r.status_code != 200:
        raise SignInError(code_of(r), r.status_code)
    out = _body(r, "token", "user_id", "org_id", "role")
    info = SessionInfo(out["token"], out["user_id"], out["org_id"], out["role"])
    return info, list(out.get("recovery_codes") or [])


async def ws_ticket(base_url: str, token: str, timeout_s: float) -> str:
    """A single-use WebSocket ticket for the bearer session ``token``.

    Raises :class:`SessionEndedError` when the API refuses the session (401, or
    403 ``password_expired``): permanent. Any other failure (unreachable, 5xx,
    an answer that is not medhub's) is a :class:`TransportError`: retry later.
    """
    r = await _post(base_url, "/ws-ticket", timeout_s, headers={"Authorization": f"Bearer {token}"})
    if r.status_code in (401, 403):
        raise SessionEndedError(code_of(r))
    if r.status_code != 200:
        raise TransportError(f"ticket refused for now: {code_of(r)} (HTTP {r.status_code})")
    return str(_body(r, "ticket")["ticket"])


def code_of(response: httpx.Response) -> str:
    """The stable error code of a refused REST call (``{"error": {"code": ...}}``)."""
    try:
        body = response.json()
    except ValueError:
        return "refused"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return str(error["code"])
    return "refused"
