"""TOTP (RFC 6238: SHA-1, 30 s steps, 6 digits, one step of tolerance) and recovery codes.

This module is pure (no I/O): :func:`match_step` says which time step a code
belongs to, and only if that step is later than the last accepted one. The
store then records the step with a conditional ``UPDATE ... WHERE
totp_last_step < :step``, so of two nodes (or two requests) presenting the
same code, exactly one succeeds (see :meth:`AccountStore.accept_totp_step`).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import secrets

import pyotp
import segno

INTERVAL_S = 30  #: seconds per TOTP step (RFC 6238)
DIGITS = 6  #: digits per code
TOLERANCE_STEPS = 1  #: steps accepted either side of now: a code is valid for +-30 s
RECOVERY_CODES = 10  #: single-use recovery codes given at enrolment
ISSUER = "medhub"


def new_secret() -> str:
    """A fresh base32 secret of 160 bits (RFC 4226 recommends at least 128)."""
    return pyotp.random_base32(32)


def issuer_for(org_name: str) -> str:
    """The issuer an authenticator app shows: ``medhub (<organisation>)``.

    A colon separates issuer and account in the URI's label, so it is
    replaced; so are control characters.
    """
    clean = "".join(" " if ch == ":" or not ch.isprintable() else ch for ch in org_name)
    clean = " ".join(clean.split())
    return f"{ISSUER} ({clean})" if clean else ISSUER


def provisioning_uri(secret: str, account: str, issuer: str = ISSUER) -> str:
    """The ``otpauth://`` URI authenticator apps import.

    ``account`` is what the app lists under ``issuer``: the person's email
    (:func:`issuer_for` gives the organisation's issuer). The URI holds the
    secret: show it to its owner only, never log it.
    """
    label = account.replace(":", " ")
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL_S).provisioning_uri(
        name=label, issuer_name=issuer
    )


def qr_svg(uri: str) -> str:
    """The URI as an SVG QR code (inline, no external resources)."""
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", scale=4, xmldecl=False)
    return out.getvalue().decode()


def step_at(now: float) -> int:
    """The RFC 6238 time step containing ``now`` (seconds since the epoch)."""
    return int(now // INTERVAL_S)


def code_at(secret: str, step: int) -> str:
    """The code of ``step`` (for tests and the enrolment check)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL_S).generate_otp(step)


def match_step(secret: str, code: str, now: float, last_step: int) -> int | None:
    """The step (now +- 1) whose code is ``code`` and that is after ``last_step``, else None.

    Compared in constant time; a code of a step already accepted (replay) or
    outside the tolerance (expired) gives None.
    """
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    current = step_at(now)
    found: int | None = None
    for step in range(current - TOLERANCE_STEPS, current + TOLERANCE_STEPS + 1):
        if hmac.compare_digest(code_at(secret, step), code) and step > last_step:
            found = step
    return found


def new_recovery_codes(n: int = RECOVERY_CODES) -> list[str]:
    """``n`` single-use codes, ``xxxxx-xxxxx`` of base32 (50 bits each)."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    codes = []
    for _ in range(n):
        raw = "".join(secrets.choice(alphabet) for _ in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def recovery_hash(code: str) -> bytes:
    """SHA-256 of a normalised recovery code (codes are random: no stretching needed)."""
    return hashlib.sha256(code.strip().lower().replace(" ", "").encode()).digest()
