"""What ``medhub-chat`` prints: local times, and the server's error codes in words.

Every refusal a user can meet is one sentence that says what happened and what
to do; :func:`explain` turns any SDK error into that sentence and the exit status.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime

from clients.errors import (
    ApiError,
    HubError,
    MedhubError,
    SessionEndedError,
    SignInError,
    TransportError,
    UnconfirmedError,
)

# exit statuses (docs/clients.md)
OK, REFUSED, USAGE, NO_CONNECTION = 0, 1, 2, 3


class Refused(Exception):
    """A command's own one-line refusal (``status``: exit status, default 1)."""

    def __init__(self, line: str, status: int = REFUSED) -> None:
        super().__init__(line)
        self.line, self.status = line, status


@contextlib.contextmanager
def refusals(**lines: str) -> Iterator[None]:
    """Turn the server's refusal codes named here (hub or REST) into these sentences."""
    try:
        yield
    except (HubError, ApiError) as exc:
        if exc.code in lines:
            raise Refused(lines[exc.code]) from exc
        raise


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """``rows`` under ``headers``, in columns aligned with two spaces between them."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *rows)
    ]


# -- times ------------------------------------------------------------------------------
def to_datetime(value: float) -> datetime:
    """A local datetime from unix seconds, milliseconds or microseconds (told by magnitude).

    The API gives seconds (``expires_at``), the hub milliseconds (``at``) and
    the accounts tables microseconds (``expires_at_us``); dates after 1973 are
    read right whichever unit is used.
    """
    seconds = float(value)
    if seconds > 1e14:
        seconds /= 1e6
    elif seconds > 1e11:
        seconds /= 1e3
    return datetime.fromtimestamp(seconds)


def stamp(value: float) -> str:
    """``2026-12-01 10:42`` in local time."""
    return to_datetime(value).strftime("%Y-%m-%d %H:%M")


def short_stamp(value: float, now: datetime | None = None) -> str:
    """``10:42`` when it is today (local time), else ``2026-12-01 10:42``."""
    when = to_datetime(value)
    today = (now or datetime.now()).date()
    return when.strftime("%H:%M") if when.date() == today else when.strftime("%Y-%m-%d %H:%M")


# -- the server's codes, in words ----------------------------------------------------------
ADMIN_HINT = "ask your administrator"

SIGN_IN = {
    "auth_failed": (
        "wrong email or password, or the account is locked, disabled or not enrolled yet: "
        f"check them and try again, or {ADMIN_HINT}"
    ),
    "mfa_failed": (
        "the code was not accepted (wrong, already used or too old): type the current code "
        "of your authenticator app, or one of your recovery codes"
    ),
    "challenge_invalid": "the sign-in took too long and expired: start again",
    "invitation_invalid": (
        "this invitation code is not valid (mistyped, already used or expired): "
        f"{ADMIN_HINT} to invite you again (`medhub-chat admin reinvite`)"
    ),
    "enrolment_required": (
        "an administrator reset your authenticator app: run `medhub-chat login` to add your "
        "account to an app again"
    ),
    "password_too_short": "that password is too short: use at least 12 characters",
    "password_too_long": "that password is too long: use at most 128 characters",
    "password_too_simple": (
        "that password is too simple: mix lower case, upper case, digits and symbols"
    ),
    "password_common": "that password is too common and easy to guess: choose another",
    "password_contains_context": (
        "that password contains your name, your email or the product name: choose another"
    ),
    "password_reused": "the new password must differ from the current one",
}

GENERAL = {
    "forbidden": f"you are not allowed to do that ({ADMIN_HINT} if you should be)",
    "not_found": "not found, or not visible to you: check the id",
    "conflict": "that already exists (for an invitation: the email is already used)",
    "reauth_required": (
        "this change needs a recent sign-in: run `medhub-chat login` and try again within 5 minutes"
    ),
    "bad_request": "the server refused the request as malformed: check the values you gave",
    "too_large": "that is too long for the server (a message holds at most 4000 characters)",
    "unavailable": "the server is busy or one of its services is down: try again in a moment",
    "timeout": "the server could not answer in time; the outcome is unknown: check, then retry",
    "internal": f"the server failed (internal error): try again, and {ADMIN_HINT} if it persists",
    "method_not_allowed": "this server does not offer that (an older medhub?)",
    "payload_too_large": "that is too large for the server",
    "csrf_failed": "the server refused the request (CSRF): sign in again",
    "origin_refused": "the server refused the request's origin",
}


def sentence(code: str) -> str:
    """The user's sentence for a stable error code (the code itself when unknown)."""
    return SIGN_IN.get(code) or GENERAL.get(code) or f"refused by the server ({code})"


def detail(exc: BaseException) -> str:
    """The innermost SDK error's message (what actually failed), on one line."""
    while isinstance(exc.__cause__, MedhubError):
        exc = exc.__cause__
    return " ".join(str(exc).split()) or type(exc).__name__


def explain(
    exc: MedhubError, server: str, conv: str | None = None, login: str = "medhub-chat login"
) -> tuple[str, int]:
    """The one line to print for ``exc``, and the exit status.

    ``login`` is how the user signs in again (with their ``--profile``).
    """
    if isinstance(exc, SessionEndedError):
        if exc.code == "password_expired":
            return (
                "your password has expired: change it (ask your administrator), "
                f"then run `{login}`",
                REFUSED,
            )
        if exc.code == "no_session":
            return f"not signed in: run `{login}` first", REFUSED
        return (
            "your session has ended (signed out, expired, revoked or account disabled): "
            f"run `{login}`",
            REFUSED,
        )
    if isinstance(exc, UnconfirmedError):
        again = f"medhub-chat send --id {exc.client_msg_id} {conv or 'CONV'} ..."
        return f"message not confirmed (no connection); send it again with `{again}`", 3
    if isinstance(exc, TransportError):
        return (
            f"no connection to the server at {server} ({detail(exc)}); "
            "check --server, or try again later",
            NO_CONNECTION,
        )
    if isinstance(exc, HubError | ApiError | SignInError):
        line = sentence(exc.code)
        if exc.code == "rate_limited":
            after = getattr(exc, "retry_after_s", None)
            line = "too many requests right now: " + (
                f"wait {after:g} s and try again" if after else "wait a little and try again"
            )
        return line, (NO_CONNECTION if exc.retryable and exc.code != "rate_limited" else REFUSED)
    return detail(exc), REFUSED
