"""Settings: one object, built from defaults, an optional TOML file and ``MEDHUB_*``.

Precedence (last wins): field default < TOML file < environment variable.
Every field is documented in ``FIELD_DOCS`` with its unit; ``medhub config``
prints the effective settings with secrets redacted.

Environment variables are the field name upper-cased with the ``MEDHUB_`` prefix
(``ws_handshake_timeout_s`` -> ``MEDHUB_WS_HANDSHAKE_TIMEOUT_S``). Lists are
comma-separated. The TOML file is named by ``MEDHUB_CONFIG`` or ``--config``;
its keys are the field names, at top level.

Secrets (``secret_*``) that are left empty are generated once into
``<data_dir>/secrets`` (mode 0600) by :func:`ensure_secrets`, with a warning:
acceptable for the embedded single-node default, never for production.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from server.security.crypto import KEY_ID_PATTERN

log = logging.getLogger(__name__)

ENV_PREFIX = "MEDHUB_"
#: Days audit entries are kept at least, whatever the settings (HDS: one year).
MIN_RETENTION_DAYS = 366
SECRET_FIELDS = ("secret_at_rest_key", "secret_totp_key", "secret_turn", "secret_audit_key")
#: Retired keys (``"<key_id>:<base64>"`` lists): redacted, never generated, read-only keys.
RETIRED_KEY_FIELDS = (
    "secret_audit_retired_keys",
    "secret_at_rest_retired_keys",
    "secret_totp_retired_keys",
)


class ConfigError(Exception):
    """A setting has a value of the wrong type or out of its range."""


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """The effective configuration. Build it with :func:`load_settings`."""

    # -- process ---------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "./var"
    node_id: str = ""
    log_level: str = "info"
    log_json: bool = True
    gc_thresholds: list[int] = msgspec.field(default_factory=lambda: [50000, 20, 100])
    gil_switch_interval_s: float = 0.005
    trusted_proxies: list[str] = []
    allowed_origins: list[str] = msgspec.field(
        default_factory=lambda: ["http://127.0.0.1:8000", "http://localhost:8000"]
    )

    # -- stores and broker -------------------------------------------------
    database_url: str = ""
    db_pool_size: int = 5
    broker: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"

    # -- WebSocket limits ----------------------------------------------------
    ws_handshake_timeout_s: float = 5.0
    ws_auth_timeout_s: float = 30.0
    ws_auth_concurrency: int = 64
    ws_auth_queue_max: int = 4096
    ws_heartbeat_interval_s: float = 25.0
    ws_idle_timeout_s: float = 60.0
    ws_close_timeout_s: float = 10.0
    ws_max_frame_bytes: int = 65536
    ws_hard_max_frame_bytes: int = 1048576
    ws_send_queue_max_messages: int = 1024
    ws_send_queue_max_bytes: int = 4194304
    ws_rate_per_s: float = 50.0
    ws_rate_burst: int = 200
    ws_stream_rate_per_s: float = 200.0
    ws_stream_rate_burst: int = 400
    ws_abuse_max_errors: int = 100
    ws_abuse_window_s: float = 10.0
    ws_max_pipelined_requests: int = 32
    ws_max_connections: int = 20000
    ws_max_connections_per_user: int = 10
    max_connections_per_address: int = 256
    http_head_timeout_s: float = 10.0
    shutdown_grace_s: float = 5.0
    shutdown_retry_after_s: float = 2.0

    # -- audit trail -----------------------------------------------------------
    audit_queue_max: int = 100000
    audit_batch_max: int = 1000
    audit_flush_interval_ms: int = 50
    audit_checkpoint_path: str = ""
    audit_checkpoint_every: int = 1000
    audit_retention_days: int = 400
    audit_key_id: str = "k1"

    # -- accounts (server/accounts) --------------------------------------------
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19456
    argon2_parallelism: int = 1
    password_hash_threads: int = 2
    password_hash_queue_max: int = 64
    password_min_length: int = 12
    password_max_length: int = 128
    password_min_classes: int = 4
    password_max_age_days: int = 365
    auth_cache_ttl_s: float = 10.0
    auth_cache_max_entries: int = 100000
    access_poll_interval_s: float = 0.5
    session_idle_timeout_s: float = 1800.0
    session_absolute_timeout_s: float = 43200.0
    mfa_challenge_ttl_s: float = 300.0
    reauth_window_s: float = 300.0
    ws_ticket_ttl_s: float = 30.0
    invitation_ttl_s: float = 604800.0
    lockout_threshold: int = 5
    lockout_schedule_s: list[int] = msgspec.field(default_factory=lambda: [60, 300, 900, 3600])
    lockout_account_threshold: int = 20
    lockout_max_failures_per_hour: int = 100
    lockout_ip_max_failures_per_hour: int = 300
    lockout_ip_max_delay_s: int = 60
    totp_key_id: str = "t1"
    at_rest_key_id: str = "r1"
    at_rest_index_key_id: str = "r1"

    # -- secrets (redacted in every output) ------------------------------------
    secret_at_rest_key: str = ""
    secret_totp_key: str = ""
    secret_turn: str = ""
    secret_audit_key: str = ""
    secret_audit_retired_keys: list[str] = []
    secret_at_rest_retired_keys: list[str] = []
    secret_totp_retired_keys: list[str] = []

    @property
    def effective_database_url(self) -> str:
        """The SQLAlchemy URL; SQLite under ``data_dir`` when none is set."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{Path(self.data_dir).resolve() / 'medhub.db'}"

    @property
    def effective_node_id(self) -> str:
        """A node id unique among the hub processes sharing a broker (at most 64 chars)."""
        return (self.node_id or f"{os.uname().nodename}-{os.getpid()}")[:64]

    @property
    def effective_checkpoint_path(self) -> Path:
        """Where audit checkpoints are appended (outside the database)."""
        if self.audit_checkpoint_path:
            return Path(self.audit_checkpoint_path)
        return Path(self.data_dir) / "audit.checkpoints"


FIELD_DOCS: dict[str, str] = {
    "host": "interface to bind (address)",
    "port": "TCP port to bind",
    "data_dir": "directory for the SQLite database, generated secrets, audit checkpoints",
    "node_id": "this process's id among hub nodes (default: hostname-pid)",
    "log_level": "debug | info | warning | error",
    "log_json": "structured JSON log lines (true) or plain text (false)",
    "gil_switch_interval_s": "seconds a thread holds the interpreter lock before another may "
    "take it (sys.setswitchinterval; CPython's default 0.005): shorter, the database thread "
    "waits less behind a busy event loop",
    "gc_thresholds": "garbage-collector thresholds (gen0 allocations, gen1 and gen2 runs; "
    "list of 3 ints; empty: CPython's default); start-up objects are frozen either way",
    "trusted_proxies": "addresses whose X-Forwarded-For is believed (list of IPs)",
    "allowed_origins": "WebSocket/browser Origin allow-list (list of origins); others get 403; "
    "left at its default, medhub serve allows the origins of the address it serves "
    "(http://127.0.0.1:PORT, http://localhost:PORT, http://HOST:PORT)",
    "database_url": "SQLAlchemy async URL (default: SQLite in data_dir)",
    "db_pool_size": "database connections per process (connections)",
    "broker": "memory | redis",
    "redis_url": "Redis URL when broker = redis",
    "ws_handshake_timeout_s": "seconds a new socket has to send its hello; then close 4001",
    "ws_auth_timeout_s": "seconds the server may take to check a hello's credentials "
    "(queueing included); then close 1013 (try again later)",
    "ws_auth_concurrency": "credential checks run at once (checks)",
    "ws_auth_queue_max": "credential checks waiting for a slot; past it a hello is answered "
    "unavailable with retry_after_s and the socket closed 1013",
    "ws_heartbeat_interval_s": "seconds between server pings on a quiet socket",
    "ws_idle_timeout_s": "seconds without any inbound frame before close 4008",
    "ws_close_timeout_s": "seconds a closing socket may take to accept its close frame "
    "(a peer that stopped reading); then the connection is dropped",
    "ws_max_frame_bytes": "bytes; a larger frame gets error too_large, socket survives",
    "ws_hard_max_frame_bytes": "bytes; a larger frame closes the socket with 1009",
    "ws_send_queue_max_messages": "messages queued to one socket; past it, slow-consumer policy",
    "ws_send_queue_max_bytes": "bytes queued to one socket; past it, slow-consumer policy",
    "ws_rate_per_s": "inbound frames per second per socket (token bucket refill)",
    "ws_rate_burst": "inbound frames allowed in a burst per socket (bucket size)",
    "ws_stream_rate_per_s": "binary stream frames per second per socket (a budget of their "
    "own, apart from messages); past it rate_limited",
    "ws_stream_rate_burst": "binary stream frames allowed in a burst per socket (bucket size)",
    "ws_abuse_max_errors": "errors a socket may cause within ws_abuse_window_s; then close 4029",
    "ws_abuse_window_s": "seconds over which ws_abuse_max_errors is counted",
    "ws_max_pipelined_requests": "replies one socket may await (e.g. chat.send commits); "
    "past it the socket is not read until the oldest is answered",
    "ws_max_connections": "sockets per process; past it new sockets get close 1013; lowered "
    "at start (with a warning) to fit the file-descriptor limit (server/limits.py)",
    "ws_max_connections_per_user": "sockets per user per process; past it close 4030",
    "max_connections_per_address": "open TCP connections (HTTP and WebSocket) from one source "
    "address; past it new ones are closed at accept; trusted_proxies are exempt",
    "http_head_timeout_s": "seconds a connection has to send a complete request head (request "
    "line and headers); then it is closed (408 if part of a head arrived)",
    "shutdown_grace_s": "seconds to flush send queues on SIGTERM before closing",
    "shutdown_retry_after_s": "seconds clients are told to wait before reconnecting",
    "audit_queue_max": "audit entries waiting for the writer; past it record() still "
    "accepts (never drops) but /readyz answers 503 and durable callers wait",
    "audit_batch_max": "audit entries written per transaction",
    "audit_flush_interval_ms": "milliseconds the writer waits to fill a batch",
    "audit_checkpoint_path": "append-only checkpoint file (default data_dir/audit.checkpoints)",
    "audit_checkpoint_every": "audit entries between two checkpoints",
    "audit_retention_days": f"days audit entries are kept (never below {MIN_RETENTION_DAYS})",
    "audit_key_id": "id of the current audit HMAC key",
    "argon2_time_cost": "Argon2id passes (t); below 2 with 19456 KiB is refused (OWASP)",
    "argon2_memory_kib": "Argon2id memory per hash (KiB); more is slower and stronger",
    "argon2_parallelism": "Argon2id lanes (p)",
    "password_hash_threads": "threads hashing passwords off the event loop (threads)",
    "password_hash_queue_max": "hashes queued or running; past it logins get 503 unavailable",
    "password_min_length": "characters a new password needs at least",
    "password_max_length": "characters a new password may have at most (never truncated)",
    "password_min_classes": "character classes (lower, upper, digit, other) a password needs",
    "password_max_age_days": "days before a staff password expires (change forced at login)",
    "auth_cache_ttl_s": "seconds an authenticated session stays cached in a process "
    "(0: no cache); a revocation or rights change drops it sooner (access_poll_interval_s)",
    "auth_cache_max_entries": "sessions cached per process, at most (the oldest go first)",
    "access_poll_interval_s": "seconds between two reads of the access change log: a revoked "
    "session or changed rights take effect on every node within about this long",
    "session_idle_timeout_s": "seconds without use after which a session ends",
    "session_absolute_timeout_s": "seconds after login after which a session ends",
    "mfa_challenge_ttl_s": "seconds between the password step and the TOTP step",
    "reauth_window_s": "seconds a re-authentication allows sensitive changes",
    "ws_ticket_ttl_s": "seconds a single-use WebSocket ticket stays valid",
    "invitation_ttl_s": "seconds an invitation link stays valid",
    "lockout_threshold": "consecutive failures from one address on one account before each "
    "temporary lock of that pair (the same account from elsewhere is not locked)",
    "lockout_account_threshold": "consecutive failures on one account, from every address, "
    "before each temporary lock of the account",
    "lockout_schedule_s": "lock durations in seconds, growing per lock (list); last repeats",
    "lockout_max_failures_per_hour": "failures per account per hour; past it, locked",
    "lockout_ip_max_failures_per_hour": "failures per source address per hour before its "
    "attempts are spaced out (one per 1 s, doubling per further failure); never a lock",
    "lockout_ip_max_delay_s": "longest spacing (seconds) between two attempts from an address "
    "past lockout_ip_max_failures_per_hour",
    "totp_key_id": "key id of secret_totp_key (stored beside each encrypted TOTP secret)",
    "at_rest_key_id": "key id of secret_at_rest_key (stored beside each encrypted value)",
    "at_rest_index_key_id": "id of the at-rest key (current or retired) the email blind index "
    "is derived from; keep it when rotating (changing it changes every index)",
    "secret_at_rest_key": "base64 32-byte AES-GCM master key (secret)",
    "secret_totp_key": "base64 32-byte key encrypting TOTP secrets (secret)",
    "secret_turn": "shared secret with the TURN server (secret; reserved: read by the "
    "calls capability, a later issue)",
    "secret_audit_key": "base64 32-byte HMAC key of the audit chain (secret)",
    "secret_audit_retired_keys": "old audit keys, verify only (list of <key_id>:<base64>; secret)",
    "secret_at_rest_retired_keys": "old at-rest keys, decrypt only "
    "(list of <key_id>:<base64>; secret)",
    "secret_totp_retired_keys": "old TOTP keys, decrypt only (list of <key_id>:<base64>; secret)",
}


def _coerce_env(name: str, raw: str, annotation: Any) -> Any:
    if annotation in (list[str], list[int]) or str(annotation) in ("list[str]", "list[int]"):
        return [part.strip() for part in raw.split(",") if part.strip()]
    return raw


def load_settings(
    *,
    environ: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from a TOML file, the environment and explicit overrides.

    Raises :class:`ConfigError` for an unknown key in the file or a value of
    the wrong type. Unknown ``MEDHUB_*`` variables are ignored except
    ``MEDHUB_CONFIG``.
    """
    env = os.environ if environ is None else environ
    fields = {f.name: f for f in msgspec.structs.fields(Settings)}
    values: dict[str, Any] = {}
    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"unknown keys in {path}: {', '.join(unknown)}")
        values.update(data)
    for name, info in fields.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _coerce_env(name, raw, info.type)
    if overrides:
        values.update(overrides)
    try:
        settings = msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(str(exc)) from exc
    _check_ranges(settings)
    return settings


def _check_ranges(s: Settings) -> None:
    positive = [name for name in FIELD_DOCS if name.startswith(("ws_", "audit_", "shutdown_"))]
    positive += ["max_connections_per_address", "http_head_timeout_s"]
    for name in positive:
        value = getattr(s, name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
            raise ConfigError(f"{name} must be > 0 (got {value})")
    if not 0 < s.gil_switch_interval_s <= 0.1:
        raise ConfigError("gil_switch_interval_s must be in (0, 0.1]")
    if s.access_poll_interval_s <= 0 or s.auth_cache_ttl_s < 0:
        raise ConfigError("access_poll_interval_s must be > 0 and auth_cache_ttl_s >= 0")
    if s.gc_thresholds and (len(s.gc_thresholds) != 3 or min(s.gc_thresholds) < 1):
        raise ConfigError("gc_thresholds must be empty or three integers >= 1")
    if s.broker not in ("memory", "redis"):
        raise ConfigError(f"broker must be memory or redis (got {s.broker!r})")
    if s.ws_max_frame_bytes > s.ws_hard_max_frame_bytes:
        raise ConfigError("ws_max_frame_bytes must not exceed ws_hard_max_frame_bytes")
    if s.audit_retention_days < MIN_RETENTION_DAYS:
        raise ConfigError(
            f"audit_retention_days must be at least {MIN_RETENTION_DAYS} (one year, HDS)"
        )
    _check_retired_keys(s)


def _check_retired_keys(s: Settings) -> None:
    """Retired keys well formed, ids unique and never the current id (message shows no key)."""
    from server.security.crypto import CryptoError
    from server.security.keys import FIELDS, parse_retired

    ids: dict[str, set[str]] = {}
    for ring, (id_field, _, retired_field) in FIELDS.items():
        current_id = getattr(s, id_field)
        try:
            retired = parse_retired(getattr(s, retired_field), current_id, retired_field)
        except CryptoError as exc:
            raise ConfigError(str(exc)) from None
        ids[ring] = {current_id, *retired}
    if s.at_rest_index_key_id not in ids["at_rest"]:
        raise ConfigError(
            f"at_rest_index_key_id {s.at_rest_index_key_id!r} names no at-rest key: keep that "
            "key in secret_at_rest_retired_keys (the email blind index is derived from it)"
        )


def ensure_secrets(settings: Settings) -> Settings:
    """Fill empty secrets from ``<data_dir>/secrets``, generating that file once.

    The file is created with mode 0600; a secret given in the environment or
    TOML always wins. Every start that takes a secret from the file logs a
    warning (fine for the embedded default, never for production). Raises
    :class:`ConfigError` when the file is readable by group or others.
    Returns the completed settings.
    """
    missing = [name for name in SECRET_FIELDS if not getattr(settings, name)]
    if not missing:
        return settings
    path = Path(settings.data_dir) / "secrets"
    stored: dict[str, str] = {}
    if path.exists():
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"{path} must be readable by its owner only (chmod 600)")
        with open(path, "rb") as fh:
            stored = {k: str(v) for k, v in tomllib.load(fh).items()}
    fresh = [name for name in missing if name not in stored]
    if fresh:
        for name in fresh:
            stored[name] = base64.b64encode(secrets.token_bytes(32)).decode()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("# generated by medhub: keep private, back up with the database\n")
            for name, value in sorted(stored.items()):
                fh.write(f'{name} = "{value}"\n')
        os.chmod(path, 0o600)
    log.warning(
        "secrets taken from a local file; set MEDHUB_SECRET_* in production",
        extra={"path": str(path), "generated": fresh, "from_file": missing},
    )
    return msgspec.structs.replace(settings, **{name: stored[name] for name in missing})


def _redact_retired(entry: str) -> str:
    key_id, sep, _ = entry.partition(":")
    if sep and KEY_ID_PATTERN.fullmatch(key_id):
        return f"{key_id}:<redacted>"
    return "<redacted>"


def redacted(settings: Settings) -> dict[str, Any]:
    """The settings as a plain dict with every secret replaced by ``"<redacted>"``."""
    out: dict[str, Any] = msgspec.to_builtins(settings)
    for name in SECRET_FIELDS:
        out[name] = "<redacted>" if out[name] else ""
    for name in RETIRED_KEY_FIELDS:  # the key ids stay visible, never the keys
        out[name] = [_redact_retired(entry) for entry in out[name]]
    if "@" in out["redis_url"]:
        scheme, _, rest = out["redis_url"].partition("://")
        out["redis_url"] = f"{scheme}://<redacted>@{rest.rpartition('@')[2]}"
    if "@" in out["database_url"]:
        scheme, _, rest = out["database_url"].partition("://")
        out["database_url"] = f"{scheme}://<redacted>@{rest.rpartition('@')[2]}"
    return out
