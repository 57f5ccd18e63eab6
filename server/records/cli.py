"""``medhub records ...``, ``medhub retention run``, ``medhub backup``, ``medhub restore``,
``medhub keys rotate``: the records sidecar's operator commands (on this machine's settings).

Each opens the database and the audit trail (every change is audited with
the role ``operator`` or ``system``), does one thing, prints what it did (one
JSON line with ``--json``), and exits 0; an operational failure prints one
line on stderr and exits 2 (``restore``: 1 when the restored audit chain does
not verify).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from server.accounts.errors import ApiError
from server.audit.trail import AuditTrail
from server.config import ConfigError, Settings, ensure_secrets
from server.facts import AccountsFacts
from server.records.service import Records, build_records
from server.security.at_rest import settings_keyring
from server.security.crypto import CryptoError
from server.store.db import Database

Job = Coroutine[Any, Any, int]


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Records]:
    """The records components on ``settings``' database, with a running audit trail."""
    async with Database(settings.effective_database_url, pool_size=2) as db:
        trail = AuditTrail.from_settings(settings, db)
        await trail.start()
        try:
            yield build_records(
                settings, db, AccountsFacts(db), trail, trail, settings_keyring(settings)
            )
        finally:
            await trail.close()


def _run(name: str, body: Callable[[Settings], Job]) -> Callable[[Any, Settings], int]:
    def func(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return asyncio.run(body(ensure_secrets(settings)))
        except (ApiError, ConfigError, CryptoError, ValueError, LookupError, OSError) as exc:
            print(f"medhub {name}: {getattr(exc, 'message', exc)}", file=sys.stderr)
        except SQLAlchemyError as exc:
            print(f"medhub {name}: database error ({type(exc).__name__})", file=sys.stderr)
        return 2

    return func


def _print(data: dict[str, Any]) -> None:
    print(json.dumps(data, sort_keys=True))


def _erase(args: argparse.Namespace) -> Callable[[Settings], Job]:
    async def body(settings: Settings) -> int:
        async with opened(settings) as records:
            purge_after = await records.erase(None, args.user_id)
        _print({"user_id": args.user_id, "pseudonymised": True, "purge_after_us": purge_after})
        return 0

    return body


def _export(args: argparse.Namespace) -> Callable[[Settings], Job]:
    async def body(settings: Settings) -> int:
        out = Path(args.out)
        async with opened(settings) as records:
            stream = await records.export(None, args.user_id)
            with open(out, "xb") as fh:  # noqa: ASYNC230 (a CLI: nothing else runs)
                async for block in stream:
                    fh.write(block)
        os.chmod(out, 0o600)
        _print({"user_id": args.user_id, "bundle": str(out)})
        return 0

    return body


def _retention(args: argparse.Namespace) -> Callable[[Settings], Job]:
    async def body(settings: Settings) -> int:
        from server.records.retention import run

        async with opened(settings) as records:
            report = await run(records)
        _print(report.as_dict())
        return 0

    return body


def _rotate(args: argparse.Namespace) -> Callable[[Settings], Job]:
    async def body(settings: Settings) -> int:
        from server.audit.events import Action, AuditEvent
        from server.records.rotation import rotate

        async with opened(settings) as records:
            report = await rotate(records.db, records.keys)
            records.access.recorder.record(AuditEvent(
                action=Action.ADMIN, role="operator", target_type="key",
                target_id=report.key_id, reason="key_rotation"))  # fmt: skip
        _print(report.as_dict())
        return 0

    return body


def _backup(args: argparse.Namespace, settings: Settings) -> int:
    from server.backup import BackupError, backup
    from server.store.migrate import current_revision_async

    try:
        settings = ensure_secrets(settings)
        revision = asyncio.run(current_revision_async(settings.effective_database_url))
        out = Path(args.out) if args.out else Path(settings.data_dir) / "backups"
        result = backup(settings, out, revision=revision)
    except (BackupError, CryptoError, OSError, SQLAlchemyError) as exc:
        print(f"medhub backup: {exc}", file=sys.stderr)
        return 2
    _print({"backup": str(result.path), "files": result.manifest["files"]})
    return 0


def _restore(args: argparse.Namespace, settings: Settings) -> int:
    from server.audit.checkpoints import FileCheckpointSink
    from server.audit.keys import keyring
    from server.audit.ops import verify_log
    from server.backup import BackupError, restore

    try:
        settings = ensure_secrets(settings)
        manifest = restore(settings, Path(args.path))

        async def verify() -> Any:
            async with Database(settings.effective_database_url, pool_size=1) as db:
                sink = FileCheckpointSink(settings.effective_checkpoint_path)
                return await verify_log(db, keyring(settings), sinks=[sink])

        result = asyncio.run(verify())
    except (BackupError, CryptoError, OSError, SQLAlchemyError) as exc:
        print(f"medhub restore: {exc}", file=sys.stderr)
        return 2
    _print({"restored": str(args.path), "revision": manifest.get("revision"),
            "audit_chain_intact": result.ok, "audit_entries": result.checked})  # fmt: skip
    if manifest.get("records_store") == "s3":
        print("medhub restore: document contents are in the S3 bucket: restore it too",
              file=sys.stderr)  # fmt: skip
    return 0 if result.ok else 1


def add_commands(subparsers: Any) -> None:
    """Add ``records``, ``retention``, ``backup``, ``restore`` and ``keys`` to ``medhub``."""

    def command(
        name: str, make: Callable[[argparse.Namespace], Callable[[Settings], Job]]
    ) -> Callable[[Any, Settings], int]:  # fmt: skip
        def func(args: argparse.Namespace, settings: Settings) -> int:
            return _run(name, make(args))(args, settings)

        return func

    records = subparsers.add_parser("records", help="medical records: erasure, access export")
    sub = records.add_subparsers(dest="records_command", required=True)
    p = sub.add_parser("erase", help="pseudonymise an account (a deletion request)")
    p.add_argument("user_id")
    p.set_defaults(func=command("records erase", _erase))
    p = sub.add_parser("export", help="everything about a patient (right of access), as a tar")
    p.add_argument("user_id")
    p.add_argument("--out", required=True, help="file to create (mode 0600)")
    p.set_defaults(func=command("records export", _export))

    retention = subparsers.add_parser("retention", help="apply the retention rules")
    sub = retention.add_subparsers(dest="retention_command", required=True)
    p = sub.add_parser("run", help="archive, purge, delete what is due; print what was done")
    p.set_defaults(func=command("retention run", _retention))

    p = subparsers.add_parser("backup", help="an encrypted, consistent snapshot + manifest")
    p.add_argument("--out", help="directory of backups (default: data_dir/backups)")
    p.set_defaults(func=_backup)
    p = subparsers.add_parser("restore", help="restore a backup into an empty deployment")
    p.add_argument("path", help="the backup directory (medhub-backup-...)")
    p.set_defaults(func=_restore)

    keys = subparsers.add_parser("keys", help="at-rest key rotation")
    sub = keys.add_subparsers(dest="keys_command", required=True)
    p = sub.add_parser("rotate", help="re-wrap and re-seal under the current at-rest key")
    p.set_defaults(func=command("keys rotate", _rotate))
