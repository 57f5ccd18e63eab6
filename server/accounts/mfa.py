"""TOTP secrets at rest and the enrolment data shown to their owner.

Secrets are AES-GCM envelopes (``v1:<key id>:<nonce><ciphertext>``) under the
TOTP keyring, the AAD binding each to ``users.<column>.<user id>`` (column
``totp_secret`` or ``totp_pending``), so an envelope moved to another row or
column fails to open (:class:`server.security.crypto.CryptoError`). The
enrolment data (``otpauth://`` URI and its QR code) name the organisation as
issuer (``medhub (<org name>)``) and the person's email as account, so an
authenticator app lists who and where, never an id.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.accounts import totp
from server.accounts.store import AccountStore, User
from server.security.crypto import Keyring, aad


@dataclass(frozen=True, slots=True)
class Enrolment:
    """TOTP enrolment data shown once: the secret's URI and its QR code."""

    otpauth_uri: str
    qr_svg: str


class TotpVault:
    """Seals and opens TOTP secrets; builds enrolment data (reads the org's name)."""

    def __init__(self, keyring: Keyring, store: AccountStore) -> None:
        self.keyring = keyring
        self.store = store

    def seal(self, user_id: str, secret: str, column: str = "totp_secret") -> bytes:
        """The secret sealed for ``users.<column>`` of ``user_id``."""
        return self.keyring.seal(secret.encode(), aad("users", column, user_id))

    def open(self, user_id: str, envelope: bytes, column: str = "totp_secret") -> str:
        """The clear secret; raises :class:`server.security.crypto.CryptoError`."""
        return self.keyring.open(envelope, aad("users", column, user_id)).decode()

    def pending(self, user: User) -> tuple[str, dict[str, object]]:
        """The user's pending secret, and the column values to store when it is new.

        An existing pending secret is kept until confirmed, so a person who
        scanned the code and closed the page finds the same one again.
        """
        if user.totp_pending is not None:
            return self.open(user.id, user.totp_pending, "totp_pending"), {}
        secret = totp.new_secret()
        return secret, {"totp_pending": self.seal(user.id, secret, "totp_pending")}

    async def enrolment(self, user: User, secret: str) -> Enrolment:
        """The URI and QR code for ``secret``: issuer ``medhub (<org>)``, account the email."""
        org = await self.store.get_org(user.org_id)
        issuer = totp.issuer_for(org.name if org is not None else "")
        uri = totp.provisioning_uri(secret, user.email, issuer)
        return Enrolment(uri, totp.qr_svg(uri))
