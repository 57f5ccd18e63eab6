"""The audit HMAC key(s) from the settings.

The current key is ``settings.secret_audit_key`` (base64 of 32 bytes) under the
id ``settings.audit_key_id``; every entry stores the id of the key that tagged
it, so verification takes a keyring ``{key_id: key}``: the current key plus the
retired ones of ``settings.secret_audit_retired_keys`` (built by
:mod:`server.security.keys`). Rotating keys: give the new key a new id and move
the old one to the retired list; new entries are tagged with the current key only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.security.crypto import CryptoError
from server.security.keys import ring_keys

if TYPE_CHECKING:
    from server.config import Settings


class AuditKeyError(ValueError):
    """The audit key is missing or is not base64 of 32 bytes (never shows the key)."""


def keyring(settings: Settings) -> dict[str, bytes]:
    """``{key_id: key}`` (current + retired) for verification; raises :class:`AuditKeyError`."""
    try:
        return ring_keys(settings, "audit")[1]
    except CryptoError as exc:
        raise AuditKeyError(str(exc)) from None


def current_key(settings: Settings) -> tuple[str, bytes]:
    """``(key_id, key)`` used to tag new entries; raises :class:`AuditKeyError`."""
    return settings.audit_key_id, keyring(settings)[settings.audit_key_id]
