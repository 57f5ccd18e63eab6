"""AES-256-GCM envelopes for sensitive columns, with a key id beside each value.

An envelope is ``b"v1:" + key_id + b":" + nonce (12 bytes) + ciphertext+tag``.
The key id names the key that sealed the value, so keys rotate: a
:class:`Keyring` seals with its current key and opens with any key it holds;
:meth:`Keyring.needs_rotation` tells a caller to re-seal a value.

The additional authenticated data (:func:`aad`) binds a value to its table,
column and row, so a ciphertext copied into another row or column does not
open (``CryptoError``).

Errors: :class:`CryptoError` (a subclass of ``ValueError``) for a malformed
envelope, an unknown key id, a value that does not authenticate, or a bad key.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = b"v1:"
NONCE_BYTES = 12
KEY_BYTES = 32
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")


class CryptoError(ValueError):
    """An envelope could not be sealed or opened (the reason is not secret-bearing)."""


def aad(table: str, column: str, row_id: str) -> bytes:
    """The AAD binding a value to ``table.column`` of row ``row_id``."""
    return f"medhub|{table}|{column}|{row_id}".encode()


def decode_key(b64: str) -> bytes:
    """A 32-byte key from its base64 text; raises :class:`CryptoError` otherwise."""
    try:
        key = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CryptoError("key is not valid base64") from exc
    if len(key) != KEY_BYTES:
        raise CryptoError("key must be 32 bytes")
    return key


class Keyring:
    """AES-GCM keys by id; ``current`` seals, every key opens.

    Raises :class:`CryptoError` when ``current`` is not in ``keys``, a key id
    does not match :data:`KEY_ID_PATTERN`, or a key is not 32 bytes.
    """

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if current not in keys:
            raise CryptoError("the current key id is not in the keyring")
        for key_id, key in keys.items():
            if not KEY_ID_PATTERN.fullmatch(key_id):
                raise CryptoError("key ids are 1-32 letters, digits, _ or -")
            if len(key) != KEY_BYTES:
                raise CryptoError("keys must be 32 bytes")
        self._aead = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current = current

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        """Encrypt ``plaintext`` under the current key, bound to ``associated``."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead[self.current].encrypt(nonce, plaintext, associated)
        return VERSION + self.current.encode() + b":" + nonce + sealed

    def open(self, envelope: bytes, associated: bytes) -> bytes:
        """Decrypt an envelope sealed with ``associated``.

        Raises :class:`CryptoError` if it is malformed, sealed by an unknown key,
        tampered with, or bound to other AAD.
        """
        key_id, body = self._split(envelope)
        aead = self._aead.get(key_id)
        if aead is None:
            raise CryptoError("envelope sealed by an unknown key id")
        if len(body) < NONCE_BYTES + 16:
            raise CryptoError("envelope too short")
        try:
            return aead.decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], associated)
        except InvalidTag as exc:
            raise CryptoError("envelope does not authenticate") from exc

    def key_id_of(self, envelope: bytes) -> str:
        """The key id an envelope names; raises :class:`CryptoError` if malformed."""
        return self._split(envelope)[0]

    def needs_rotation(self, envelope: bytes) -> bool:
        """True when ``envelope`` was sealed by another key than the current one."""
        return self.key_id_of(envelope) != self.current

    def reseal(self, envelope: bytes, associated: bytes) -> bytes:
        """Open and seal again under the current key (key rotation)."""
        return self.seal(self.open(envelope, associated), associated)

    @staticmethod
    def _split(envelope: bytes) -> tuple[str, bytes]:
        if not envelope.startswith(VERSION):
            raise CryptoError("unknown envelope version")
        rest = envelope[len(VERSION) :]
        sep = rest.find(b":")
        if sep <= 0 or sep > 32:
            raise CryptoError("malformed envelope")
        try:
            key_id = rest[:sep].decode("ascii")
        except UnicodeDecodeError as exc:
            raise CryptoError("malformed envelope") from exc
        if not KEY_ID_PATTERN.fullmatch(key_id):
            raise CryptoError("malformed envelope")
        return key_id, rest[sep + 1 :]
