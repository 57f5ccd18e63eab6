"""The at-rest keys of a process, built in one place from Settings.

* :func:`settings_keyring` - the AES-GCM :class:`~server.security.crypto.Keyring`
  of ``secret_at_rest_key`` (key id ``at_rest_key_id``) plus the retired keys of
  ``secret_at_rest_retired_keys`` (built by :mod:`server.security.keys`), used by
  chat (message texts) and accounts (users' name, email, phone, version snapshots).
  It seals with the current key and opens values sealed under a retired one.
* :func:`at_rest_keyring` - the same from one key under id :data:`AT_REST_KEY_ID`
  (migration 0004, which runs before any rotation).
* :class:`BlindIndex` - HMAC-SHA256 under a key derived from an at-rest key
  with HKDF-SHA256 and a distinct ``info`` label, so equality lookups
  (login by email, uniqueness) work on encrypted columns without the clear
  value. The index key is never the encryption key. :func:`settings_blind_index`
  derives it from :func:`index_key`, the at-rest key named ``at_rest_index_key_id``
  (current or retired; the accounts CSRF key is derived from it too), so rotating
  the at-rest key changes no index and no CSRF token.
* :func:`normalise_email` - the form of an email that is indexed: NFKC,
  case-folded, surrounding whitespace stripped.

Raises :class:`~server.security.crypto.CryptoError` for a malformed key.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from server.security.crypto import KEY_BYTES, CryptoError, Keyring, decode_key
from server.security.keys import aead_keyring, ring_keys

if TYPE_CHECKING:
    from server.config import Settings

#: Default key id of ``secret_at_rest_key`` (the setting ``at_rest_key_id``).
AT_REST_KEY_ID = "r1"
#: HKDF ``info`` of the email blind-index key (change it and every index changes).
EMAIL_INDEX_INFO = b"medhub|blind-index|users.email|v1"


def at_rest_keyring(secret_at_rest_key: str) -> Keyring:
    """The keyring sealing sensitive columns under ``secret_at_rest_key`` (base64)."""
    return Keyring({AT_REST_KEY_ID: decode_key(secret_at_rest_key)}, AT_REST_KEY_ID)


def settings_keyring(settings: Settings) -> Keyring:
    """Current + retired at-rest keys; raises :class:`CryptoError` for a malformed key."""
    return aead_keyring(settings, "at_rest")


def index_key(settings: Settings) -> bytes:
    """The at-rest key named ``at_rest_index_key_id`` (current or retired).

    Keys derived from it (the email blind index, the CSRF key) outlive a
    rotation of the at-rest key. Raises :class:`CryptoError` when that id names
    no configured at-rest key.
    """
    _, keys = ring_keys(settings, "at_rest")
    key = keys.get(settings.at_rest_index_key_id)
    if key is None:
        raise CryptoError("at_rest_index_key_id names no at-rest key (current or retired)")
    return key


def settings_blind_index(settings: Settings) -> BlindIndex:
    """The email index keyed from :func:`index_key`; raises :class:`CryptoError`."""
    return BlindIndex(index_key(settings))


def normalise_email(email: str) -> str:
    """NFKC, case-folded, stripped: ``" Ada@Example.ORG "`` -> ``"ada@example.org"``."""
    return unicodedata.normalize("NFKC", email).casefold().strip()


class BlindIndex:
    """HMAC-SHA256 lookups on an encrypted column, keyed by HKDF(at-rest key, ``info``)."""

    def __init__(self, secret_at_rest_key: str | bytes, info: bytes = EMAIL_INDEX_INFO) -> None:
        """``secret_at_rest_key``: base64 text, or the raw 32-byte key."""
        raw = secret_at_rest_key
        key = decode_key(raw) if isinstance(raw, str) else raw
        if len(key) != KEY_BYTES:
            raise CryptoError("key must be 32 bytes")
        hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info)
        self._key = hkdf.derive(key)

    def __call__(self, value: str) -> bytes:
        """The 32-byte index of an already normalised ``value``."""
        return hmac.new(self._key, value.encode(), hashlib.sha256).digest()

    def email(self, email: str) -> bytes:
        """The index of an email (normalised first)."""
        return self(normalise_email(email))
