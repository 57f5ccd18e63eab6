"""The audit HMAC key(s) from the settings.

The current key is ``settings.secret_audit_key`` (base64 of 32 bytes) under the
id ``settings.audit_key_id``; every entry stores the id of the key that tagged
it, so verification takes a keyring ``{key_id: key}``: the current key plus the
retired ones of ``settings.secret_audit_retired_keys`` (built by
:mod:`server.security.keys`). Rotating keys: give the new key a new id and move
the old one to the retired list; new entries are tagged with the current key only.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from server.security.crypto import CryptoError
from server.security.keys import ring_keys

if TYPE_CHECKING:
    from server.config import Settings

KEY_BYTES = 32


class AuditKeyError(ValueError):
    """The audit key is missing or is not base64 of 32 bytes (never shows the key)."""


def decode_key(b64: str) -> bytes:
    """The raw key; raises :class:`AuditKeyError` if empty, not base64, or not 32 bytes."""
    if not b64:
        raise AuditKeyError("secret_audit_key is empty (call ensure_secrets or set it)")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AuditKeyError("secret_audit_key is not valid base64") from exc
    if len(raw) != KEY_BYTES:
        raise AuditKeyError(f"secret_audit_key must decode to {KEY_BYTES} bytes")
    return raw


def current_key(settings: Settings) -> tuple[str, bytes]:
    """``(key_id, key)`` used to tag new entries; raises :class:`AuditKeyError`."""
    return settings.audit_key_id, decode_key(settings.secret_audit_key)


def keyring(settings: Settings) -> dict[str, bytes]:
    """``{key_id: key}`` (current + retired) for verification; raises :class:`AuditKeyError`."""
    current_key(settings)  # its errors name the current key's problem
    try:
        return ring_keys(settings, "audit")[1]
    except CryptoError as exc:
        raise AuditKeyError(str(exc)) from None
