"""``medhub backup`` and ``medhub restore``: consistent, encrypted snapshots with a manifest.

A backup is a directory ``medhub-backup-<UTC time>/`` (mode 0700) holding:

* ``database.enc``: the database, encrypted as it is read. SQLite: a copy made
  with SQLite's online backup API (a consistent snapshot while the hub runs),
  written to a private temporary file beside the live database (it is what
  the live file holds: no health data in clear, the sealed columns stay
  sealed), encrypted, then deleted. PostgreSQL: ``pg_dump --format=custom``
  (one consistent transaction), its output encrypted as it streams; nothing
  in clear touches the disk;
* ``checkpoints.enc``: the audit checkpoint file, copied *before* the database
  snapshot so that every checkpoint it holds is covered by the snapshot (the
  restored chain verifies against it);
* ``manifest.json``: format, time, dialect, schema revision, the ids of the
  keys needed to restore (``key_id``: the at-rest key the backup key is derived
  from; ``audit_key_id``), and each file's size and SHA-256; authenticated by an
  HMAC (``mac``) under the backup key.

Encryption: AES-256-GCM in frames of :data:`FRAME_BYTES` (each frame's AAD
names the file, its index and whether it is the last, so a reordered,
swapped or cut file fails), under a key derived from the at-rest key named
``key_id`` with HKDF-SHA256 (``info`` :data:`BACKUP_INFO`): whoever restores
needs the deployment's at-rest key (current or retired), as they need it to
read the data anyway. Document contents in an S3 store are not in the
backup (back up the bucket; ``records_store`` is in the manifest).

:func:`restore` refuses a deployment that is not empty, checks the manifest's
MAC and every checksum before writing anything, restores, then verifies the
audit chain. Errors: :class:`BackupError` (with a message for the operator).
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import hmac
import json
import os
import secrets
import shutil
import sqlite3
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.engine import make_url

from server.config import Settings
from server.security.keys import ring_keys

FORMAT = "medhub-backup/1"
BACKUP_INFO = b"medhub|backup|v1"
FRAME_BYTES = 1 << 20
MAGIC = b"MHBK1\n"
_LEN = struct.Struct(">I")


class BackupError(Exception):
    """A backup or restore could not be made (the message says why, never a key)."""


def backup_key(settings: Settings, key_id: str | None = None) -> tuple[str, bytes]:
    """``(key id, backup key)``: derived from the at-rest key ``key_id`` (default: current)."""
    current, keys = ring_keys(settings, "at_rest")
    kid = key_id or current
    if kid not in keys:
        raise BackupError(f"the at-rest key {kid!r} is not configured (current or retired)")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=BACKUP_INFO)
    return kid, hkdf.derive(keys[kid])


def _aad(name: str, index: int, last: bool) -> bytes:
    return f"medhub|backup|{name}|{index}|{int(last)}".encode()


class SealedWriter:
    """Writes ``name`` encrypted in frames; :attr:`sha256` and :attr:`size` of the result."""

    def __init__(self, path: Path, key: bytes, name: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._out: IO[bytes] = os.fdopen(fd, "wb")
        self._aead, self._name, self._index = AESGCM(key), name, 0
        self._pending = bytearray()
        self._hash = hashlib.sha256()
        self.size = self.plain = 0
        self._emit(MAGIC)

    def _emit(self, data: bytes) -> None:
        self._out.write(data)
        self._hash.update(data)
        self.size += len(data)

    def _frame(self, data: bytes, last: bool) -> None:
        nonce = secrets.token_bytes(12)
        sealed = nonce + self._aead.encrypt(nonce, data, _aad(self._name, self._index, last))
        self._emit(_LEN.pack(len(sealed)) + sealed)
        self._index += 1

    def write(self, data: bytes) -> None:
        """Add clear bytes (sealed by whole frames as they fill)."""
        self._pending += data
        self.plain += len(data)
        while len(self._pending) > FRAME_BYTES:
            self._frame(bytes(self._pending[:FRAME_BYTES]), False)
            del self._pending[:FRAME_BYTES]

    def close(self) -> str:
        """Seal the last frame, sync and close; the file's SHA-256 (hex)."""
        self._frame(bytes(self._pending), True)
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        return self._hash.hexdigest()


def sealed_frames(path: Path, key: bytes, name: str) -> Iterator[bytes]:
    """The clear frames of a sealed file; raises :class:`BackupError` if it was altered,
    reordered, swapped or cut."""
    aead = AESGCM(key)
    with open(path, "rb") as fh:
        if fh.read(len(MAGIC)) != MAGIC:
            raise BackupError(f"{name}: not a medhub backup file")
        index, done = 0, False
        while True:
            head = fh.read(_LEN.size)
            if not head:
                break
            if done or len(head) != _LEN.size:
                raise BackupError(f"{name}: trailing or truncated data")
            sealed = fh.read(_LEN.unpack(head)[0])
            for last in (False, True):
                try:
                    clear = aead.decrypt(sealed[:12], sealed[12:], _aad(name, index, last))
                except InvalidTag:
                    continue
                done = last
                break
            else:
                raise BackupError(f"{name}: frame {index} does not authenticate (wrong key?)")
            index += 1
            yield clear
        if not done:
            raise BackupError(f"{name}: cut short (its last frame is missing)")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(FRAME_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _mac(key: bytes, manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "mac"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def pg_bin(tool: str) -> str:
    """The newest ``/usr/lib/postgresql/*/bin/<tool>`` (matching the newest server),
    else ``<tool>`` on PATH; raises :class:`BackupError` when there is none."""

    def major(path: str) -> int:
        part = path.split("/")[4]
        return int(part) if part.isdigit() else 0

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), key=major)
    path = found[-1] if found else shutil.which(tool)
    if not path:
        raise BackupError(f"{tool} not found (install PostgreSQL's client tools)")
    return path


def _pg_args(url: str) -> tuple[list[str], dict[str, str]]:
    u = make_url(url)
    args = [
        "-h",
        u.host or "127.0.0.1",
        "-p",
        str(u.port or 5432),
        "-U",
        u.username or "postgres",
        "-d",
        u.database or "postgres",
    ]
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    return args, env


@dataclass(frozen=True)
class BackupResult:
    """Where the backup is and its manifest."""

    path: Path
    manifest: dict[str, Any]


def backup(settings: Settings, out_dir: Path, *, revision: str | None) -> BackupResult:
    """Write a backup of the deployment of ``settings`` under ``out_dir`` (see the module
    docstring); synchronous (run it off the event loop). Raises :class:`BackupError`."""
    key_id, key = backup_key(settings)
    url = settings.effective_database_url
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = out_dir / f"medhub-backup-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        target.mkdir(mode=0o700)
    except FileExistsError:
        raise BackupError(f"{target} exists already") from None
    files = []
    checkpoints = settings.effective_checkpoint_path
    w = SealedWriter(target / "checkpoints.enc", key, "checkpoints.enc")
    if checkpoints.exists():
        w.write(checkpoints.read_bytes())  # small: one line per checkpoint
    files.append(
        {
            "name": "checkpoints.enc",
            "kind": "audit_checkpoints",
            "bytes": w.size,
            "plain_bytes": w.plain,
            "sha256": w.close(),
        }
    )
    w = SealedWriter(target / "database.enc", key, "database.enc")
    if dialect == "sqlite":
        _sqlite_snapshot(url, Path(settings.data_dir), w)
    else:
        _pg_dump(url, w)
    files.append(
        {
            "name": "database.enc",
            "kind": "sqlite" if dialect == "sqlite" else "pg_dump",
            "bytes": w.size,
            "plain_bytes": w.plain,
            "sha256": w.close(),
        }
    )
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "created_us": int(time.time() * 1e6),
        "dialect": dialect,
        "revision": revision,
        "key_id": key_id,
        "audit_key_id": settings.audit_key_id,
        "records_store": settings.records_store,
        "files": files,
    }
    manifest["mac"] = _mac(key, manifest)
    path = target / "manifest.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)
    return BackupResult(target, manifest)


def _sqlite_snapshot(url: str, data_dir: Path, w: SealedWriter) -> None:
    source = make_url(url).database
    if not source or not Path(source).exists():
        raise BackupError("the SQLite database does not exist")
    tmp = Path(source).parent / f".backup-{secrets.token_hex(8)}.db"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        src, dst = sqlite3.connect(source), sqlite3.connect(tmp)
        try:
            src.backup(dst)  # SQLite's online backup API: a consistent snapshot
        finally:
            dst.close()
            src.close()
        with open(tmp, "rb") as fh:
            for block in iter(lambda: fh.read(FRAME_BYTES), b""):
                w.write(block)
    finally:
        tmp.unlink(missing_ok=True)


def _pg_dump(url: str, w: SealedWriter) -> None:
    args, env = _pg_args(url)
    cmd = [pg_bin("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", *args]
    # our own arguments (no shell), the password in the environment, never on the command line
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:  # noqa: S603
        out, errors = proc.stdout, proc.stderr
        assert out is not None
        assert errors is not None
        for block in iter(lambda: out.read(FRAME_BYTES), b""):
            w.write(block)
        err = errors.read()
        if proc.wait() != 0:
            raise BackupError(f"pg_dump failed: {err.decode(errors='replace')[-500:]}")


def read_manifest(settings: Settings, path: Path) -> tuple[dict[str, Any], bytes]:
    """The manifest of the backup at ``path`` and its key, after checking the MAC and
    every file's checksum; raises :class:`BackupError`."""
    try:
        manifest: dict[str, Any] = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"cannot read {path / 'manifest.json'}: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise BackupError("not a medhub backup of a known format")
    _, key = backup_key(settings, str(manifest.get("key_id")))
    if not hmac.compare_digest(str(manifest.get("mac", "")), _mac(key, manifest)):
        raise BackupError("the manifest does not authenticate (altered, or another key)")
    for f in manifest["files"]:
        if _sha256(path / f["name"]) != f["sha256"]:
            raise BackupError(f"{f['name']}: checksum mismatch")
    return manifest, key


async def _empty(url: str) -> bool:
    from sqlalchemy import inspect

    from server.store.db import Database

    async with Database(url, pool_size=1) as db, db.engine.connect() as conn:
        names = await conn.run_sync(lambda c: inspect(c).get_table_names())
    return not names


def restore(settings: Settings, path: Path) -> dict[str, Any]:
    """Restore the backup at ``path`` into the (empty) deployment of ``settings``; the
    manifest. Synchronous (own event loop for the emptiness check). Raises
    :class:`BackupError`."""
    manifest, key = read_manifest(settings, path)
    url = settings.effective_database_url
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    if manifest["dialect"] != dialect:
        raise BackupError(f"a {manifest['dialect']} backup cannot go into {dialect}")
    db_file = make_url(url).database if dialect == "sqlite" else None
    if db_file and Path(db_file).exists() and not asyncio.run(_empty(url)):
        raise BackupError("the database is not empty: restore into an empty deployment")
    if dialect == "postgresql" and not asyncio.run(_empty(url)):
        raise BackupError("the database is not empty: restore into an empty deployment")
    checkpoints = settings.effective_checkpoint_path
    if checkpoints.exists() and checkpoints.stat().st_size:
        raise BackupError(f"{checkpoints} exists: restore into an empty deployment")
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    if db_file:
        _restore_sqlite(path, key, Path(db_file))
    else:
        _pg_restore(path, key, url)
    checkpoints.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(checkpoints, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        for frame in sealed_frames(path / "checkpoints.enc", key, "checkpoints.enc"):
            fh.write(frame)
    return manifest


def _restore_sqlite(path: Path, key: bytes, db_file: Path) -> None:
    tmp = db_file.parent / f".restore-{secrets.token_hex(8)}.db"
    db_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            for frame in sealed_frames(path / "database.enc", key, "database.enc"):
                fh.write(frame)
            fh.flush()
            os.fsync(fh.fileno())
        conn = sqlite3.connect(tmp)
        try:
            ok = conn.execute("PRAGMA integrity_check").fetchone()
        finally:
            conn.close()
        if not ok or ok[0] != "ok":
            raise BackupError("the restored SQLite database fails its integrity check")
        for suffix in ("-wal", "-shm"):
            Path(f"{db_file}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, db_file)
    finally:
        tmp.unlink(missing_ok=True)


def _pg_restore(path: Path, key: bytes, url: str) -> None:
    args, env = _pg_args(url)
    cmd = [pg_bin("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", *args]
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:  # noqa: S603
        assert proc.stdin is not None
        assert proc.stderr is not None
        try:
            for frame in sealed_frames(path / "database.enc", key, "database.enc"):
                proc.stdin.write(frame)
        finally:
            proc.stdin.close()
        err = proc.stderr.read()
        if proc.wait() != 0:
            raise BackupError(f"pg_restore failed: {err.decode(errors='replace')[-500:]}")
