"""Per-record data keys and what they seal: metadata, report texts, snapshots, content chunks.

Envelope encryption: each record gets a random 256-bit data key; the key is
stored only wrapped (an AES-GCM envelope, :class:`server.security.crypto.Keyring`)
by the at-rest master keyring, whose key id the envelope names, with the AAD
``record_keys.wrapped.<record id>``. Rotating the master key re-wraps the data
keys (``medhub keys rotate``); nothing sealed by a data key changes.

A data key seals:

* values (a msgpack map) as envelopes bound to ``<table>.<column>.<row>``
  (:meth:`RecordCipher.seal` / :meth:`RecordCipher.open`);
* content chunks: ``nonce (12) + AES-GCM(chunk)`` with the AAD
  ``medhub|blob|<blob id>|<seq>|<last>``, so a chunk moved to another blob or
  place, a reordered chunk, or a content cut short (its last chunk missing)
  fails to open.

Errors: :class:`server.security.crypto.CryptoError` for anything that does
not open (tampered, moved, unknown master key id).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from server.security.crypto import KEY_BYTES, NONCE_BYTES, CryptoError, Keyring, aad

#: The key id a data key's envelopes carry (the record id names the key itself).
DATA_KEY_ID = "dk"


def _wrap_aad(record_id: str) -> bytes:
    return aad("record_keys", "wrapped", record_id)


class RecordCipher:
    """Seals and opens the values and content chunks of one record."""

    def __init__(self, record_id: str, data_key: bytes) -> None:
        if len(data_key) != KEY_BYTES:
            raise CryptoError("a data key must be 32 bytes")
        self.record_id = record_id
        self._ring = Keyring({DATA_KEY_ID: data_key}, DATA_KEY_ID)
        self._aead = AESGCM(data_key)

    def seal(self, table: str, column: str, row: str, value: Mapping[str, Any]) -> bytes:
        """``value`` (a map of msgpack-able values) sealed for ``table.column`` of ``row``."""
        return self._ring.seal(msgpack.packb(dict(value)), aad(table, column, row))

    def open(self, table: str, column: str, row: str, envelope: bytes) -> dict[str, Any]:
        """The map sealed by :meth:`seal`; raises :class:`CryptoError`."""
        data = msgpack.unpackb(self._ring.open(envelope, aad(table, column, row)))
        if not isinstance(data, dict):
            raise CryptoError("sealed value is not a map")
        return data

    def seal_chunk(self, blob_id: str, seq: int, last: bool, chunk: bytes) -> bytes:
        """One content chunk sealed at place ``seq`` of ``blob_id`` (``last``: its final one)."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, chunk, _chunk_aad(blob_id, seq, last))

    def open_chunk(self, blob_id: str, seq: int, last: bool, sealed: bytes) -> bytes:
        """The clear chunk; raises :class:`CryptoError` if altered, moved or cut."""
        if len(sealed) < NONCE_BYTES + 16:
            raise CryptoError("sealed chunk too short")
        try:
            return self._aead.decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _chunk_aad(blob_id, seq, last)
            )
        except InvalidTag as exc:
            raise CryptoError("content chunk does not authenticate") from exc


def _chunk_aad(blob_id: str, seq: int, last: bool) -> bytes:
    return f"medhub|blob|{blob_id}|{seq}|{int(last)}".encode()


class RecordKeys:
    """Makes, unwraps and re-wraps records' data keys with the master ``keyring``."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    @property
    def current_id(self) -> str:
        """The id of the master key new data keys are wrapped with."""
        return self.keyring.current

    def new(self, record_id: str) -> tuple[RecordCipher, bytes]:
        """A fresh data key for ``record_id``: its cipher and its wrapped form (to store)."""
        key = os.urandom(KEY_BYTES)
        return RecordCipher(record_id, key), self.keyring.seal(key, _wrap_aad(record_id))

    def cipher(self, record_id: str, wrapped: bytes) -> RecordCipher:
        """The cipher of a stored data key; raises :class:`CryptoError`."""
        return RecordCipher(record_id, self.keyring.open(wrapped, _wrap_aad(record_id)))

    def rewrap(self, record_id: str, wrapped: bytes) -> bytes | None:
        """``wrapped`` re-wrapped under the current master key, or None when it already is.

        Raises :class:`CryptoError` when it does not open (unknown or retired-and-dropped
        key id, tampering).
        """
        if not self.keyring.needs_rotation(wrapped):
            return None
        return self.keyring.reseal(wrapped, _wrap_aad(record_id))
