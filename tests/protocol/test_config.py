"""server/config.py: defaults < TOML file < MEDHUB_* environment; ranges; secrets."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from server.config import (
    FIELD_DOCS,
    SECRET_FIELDS,
    ConfigError,
    Settings,
    ensure_secrets,
    load_settings,
    redacted,
)

KEY_A = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "medhub.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_environment() -> None:
    s = load_settings(environ={})
    assert s == Settings()
    assert s.ws_handshake_timeout_s == 5.0
    assert s.allowed_origins == ["http://127.0.0.1:8000", "http://localhost:8000"]


def test_every_field_is_documented() -> None:
    import msgspec

    names = {f.name for f in msgspec.structs.fields(Settings)}
    assert names == set(FIELD_DOCS)


def test_env_overrides_with_type_coercion() -> None:
    s = load_settings(
        environ={
            "MEDHUB_PORT": "9000",
            "MEDHUB_WS_IDLE_TIMEOUT_S": "30.5",
            "MEDHUB_LOG_JSON": "false",
            "MEDHUB_HOST": "0.0.0.0",
            "MEDHUB_WS_RATE_BURST": "7",
            "MEDHUB_NOT_A_SETTING": "ignored",
            "PORT": "1",  # no prefix: not ours
        }
    )
    assert s.port == 9000
    assert isinstance(s.port, int)
    assert s.ws_idle_timeout_s == 30.5
    assert s.log_json is False
    assert s.host == "0.0.0.0"
    assert s.ws_rate_burst == 7


def test_env_lists_from_comma_strings() -> None:
    s = load_settings(
        environ={
            "MEDHUB_ALLOWED_ORIGINS": " https://a.example ,https://b.example,, ",
            "MEDHUB_TRUSTED_PROXIES": "10.0.0.1",
        }
    )
    assert s.allowed_origins == ["https://a.example", "https://b.example"]
    assert s.trusted_proxies == ["10.0.0.1"]
    assert load_settings(environ={"MEDHUB_TRUSTED_PROXIES": ""}).trusted_proxies == []


def test_toml_file_then_env_wins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'port = 8100\nws_rate_per_s = 12.5\nallowed_origins = ["https://care.example"]\n'
        'log_level = "debug"\n',
    )
    s = load_settings(environ={}, config_file=path)
    assert (s.port, s.ws_rate_per_s, s.log_level) == (8100, 12.5, "debug")
    assert s.allowed_origins == ["https://care.example"]
    s2 = load_settings(environ={"MEDHUB_PORT": "8200"}, config_file=path)
    assert s2.port == 8200  # env beats the file
    assert s2.ws_rate_per_s == 12.5


def test_toml_file_named_by_env(tmp_path: Path) -> None:
    path = write(tmp_path, "ws_rate_burst = 3\n")
    assert load_settings(environ={"MEDHUB_CONFIG": str(path)}).ws_rate_burst == 3


def test_overrides_win_over_everything(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 8100\n")
    s = load_settings(environ={"MEDHUB_PORT": "8200"}, config_file=path, overrides={"port": 8300})
    assert s.port == 8300


def test_unknown_toml_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 8100\nws_idle_timout_s = 3\n")
    with pytest.raises(ConfigError, match="ws_idle_timout_s"):
        load_settings(environ={}, config_file=path)


def test_unreadable_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_settings(environ={}, config_file=write(tmp_path, "port = = 1\n"))
    with pytest.raises(ConfigError):
        load_settings(environ={}, config_file=tmp_path / "missing.toml")


@pytest.mark.parametrize(
    "environ",
    [
        {"MEDHUB_PORT": "abc"},
        {"MEDHUB_PORT": "1.5"},
        {"MEDHUB_LOG_JSON": "maybe"},
        {"MEDHUB_WS_IDLE_TIMEOUT_S": "soon"},
    ],
)
def test_bad_env_type_is_a_config_error(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_settings(environ=environ)


def test_bad_toml_type_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_settings(environ={}, config_file=write(tmp_path, 'ws_rate_burst = "lots"\n'))
    with pytest.raises(ConfigError):
        load_settings(environ={}, config_file=write(tmp_path, 'allowed_origins = "x"\n'))


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MEDHUB_AUDIT_RETENTION_DAYS": "365"}, "audit_retention_days"),
        ({"MEDHUB_WS_RATE_PER_S": "0"}, "ws_rate_per_s"),
        ({"MEDHUB_WS_HANDSHAKE_TIMEOUT_S": "-1"}, "ws_handshake_timeout_s"),
        ({"MEDHUB_SHUTDOWN_GRACE_S": "0"}, "shutdown_grace_s"),
        ({"MEDHUB_BROKER": "kafka"}, "broker"),
        ({"MEDHUB_WS_MAX_FRAME_BYTES": "2000000"}, "ws_max_frame_bytes"),
    ],
)
def test_range_checks(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=environ)


def test_range_boundaries_accepted() -> None:
    s = load_settings(
        environ={"MEDHUB_AUDIT_RETENTION_DAYS": "366", "MEDHUB_WS_MAX_FRAME_BYTES": "1048576"}
    )
    assert s.audit_retention_days == 366
    assert s.ws_max_frame_bytes == s.ws_hard_max_frame_bytes


# -- secrets ------------------------------------------------------------------------------
def test_ensure_secrets_generates_a_private_file_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    s = load_settings(environ={"MEDHUB_DATA_DIR": str(data_dir)})
    with caplog.at_level(logging.WARNING, logger="server.config"):
        first = ensure_secrets(s)
    path = data_dir / "secrets"
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    warned = [r for r in caplog.records if "local file" in r.getMessage()]
    assert len(warned) == 1
    assert warned[0].generated == list(SECRET_FIELDS)  # type: ignore[attr-defined]
    values = {name: getattr(first, name) for name in SECRET_FIELDS}
    assert all(values.values())
    assert len(set(values.values())) == len(SECRET_FIELDS)  # independent secrets
    content = path.read_bytes()
    mtime = path.stat().st_mtime_ns

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="server.config"):
        second = ensure_secrets(load_settings(environ={"MEDHUB_DATA_DIR": str(data_dir)}))
    assert {name: getattr(second, name) for name in SECRET_FIELDS} == values
    assert path.read_bytes() == content
    assert path.stat().st_mtime_ns == mtime
    # Every start from the file warns again, but generates nothing new.
    assert [r.generated for r in caplog.records] == [[]]  # type: ignore[attr-defined]


def test_secrets_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    ensure_secrets(load_settings(environ={"MEDHUB_DATA_DIR": str(tmp_path)}))
    (tmp_path / "secrets").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        ensure_secrets(load_settings(environ={"MEDHUB_DATA_DIR": str(tmp_path)}))


def test_env_secret_wins_over_the_file(tmp_path: Path) -> None:
    data_dir = str(tmp_path)
    generated = ensure_secrets(load_settings(environ={"MEDHUB_DATA_DIR": data_dir}))
    s = ensure_secrets(
        load_settings(environ={"MEDHUB_DATA_DIR": data_dir, "MEDHUB_SECRET_AT_REST_KEY": KEY_A})
    )
    assert s.secret_at_rest_key == KEY_A
    assert s.secret_totp_key == generated.secret_totp_key  # the others still from the file


def test_ensure_secrets_does_nothing_when_all_are_set(tmp_path: Path) -> None:
    environ = {"MEDHUB_DATA_DIR": str(tmp_path)}
    environ.update({"MEDHUB_" + name.upper(): KEY_A for name in SECRET_FIELDS})
    s = load_settings(environ=environ)
    assert ensure_secrets(s) is s
    assert not (tmp_path / "secrets").exists()


def test_redacted_hides_secrets_and_url_passwords() -> None:
    s = load_settings(
        environ={
            "MEDHUB_SECRET_AT_REST_KEY": KEY_A,
            "MEDHUB_SECRET_TURN": "turn-shared-secret",
            "MEDHUB_DATABASE_URL": "postgresql+asyncpg://medhub:s3cr3t-pw@db.internal:5432/medhub",
            "MEDHUB_REDIS_URL": "redis://:r3dis-pw@cache.internal:6379/0",
        }
    )
    out = redacted(s)
    text = repr(out)
    for secret in (KEY_A, "turn-shared-secret", "s3cr3t-pw", "r3dis-pw"):
        assert secret not in text
    assert out["secret_at_rest_key"] == "<redacted>"
    assert out["secret_turn"] == "<redacted>"
    assert out["secret_totp_key"] == ""  # unset stays visibly unset
    assert out["database_url"] == "postgresql+asyncpg://<redacted>@db.internal:5432/medhub"
    assert out["redis_url"] == "redis://<redacted>@cache.internal:6379/0"
    assert out["port"] == s.port  # the rest is untouched


def test_redacted_keeps_urls_without_credentials() -> None:
    out = redacted(load_settings(environ={}))
    assert out["redis_url"] == "redis://127.0.0.1:6379/0"
    assert out["database_url"] == ""
