"""Ids of stored rows."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    """A fresh pseudonymous id: ``prefix`` + ``-`` + 80 random bits in hex (20 digits).

    Every table keyed by such ids (accounts, EEG, records) uses this one shape,
    which the REST schemas' id pattern accepts.
    """
    return f"{prefix}-{secrets.token_hex(10)}"
