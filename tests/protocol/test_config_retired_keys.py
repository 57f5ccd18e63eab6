"""server/config.py: retired keys (``secret_*_retired_keys``) parsed, validated, redacted."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from server.config import RETIRED_KEY_FIELDS, ConfigError, ensure_secrets, load_settings, redacted
from server.security.keys import ring_keys

KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(32, 64))).decode()
SHORT = base64.b64encode(bytes(16)).decode()


def test_defaults() -> None:
    s = load_settings(environ={})
    assert (s.at_rest_key_id, s.at_rest_index_key_id) == ("r1", "r1")
    assert all(getattr(s, name) == [] for name in RETIRED_KEY_FIELDS)


def test_environment_lists_are_comma_separated() -> None:
    s = load_settings(
        environ={
            "MEDHUB_AUDIT_KEY_ID": "k3",
            "MEDHUB_SECRET_AUDIT_KEY": KEY_A,
            "MEDHUB_SECRET_AUDIT_RETIRED_KEYS": f"k1:{KEY_A}, k2:{KEY_B}",
        }
    )
    assert s.secret_audit_retired_keys == [f"k1:{KEY_A}", f"k2:{KEY_B}"]
    current, keys = ring_keys(s, "audit")
    assert current == "k3"
    assert keys == {"k3": bytes(range(32)), "k1": bytes(range(32)), "k2": bytes(range(32, 64))}


def test_toml_list(tmp_path: Path) -> None:
    path = tmp_path / "medhub.toml"
    path.write_text(
        f'totp_key_id = "t2"\nsecret_totp_retired_keys = ["t1:{KEY_A}"]\n', encoding="utf-8"
    )
    s = load_settings(environ={}, config_file=path)
    assert s.secret_totp_retired_keys == [f"t1:{KEY_A}"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (KEY_A, "must be <key_id>:<base64"),
        (f"bad id:{KEY_A}", "must be <key_id>:<base64"),
        ("k1:not base64!", "not valid base64"),
        (f"k1:{SHORT}", "32 bytes"),
    ],
)
def test_malformed_entries_are_refused_without_showing_the_key(entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(environ={"MEDHUB_SECRET_AT_REST_RETIRED_KEYS": entry})
    assert "secret_at_rest_retired_keys entry 1" in str(info.value)
    for secret in (KEY_A, SHORT, "not base64!"):
        assert secret not in str(info.value)


@pytest.mark.parametrize(
    ("field", "id_field", "current"),
    [
        ("secret_audit_retired_keys", "audit_key_id", "k1"),
        ("secret_at_rest_retired_keys", "at_rest_key_id", "r1"),
        ("secret_totp_retired_keys", "totp_key_id", "t1"),
    ],
)
def test_retired_id_equal_to_the_current_id_is_refused(
    field: str, id_field: str, current: str
) -> None:
    with pytest.raises(ConfigError, match=f"retired key id {current} is the current key id"):
        load_settings(environ={}, overrides={field: [f"{current}:{KEY_A}"]})
    with pytest.raises(ConfigError, match="listed twice"):
        load_settings(environ={}, overrides={id_field: "x9", field: [f"a:{KEY_A}", f"a:{KEY_B}"]})


def test_the_email_index_key_must_stay_configured() -> None:
    rotated = {"at_rest_key_id": "r2", "secret_at_rest_key": KEY_B}
    with pytest.raises(ConfigError, match="at_rest_index_key_id 'r1' names no at-rest key"):
        load_settings(environ={}, overrides=rotated)
    s = load_settings(
        environ={}, overrides={**rotated, "secret_at_rest_retired_keys": [f"r1:{KEY_A}"]}
    )
    assert s.at_rest_index_key_id == "r1"
    s = load_settings(environ={}, overrides={**rotated, "at_rest_index_key_id": "r2"})
    assert s.at_rest_index_key_id == "r2"


def test_retired_keys_are_redacted_and_never_generated(tmp_path: Path) -> None:
    s = load_settings(
        environ={
            "MEDHUB_DATA_DIR": str(tmp_path),
            "MEDHUB_AUDIT_KEY_ID": "k2",
            "MEDHUB_SECRET_AUDIT_RETIRED_KEYS": f"k1:{KEY_A}",
        }
    )
    out = redacted(s)
    assert KEY_A not in repr(out)
    assert out["secret_audit_retired_keys"] == ["k1:<redacted>"]
    assert out["secret_totp_retired_keys"] == []
    filled = ensure_secrets(s)
    assert filled.secret_audit_retired_keys == [f"k1:{KEY_A}"]
    assert filled.secret_totp_retired_keys == []
    assert "retired" not in (tmp_path / "secrets").read_text()
