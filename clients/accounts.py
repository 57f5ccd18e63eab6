"""The accounts API calls the SDK and ``medhub-chat`` make over REST (``<base_url>/api/v1``).

Sign-in (password, then a TOTP or recovery code), accepting an invitation,
confirming TOTP enrolment, the single-use WebSocket ticket, sign-out, and any
other call with a bearer session (:func:`call`: the directory, administration).
Every function raises only :mod:`clients.errors` exceptions: :class:`SignInError`
when sign-in or enrolment is refused, :class:`ApiError` when another call is
refused, :class:`SessionEndedError` when the session is (401, or 403
``password_expired``), :class:`TransportError` when the API cannot be reached
(the ``httpx`` exception is ``__cause__``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from clients.errors import ApiError, SessionEndedError, SignInError, TransportError

#: The MFA code of an authenticator app: six digits (anything else is a recovery code).
TOTP_DIGITS = 6


@dataclass(frozen=True)
class SessionInfo:
    """A signed-in session: the bearer token and who it is.

    ``notices``: what the API tells the user at sign-in (``{"code", ...}`` maps,
    e.g. ``account_locked_recently`` with ``at`` and ``failures``); empty otherwise.
    ``restricted``: ``password_expired`` when the session may only change the
    password (:func:`change_password`), else None.
    """

    token: str
    user_id: str
    org_id: str
    role: str
    notices: tuple[dict[str, Any], ...] = ()
    restricted: str | None = None


@dataclass(frozen=True, slots=True)
class LoginStep:
    """The answer to the password step.

    ``next`` is ``mfa`` (send a code with :func:`mfa_step`) or ``enrol`` (an
    administrator reset the MFA: add ``otpauth_uri`` to an authenticator app and
    confirm its first code with :func:`confirm_enrolment`).
    """

    challenge: str
    next: str = "mfa"
    otpauth_uri: str = ""
    qr_svg: str = ""


@dataclass(frozen=True, slots=True)
class Person:
    """What the directory tells about a user: display name, role, organisation id."""

    id: str
    name: str
    role: str
    org: str


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
    return await _send(base_url, "POST", path, timeout_s, **kwargs)


async def _send(
    base_url: str, method: str, path: str, timeout_s: float, **kwargs: Any
) -> httpx.Response:
    """One request to the accounts API; transport failures become :class:`TransportError`."""
    try:
        async with httpx.AsyncClient(base_url=api_url(base_url), timeout=timeout_s) as http:
            return await http.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        raise TransportError(describe(exc)) from exc


async def call(
    base_url: str, method: str, path: str, token: str, *,
    json: Any = None, params: dict[str, str] | None = None, timeout_s: float = 30.0,
) -> dict[str, Any]:  # fmt: skip
    """Call ``<base_url>/api/v1<path>`` with the bearer session ``token``; the JSON answer.

    Raises :class:`SessionEndedError` (401 ``unauthenticated``, or 403
    ``password_expired``: sign in again), :class:`ApiError` (any other refusal,
    with its stable code, e.g. 401 ``auth_failed`` from ``/reauth``),
    :class:`TransportError` (unreachable, or an answer that is not medhub's).
    """
    kwargs: dict[str, Any] = {"headers": {"Authorization": f"Bearer {token}"}}
    if json is not None:
        kwargs["json"] = json
    if params:
        kwargs["params"] = params
    r = await _send(base_url, method, path, timeout_s, **kwargs)
    code = code_of(r) if r.status_code >= 300 else ""
    ended = r.status_code == 401 and code in ("unauthenticated", "refused")
    if ended or (r.status_code == 403 and code == "password_expired"):
        raise SessionEndedError(code if code != "refused" else "unauthenticated")
    if r.status_code >= 300:
        raise ApiError(code, r.status_code, _retry_after(r))
    return _body(r)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _body(response: httpx.Response, *fields: str) -> dict[str, Any]:
    """The JSON body of a 200 answer with ``fields``; anything else is a transport error."""
    try:
        body = response.json()
        if isinstance(body, dict) and all(f in body for f in fields):
            return body
    except ValueError:
        pass
    raise TransportError(f"unexpected answer from {response.request.url.path} (not medhub?)")


def is_totp_code(code: str) -> bool:
    """Whether ``code`` (spaces ignored) is an authenticator app's code, not a recovery code."""
    digits = "".join(code.split())
    return len(digits) == TOTP_DIGITS and digits.isascii() and digits.isdigit()


async def sign_in(base_url: str, email: str, password: str, totp_code: str) -> SessionInfo:
    """Password, then a TOTP code or a recovery code, against ``<base_url>/api/v1``.

    ``totp_code`` is either the six digits of the authenticator app or one of
    the recovery codes given at enrolment (each works once); which one is told
    by its form (:func:`is_totp_code`). Returns the bearer session. Raises
    :class:`SignInError` on refusal (``enrolment_required``, HTTP 0, when an
    administrator reset the MFA: use :func:`password_step` and enrol again),
    :class:`TransportError` when unreachable.
    """
    step = await password_step(base_url, email, password)
    if step.next != "mfa":
        raise SignInError("enrolment_required", 0)
    return await mfa_step(base_url, step.challenge, totp_code)


async def password_step(base_url: str, email: str, password: str) -> LoginStep:
    """The password step of sign-in; what to do next (:class:`LoginStep`).

    Raises :class:`SignInError` (``auth_failed``: the same for every cause) or
    :class:`TransportError`.
    """
    r = await _post(base_url, "/login", 30, json={"email": email, "password": password})
    if r.status_code != 200:
        raise SignInError(code_of(r), r.status_code)
    body = _body(r, "challenge")
    return LoginStep(
        str(body["challenge"]),
        str(body.get("next") or "mfa"),
        str(body.get("otpauth_uri") or ""),
        str(body.get("qr_svg") or ""),
    )


def _session(body: dict[str, Any]) -> SessionInfo:
    notices = tuple(n for n in body.get("notices") or () if isinstance(n, dict))
    restricted = body.get("restricted")
    return SessionInfo(
        body["token"], body["user_id"], body["org_id"], body["role"], notices,
        str(restricted) if restricted else None,
    )  # fmt: skip


async def mfa_step(base_url: str, challenge: str, code: str) -> SessionInfo:
    """Spend ``challenge`` with a TOTP code or a recovery code; returns the session.

    A refused code (``mfa_failed``) leaves the challenge usable until it expires
    (``challenge_invalid``), so the caller may ask for the code again. Raises
    :class:`SignInError` or :class:`TransportError`.
    """
    mfa: dict[str, str] = {"challenge": challenge, "session": "bearer"}
    if is_totp_code(code):
        mfa["code"] = "".join(code.split())
    else:
        mfa["recovery_code"] = code.strip()
    r = await _post(base_url, "/login/mfa", 30, json=mfa)
    if r.status_code != 200:
        raise SignInError(code_of(r), r.status_code)
    return _session(_body(r, "token", "user_id", "org_id", "role"))


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

    A refused code (``mfa_failed``) leaves ``challenge`` usable until it
    expires, so the caller may ask for the code again. Raises
    :class:`SignInError` or :class:`TransportError`.
    """
    body = {"challenge": challenge, "code": "".join(totp_code.split()), "session": "bearer"}
    r = await _post(base_url, "/mfa/enrol", 30, json=body)
    if r.status_code != 200:
        raise SignInError(code_of(r), r.status_code)
    out = _body(r, "token", "user_id", "org_id", "role")
    return _session(out), list(out.get("recovery_codes") or [])


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


async def sign_out(base_url: str, token: str) -> None:
    """End the bearer session ``token`` (its sockets close 4010).

    A session that had already ended is no error. Raises :class:`ApiError` or
    :class:`TransportError`.
    """
    with contextlib.suppress(SessionEndedError):
        await call(base_url, "POST", "/logout", token)


async def reauthenticate(base_url: str, token: str, password: str, code: str) -> None:
    """Confirm the password and a TOTP code again (``POST /reauth``).

    Sensitive changes (a password, a re-invitation, an MFA reset) need it within
    the server's ``reauth_window_s`` (a sign-in counts). Raises
    :class:`ApiError` (``auth_failed``), :class:`SessionEndedError`,
    :class:`TransportError`.
    """
    body = {"password": password, "code": "".join(code.split())}
    await call(base_url, "POST", "/reauth", token, json=body)


async def change_password(base_url: str, token: str, new_password: str) -> None:
    """Set a new password (``POST /me/password``); the user's other sessions end.

    Lifts a ``password_expired`` restriction of this session. Raises
    :class:`ApiError` (``reauth_required``, ``password_reused``, a
    ``password_*`` policy code), :class:`SessionEndedError`, :class:`TransportError`.
    """
    await call(base_url, "POST", "/me/password", token, json={"new_password": new_password})


async def directory(base_url: str, token: str, ids: list[str]) -> dict[str, Person]:
    """Display names of ``ids`` (``POST /directory``): only those the caller may see.

    Ids the caller may not see (or unknown ones) are absent from the answer.
    Raises :class:`SessionEndedError`, :class:`ApiError`, :class:`TransportError`.
    """
    body = await call(base_url, "POST", "/directory", token, json={"ids": ids})
    people = body.get("people")
    if not isinstance(people, dict):
        raise TransportError("unexpected answer from /directory (not medhub?)")
    return {
        uid: Person(
            uid, str(p.get("name") or uid), str(p.get("role") or ""), str(p.get("org") or "")
        )
        for uid, p in people.items()
        if isinstance(p, dict)
    }


#: Ids per directory request (the server takes at most 256).
DIRECTORY_BATCH = 100


async def directory_all(base_url: str, token: str, ids: Iterable[str]) -> dict[str, Person]:
    """:func:`directory` for any number of ids, :data:`DIRECTORY_BATCH` per request.

    Raises what :func:`directory` raises.
    """
    wanted = sorted(set(ids))
    found: dict[str, Person] = {}
    for start in range(0, len(wanted), DIRECTORY_BATCH):
        found.update(await directory(base_url, token, wanted[start : start + DIRECTORY_BATCH]))
    return found


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
