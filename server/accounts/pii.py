"""Users' identity data at rest: envelopes, the email blind index, version snapshots.

Name, email and phone are sealed with the at-rest keyring
(:func:`server.security.at_rest.at_rest_keyring`), the AAD binding each value
to ``users.<column>.<user id>``, so a ciphertext moved to another row or
column, or altered, fails to open (:class:`~server.security.crypto.CryptoError`).
Emails are found through :class:`~server.security.at_rest.BlindIndex`.

A version snapshot is the msgpack map of the changed fields, sealed with the
AAD ``user_versions.snapshot.<user id>:<version>``. Secret fields (password
hash, TOTP secrets) are recorded as changed (``True``), never copied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack

from server.security.at_rest import BlindIndex
from server.security.crypto import Keyring, aad

#: Clear attribute -> encrypted column of ``users``.
ENCRYPTED = {"name": "name_enc", "email": "email_enc", "phone": "phone_enc"}
#: Fields whose values never go into a snapshot (only the fact they changed).
SECRET_FIELDS = frozenset({"password_hash", "totp_secret", "totp_pending"})


class UserCipher:
    """Seals and opens users' identity columns and version snapshots."""

    def __init__(self, keyring: Keyring, index: BlindIndex) -> None:
        self.keyring = keyring
        self.index = index

    def email_index(self, email: str) -> bytes:
        """The blind index of an email (normalised)."""
        return self.index.email(email)

    def seal_columns(self, user_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` with name/email/phone replaced by their envelopes (+ ``email_index``)."""
        out: dict[str, Any] = {}
        for key, value in values.items():
            column = ENCRYPTED.get(key)
            if column is None:
                out[key] = value
                continue
            out[column] = self.keyring.seal(str(value).encode(), aad("users", column, user_id))
            if key == "email":
                out["email_index"] = self.email_index(str(value))
        return out

    def open_column(self, user_id: str, key: str, envelope: bytes) -> str:
        """The clear value of ``name``/``email``/``phone``; raises ``CryptoError``."""
        column = ENCRYPTED[key]
        return self.keyring.open(envelope, aad("users", column, user_id)).decode()

    def seal_snapshot(self, user_id: str, version: int, changed: Mapping[str, Any]) -> bytes:
        """The encrypted snapshot of ``changed`` fields (clear names -> values)."""
        data = {k: (True if k in SECRET_FIELDS else v) for k, v in changed.items()}
        return self.keyring.seal(msgpack.packb(data), _snapshot_aad(user_id, version))

    def open_snapshot(self, user_id: str, version: int, envelope: bytes) -> dict[str, Any]:
        """The snapshot's fields; raises ``CryptoError`` if altered or moved."""
        data = msgpack.unpackb(self.keyring.open(envelope, _snapshot_aad(user_id, version)))
        assert isinstance(data, dict)
        return data


def _snapshot_aad(user_id: str, version: int) -> bytes:
    return aad("user_versions", "snapshot", f"{user_id}:{version}")
