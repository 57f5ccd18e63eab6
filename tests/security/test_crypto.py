"""AES-GCM envelopes: round trip, AAD binding, tampering, key rotation."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.security.crypto import CryptoError, Keyring, aad, decode_key

K1, K2 = os.urandom(32), os.urandom(32)
AAD = aad("users", "totp_secret", "u-1")


@given(st.binary(max_size=512))
def test_round_trip(data: bytes) -> None:
    ring = Keyring({"k1": K1}, "k1")
    env = ring.seal(data, AAD)
    assert env.startswith(b"v1:k1:")
    assert ring.open(env, AAD) == data


def test_bound_to_row_and_column() -> None:
    ring = Keyring({"k1": K1}, "k1")
    env = ring.seal(b"secret", AAD)
    with pytest.raises(CryptoError):
        ring.open(env, aad("users", "totp_secret", "u-2"))
    with pytest.raises(CryptoError):
        ring.open(env, aad("users", "totp_pending", "u-1"))


def test_tampering_is_detected() -> None:
    ring = Keyring({"k1": K1}, "k1")
    env = bytearray(ring.seal(b"secret", AAD))
    env[-1] ^= 1
    with pytest.raises(CryptoError):
        ring.open(bytes(env), AAD)
    for bad in (b"", b"v2:k1:xxxx", b"v1:nokey", b"v1::" + bytes(40), b"v1:k1:short"):
        with pytest.raises(CryptoError):
            ring.open(bad, AAD)


def test_rotation() -> None:
    old = Keyring({"k1": K1}, "k1")
    env = old.seal(b"secret", AAD)
    new = Keyring({"k1": K1, "k2": K2}, "k2")
    assert new.needs_rotation(env)
    resealed = new.reseal(env, AAD)
    assert new.key_id_of(resealed) == "k2"
    assert not new.needs_rotation(resealed)
    assert new.open(resealed, AAD) == b"secret"
    with pytest.raises(CryptoError):
        Keyring({"k2": K2}, "k2").open(env, AAD)  # retired key no longer held


def test_bad_keys() -> None:
    with pytest.raises(CryptoError):
        Keyring({"k1": b"short"}, "k1")
    with pytest.raises(CryptoError):
        Keyring({"k1": K1}, "k2")
    with pytest.raises(CryptoError):
        Keyring({"bad:id": K1}, "bad:id")
    with pytest.raises(CryptoError):
        decode_key("not base64!")
