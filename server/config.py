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
#: Smallest ``eeg_publish_queue_bytes`` accepted: a few frames.
EEG_PUBLISH_QUEUE_MIN_BYTES = 65536
#: Smallest ``sqlite_wal_max_bytes`` accepted (1 MiB: a restart every few commits costs more).
SQLITE_WAL_MIN_BYTES = 1024 * 1024
#: Default ``sqlite_wal_max_bytes`` (32 MiB: about 1.5 s of chat at 2,000 msg/s).
SQLITE_WAL_MAX_BYTES = 32 * 1024 * 1024
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
    gil_switch_interval_s: float = 0.001
    trusted_proxies: list[str] = []
    allowed_origins: list[str] = msgspec.field(
        default_factory=lambda: ["http://127.0.0.1:8000", "http://localhost:8000"]
    )

    # -- stores and broker -------------------------------------------------
    database_url: str = ""
    db_pool_size: int = 5
    sqlite_wal_max_bytes: int = SQLITE_WAL_MAX_BYTES
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
    lockout_notice_ttl_s: float = 7776000.0
    totp_key_id: str = "t1"
    at_rest_key_id: str = "r1"
    at_rest_index_key_id: str = "r1"

    # -- calls (server/calls) ------------------------------------------------------
    calls_stun_urls: list[str] = []
    calls_turn_urls: list[str] = []
    calls_turn_ttl_s: float = 3600.0
    calls_ring_timeout_s: float = 60.0
    calls_grace_s: float = 30.0
    calls_max_duration_s: float = 14400.0
    calls_quality_max_reports: int = 120
    calls_relay_buffer_frames: int = 64
    calls_echo_users: list[str] = []

    # -- EEG (server/eeg) --------------------------------------------------------
    eeg_ring_seconds: float = 600.0
    eeg_ring_max_bytes: int = 268435456
    eeg_persist_interval_s: float = 0.5
    eeg_max_gap_s: float = 3600.0
    eeg_fill_timeout_s: float = 2.0
    eeg_publish_queue_bytes: int = 16777216

    # -- medical records (server/records) ------------------------------------------
    records_max_upload_bytes: int = 268435456
    records_chunk_bytes: int = 65536
    records_list_max: int = 500
    records_store: str = "db"
    records_s3_endpoint_url: str = ""
    records_s3_bucket: str = ""
    records_s3_region: str = "us-east-1"
    records_s3_prefix: str = "medhub/"
    records_s3_cold_storage_class: str = "STANDARD_IA"
    records_s3_part_bytes: int = 8388608
    records_archive_after_days: int = 730
    records_erasure_keep_days: int = 3650
    records_pending_upload_ttl_s: float = 86400.0

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
    "take it (sys.setswitchinterval; CPython's default is 0.005): shorter, the database "
    "thread waits less behind a busy event loop (chat p99 at 1,000 msg/s: 134 ms at 0.005, "
    "76 ms at 0.001, no better below; docs/architecture.md)",
    "gc_thresholds": "garbage-collector thresholds (gen0 allocations, gen1 and gen2 runs; "
    "list of 3 ints; empty: CPython's default); start-up objects are frozen either way",
    "trusted_proxies": "addresses whose X-Forwarded-For is believed (list of IPs)",
    "allowed_origins": "WebSocket/browser Origin allow-list (list of origins); others get 403; "
    "left at its default, medhub serve allows the origins of the address it serves "
    "(http://127.0.0.1:PORT, http://localhost:PORT, http://HOST:PORT)",
    "database_url": "SQLAlchemy async URL (default: SQLite in data_dir)",
    "db_pool_size": "database connections per process (connections)",
    "sqlite_wal_max_bytes": "SQLite only: once the write-ahead log passes this size (bytes) "
    "the background checkpoint restarts it (writers wait for the copy of its last frames, "
    "and at most 100 ms for readers: behind a longer reader it tries again later); "
    "under writes that never pause it would otherwise grow without end, and every read "
    "with it (chat at 2,000 msg/s: p50 9.5 ms, climbing, unbounded; 6.4 ms bounded)",
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
    "lockout_notice_ttl_s": "seconds the record of failed sign-ins and locks on an account "
    "waits for its owner's next successful login (shown there as a notice, then forgotten)",
    "totp_key_id": "key id of secret_totp_key (stored beside each encrypted TOTP secret)",
    "at_rest_key_id": "key id of secret_at_rest_key (stored beside each encrypted value)",
    "at_rest_index_key_id": "id of the at-rest key (current or retired) the email blind index "
    "is derived from; keep it when rotating (changing it changes every index)",
    "eeg_ring_seconds": "seconds of each live EEG stream a node keeps in memory (per stream "
    "watched or recorded there): a late viewer's backfill comes from it; older samples are "
    "read from the store",
    "eeg_ring_max_bytes": "bytes of samples one stream's ring may hold; a wider stream keeps "
    "fewer than eeg_ring_seconds (256 channels x 2048 Hz int32: about 128 s)",
    "eeg_persist_interval_s": "seconds between two writes of a stream's accepted samples "
    "(acknowledged once committed): a crash of the hub loses at most about this much more "
    "than what the recorder resends",
    "eeg_max_gap_s": "seconds a stream's sample index may jump forward in one frame (the "
    "skipped samples become an explicit gap); a larger jump is refused bad_request",
    "eeg_fill_timeout_s": "seconds a node waits for the node recording a stream to send its "
    "buffered samples (a viewer's first watch there); then it reads them from the store",
    "eeg_publish_queue_bytes": "bytes of EEG sample frames a node may hold for the broker "
    "(queued or being sent; at least 65536): past it, while the broker is slow or down, further "
    "frames are not sent to the other nodes (medhub_eeg_publish_dropped_total, one warning per "
    "episode); the recording and this node's viewers lose nothing, viewers on other nodes get "
    "a gap there",
    "records_max_upload_bytes": "bytes one document upload may hold; a larger Content-Length "
    "is refused before reading, a longer body as soon as the count passes it (413)",
    "records_chunk_bytes": "bytes of a document per encrypted chunk (4096..4194304): what is "
    "held in memory per upload or download, and one AES-GCM tag per chunk",
    "records_list_max": "documents and reports one listing answers at most (newest first)",
    "records_store": "where document contents live: db (chunk rows in the database, the "
    "default: shared by every node, in every backup) | s3 (an S3-compatible bucket)",
    "records_s3_endpoint_url": "S3 endpoint URL (empty: AWS); credentials come from boto3's "
    "usual chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, instance role)",
    "records_s3_bucket": "S3 bucket of document contents (required when records_store = s3)",
    "records_s3_region": "S3 region name",
    "records_s3_prefix": "prefix of every object key medhub writes in the bucket",
    "records_s3_cold_storage_class": "S3 storage class of archived contents (the cold area)",
    "records_s3_part_bytes": "bytes per S3 multipart upload part (>= 5 MiB): what an S3 "
    "upload holds in memory",
    "records_archive_after_days": "days after its last change a document's contents move to "
    "the cold (still encrypted) area at the next medhub retention run",
    "records_erasure_keep_days": "days the records of an erased (pseudonymised) account are "
    "kept for legal obligations; then medhub retention run deletes them",
    "records_pending_upload_ttl_s": "seconds an unfinished upload's chunks are kept; then "
    "medhub retention run deletes them",
    "secret_at_rest_key": "base64 32-byte AES-GCM master key (secret)",
    "secret_totp_key": "base64 32-byte key encrypting TOTP secrets (secret)",
    "calls_stun_urls": "STUN server URLs handed to call parties (list, e.g. "
    "stun:stun.example.org:3478)",
    "calls_turn_urls": "TURN server URLs handed to call parties with per-user credentials "
    "(list, e.g. turn:turn.example.org:3478?transport=udp); empty: no TURN",
    "calls_turn_ttl_s": "seconds a minted TURN credential stays valid (coturn use-auth-secret)",
    "calls_ring_timeout_s": "seconds an invite rings at most (its lifetime: the default, and "
    "the cap of what call.invite asks); then the call ends with reason timeout",
    "calls_grace_s": "seconds a call party whose socket dropped has to call.resume; then "
    "the call ends with reason timeout",
    "calls_max_duration_s": "seconds a call lasts at most (its shared state expires); then "
    "it ends with reason timeout",
    "calls_quality_max_reports": "quality reports kept per party and call (the newest); "
    "older ones are dropped",
    "calls_relay_buffer_frames": "signalling frames held per call while the other party is "
    "not reachable yet (ringing, reconnecting); past it a frame is refused unavailable",
    "calls_echo_users": "user ids of the test-call echo service accounts (list); "
    "call.invite with echo rings one of them",
    "secret_turn": "shared secret with the TURN server (secret; coturn static-auth-secret): "
    "TURN passwords are base64(HMAC-SHA1(secret, '<expiry>:<user>'))",
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
    positive += ["max_connections_per_address", "http_head_timeout_s", "lockout_notice_ttl_s"]
    positive += [name for name in FIELD_DOCS if name.startswith(("eeg_", "calls_", "records_"))]
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
    if s.sqlite_wal_max_bytes < SQLITE_WAL_MIN_BYTES:
        raise ConfigError(f"sqlite_wal_max_bytes must be at least {SQLITE_WAL_MIN_BYTES}")
    if s.broker not in ("memory", "redis"):
        raise ConfigError(f"broker must be memory or redis (got {s.broker!r})")
    if s.ws_max_frame_bytes > s.ws_hard_max_frame_bytes:
        raise ConfigError("ws_max_frame_bytes must not exceed ws_hard_max_frame_bytes")
    if s.audit_retention_days < MIN_RETENTION_DAYS:
        raise ConfigError(
            f"audit_retention_days must be at least {MIN_RETENTION_DAYS} (one year, HDS)"
        )
    if s.eeg_publish_queue_bytes < EEG_PUBLISH_QUEUE_MIN_BYTES:
        raise ConfigError(f"eeg_publish_queue_bytes must be at least {EEG_PUBLISH_QUEUE_MIN_BYTES}")
    _check_records(s)
    _check_retired_keys(s)


def _check_records(s: Settings) -> None:
    """The records section: a known store, a bucket for S3, chunk and part sizes in range."""
    if s.records_store not in ("db", "s3"):
        raise ConfigError(f"records_store must be db or s3 (got {s.records_store!r})")
    if s.records_store == "s3" and not s.records_s3_bucket:
        raise ConfigError("records_s3_bucket is required when records_store = s3")
    if not 4096 <= s.records_chunk_bytes <= 4194304:
        raise ConfigError("records_chunk_bytes must be in 4096..4194304")
    if s.records_s3_part_bytes < 5 * 1024 * 1024:
        raise ConfigError("records_s3_part_bytes must be at least 5 MiB (S3's smallest part)")


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
