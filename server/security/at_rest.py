"""The at-rest keys of a process, built in one place from Settings.

* :func:`at_rest_keyring` - the AES-GCM :class:`~server.security.crypto.Keyring`
  of ``secret_at_rest_key`` (key id :data:`AT_REST_KEY_ID`), used by chat
  (message texts) and accounts (users' name, email, phone, version snapshots).
* :class:`BlindIndex` - HMAC-SHA256 under a key derived from the at-rest key
  with HKDF-SHA256 and a distinct ``info`` label, so equality lookups
  (login by email, uniqueness) work on encrypted columns without the clear
  value. The index key is never the encryption key.
* :func:`normalise_email` - the form of an email that is indexed: NFKC,
  case-folded, surrounding whitespace stripped.

Raises :class:`~server.security.crypto.CryptoError` for a malformed key.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from server.security.crypto import KEY_BYTES, Keyring, decode_key

#: Key id of ``secret_at_rest_key`` in envelopes (until a setting names it).
AT_REST_KEY_ID = "r1"
#: HKDF ``info`` of the email blind-index key (change it and every index changes).
EMAIL_INDEX_INFO = b"medhub|blind-index|users.email|v1"


def at_rest_keyring(secret_at_rest_key: str) -> Keyring:
    """The keyring sealing sensitive columns under ``secret_at_rest_key`` (base64)."""
    return Keyring({AT_REST_KEY_ID: decode_key(secret_at_rest_key)}, AT_REST_KEY_ID)


def normalise_email(email: str) -> str:
    """NFKC, case-folded, stripped: ``" Ada@Example.ORG "`` -> ``"ada@example.org"``."""
    return unicodedata.normalize("NFKC", email).casefold().strip()


class BlindIndex:
    """HMAC-SHA256 lookups on an encrypted column, keyed by HKDF(at-rest key, ``info``)."""

    def __init__(self, secret_at_rest_key: str, info: bytes = EMAIL_INDEX_INFO) -> None:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info)
        self._key = hkdf.derive(decode_key(secret_at_rest_key))

    def __call__(self, value: str) -> bytes:
        """The 32-byte index of an already normalised ``value``."""
        return hmac.new(self._key, value.encode(), hashlib.sha256).digest()

    def email(self, email: str) -> bytes:
        """The index of an email (normalised first)."""
        return self(normalise_email(email))
