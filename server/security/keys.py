"""The three keyrings of a process (audit, at-rest, TOTP), built in one place.

Each keyring is the current key of a setting plus the retired keys listed
beside it, so values written under an older key stay readable after a
rotation. Writes always use the current key id; retired keys only verify
(audit) or open (at-rest, TOTP).

* audit: ``audit_key_id``, ``secret_audit_key``, ``secret_audit_retired_keys``
  (HMAC keys of the audit chain);
* at_rest: ``at_rest_key_id``, ``secret_at_rest_key``, ``secret_at_rest_retired_keys``
  (AES-GCM, chat texts and users' identity data);
* totp: ``totp_key_id``, ``secret_totp_key``, ``secret_totp_retired_keys``
  (AES-GCM, TOTP secrets).

A retired entry is ``"<key_id>:<base64 of 32 bytes>"``. Errors are
:class:`~server.security.crypto.CryptoError` and never show a key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from server.security.crypto import KEY_ID_PATTERN, CryptoError, Keyring, decode_key

Ring = Literal["audit", "at_rest", "totp"]

#: keyring -> (current key id field, current key field, retired keys field).
FIELDS: dict[Ring, tuple[str, str, str]] = {
    "audit": ("audit_key_id", "secret_audit_key", "secret_audit_retired_keys"),
    "at_rest": ("at_rest_key_id", "secret_at_rest_key", "secret_at_rest_retired_keys"),
    "totp": ("totp_key_id", "secret_totp_key", "secret_totp_retired_keys"),
}


def parse_retired(entries: Sequence[str], current_id: str, setting: str) -> dict[str, bytes]:
    """``{key_id: key}`` of ``"<key_id>:<base64>"`` entries of the setting ``setting``.

    Raises :class:`CryptoError` (naming the setting and the entry's position,
    never the key) for a malformed entry, a key id repeated, or a retired id
    equal to ``current_id``.
    """
    out: dict[str, bytes] = {}
    for n, entry in enumerate(entries, 1):
        key_id, sep, b64 = entry.partition(":")
        where = f"{setting} entry {n}"
        if not sep or not KEY_ID_PATTERN.fullmatch(key_id):
            raise CryptoError(
                f"{where} must be <key_id>:<base64 32 bytes> (id: 1-32 of A-Za-z0-9_-)"
            )
        try:
            key = decode_key(b64)
        except CryptoError as exc:
            raise CryptoError(f"{where} (id {key_id}): {exc}") from None
        if key_id == current_id:
            raise CryptoError(f"{where}: retired key id {key_id} is the current key id")
        if key_id in out:
            raise CryptoError(f"{where}: key id {key_id} is listed twice")
        out[key_id] = key
    return out


def ring_keys(settings: object, ring: Ring) -> tuple[str, dict[str, bytes]]:
    """``(current key id, {key_id: key})`` of ``ring``: the current key first, then retired.

    ``settings`` is any object with the fields named in :data:`FIELDS` (the
    process's ``server.config.Settings``; this module does not import the
    configuration, which imports it). It must hold the secrets
    (``ensure_secrets``). Raises
    :class:`CryptoError` for a missing or malformed key.
    """
    id_field, key_field, retired_field = FIELDS[ring]
    current_id: str = getattr(settings, id_field)
    current = getattr(settings, key_field)
    if not current:
        raise CryptoError(f"{key_field} is empty (call ensure_secrets or set it)")
    try:
        keys = {current_id: decode_key(current)}
    except CryptoError as exc:
        raise CryptoError(f"{key_field}: {exc}") from None
    keys.update(parse_retired(getattr(settings, retired_field), current_id, retired_field))
    return current_id, keys


def aead_keyring(settings: object, ring: Literal["at_rest", "totp"]) -> Keyring:
    """The AES-GCM :class:`Keyring` of ``ring``: seals with the current key, opens with all."""
    current_id, keys = ring_keys(settings, ring)
    return Keyring(keys, current_id)
