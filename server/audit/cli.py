"""``medhub audit ...``: verify, export, stats, purge.

Exit codes: 0 success (``verify``: the chain is intact); 1 ``verify`` found a
break / ``purge`` refused because the chain is broken; 2 an operational error
(database unreachable or not migrated, bad key, bad argument).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy.exc import SQLAlchemyError

from server.audit import ops
from server.audit.checkpoints import FileCheckpointSink
from server.audit.events import Action, AuditEvent
from server.audit.keys import AuditKeyError, current_key, keyring
from server.audit.trail import AuditTrail, utc_now
from server.config import Settings, ensure_secrets
from server.store.db import Database


def _when(raw: str) -> datetime:
    """An ISO 8601 date or datetime; naive means UTC."""
    try:
        at = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date/time: {raw!r}") from exc
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _run(settings: Settings, body: Callable[[Settings, Database], Awaitable[int]]) -> int:
    """Open the database, run ``body``, map operational errors to exit code 2."""

    async def main() -> int:
        async with Database(settings.effective_database_url, pool_size=2) as db:
            return await body(settings, db)

    try:
        return asyncio.run(main())
    except (AuditKeyError, ValueError) as exc:
        print(f"medhub audit: {exc}", file=sys.stderr)
    except (SQLAlchemyError, LookupError, OSError) as exc:
        print(f"medhub audit: database error ({type(exc).__name__}): {exc}", file=sys.stderr)
    return 2


async def _verify(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    paths = args.checkpoints or [settings.effective_checkpoint_path]
    sinks = [FileCheckpointSink(p) for p in paths]
    result = await ops.verify_log(
        db, keyring(settings), sinks=sinks, from_seq=args.from_seq, to_seq=args.to_seq
    )
    malformed = sum(s.malformed for s in sinks)
    if malformed:
        print(f"warning: {malformed} malformed checkpoint line(s) ignored", file=sys.stderr)
    if result.first_break is not None:
        brk = result.first_break
        print(f"audit chain BROKEN at seq {brk.seq}: {brk.kind.value} ({brk.detail})")
        return 1
    span = f"seq {result.first_seq}..{result.last_seq}" if result.checked else "no entries"
    print(
        f"audit chain intact: {result.checked} entries ({span}), "
        f"{result.checkpoints_checked} checkpoint(s) matched"
    )
    return 0


def _trail(settings: Settings, db: Database) -> AuditTrail:
    return AuditTrail.from_settings(settings, db)


async def _export(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    trail = _trail(settings, db)
    await trail.start()
    try:
        await trail.record_durable(
            AuditEvent(action=Action.AUDIT_EXPORT, actor=args.actor, role="operator",
                       org=args.org, target_type="org", target_id=args.org)
        )  # fmt: skip
    finally:
        await trail.close()
    out = sys.stdout.buffer
    async for line in ops.export_lines(db, org=args.org, start=args.start, end=args.end):
        out.write(line)
    out.flush()
    return 0


async def _stats(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    out = sys.stdout.buffer
    for line in await ops.usage_stats(db, start=args.start, end=args.end):
        out.write(msgspec.json.encode(line) + b"\n")
    out.flush()
    return 0


async def _purge(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    key_id, _ = current_key(settings)
    node = settings.effective_node_id
    try:
        result = await ops.purge(
            db, key_id=key_id, keyring=keyring(settings), node=node,
            sink=FileCheckpointSink(settings.effective_checkpoint_path), now=utc_now(),
            retention_days=settings.audit_retention_days,
        )  # fmt: skip
    except ops.PurgeRefusedError as exc:
        print(f"medhub audit: {exc}", file=sys.stderr)
        return 1
    trail = _trail(settings, db)
    await trail.start()
    try:
        anchor = "none" if result.anchor is None else f"seq-{result.anchor.seq}"
        await trail.record_durable(
            AuditEvent(action=Action.AUDIT_PURGE, actor=args.actor, role="operator",
                       target_type="audit_anchor", target_id=anchor)
        )  # fmt: skip
    finally:
        await trail.close()
    through = "nothing old enough" if result.anchor is None else f"through seq {anchor[4:]}"
    print(f"purged {result.purged} entries ({through}; cutoff {result.cutoff.isoformat()})")
    return 0


def _command(
    body: Callable[[argparse.Namespace, Settings, Database], Awaitable[int]],
) -> Callable[[argparse.Namespace, Settings], int]:
    def func(args: argparse.Namespace, settings: Settings) -> int:
        try:
            settings = ensure_secrets(settings)
        except (OSError, ValueError) as exc:
            print(f"medhub audit: cannot read secrets: {exc}", file=sys.stderr)
            return 2

        async def bound(s: Settings, db: Database) -> int:
            return await body(args, s, db)

        return _run(settings, bound)

    return func


def add_commands(subparsers: Any) -> None:
    """Add ``audit verify|export|stats|purge`` to the ``medhub`` parser."""
    audit = subparsers.add_parser("audit", help="verify, export, summarise or purge the audit log")
    sub = audit.add_subparsers(dest="audit_command", required=True)

    p = sub.add_parser("verify", help="check the HMAC chain; exit 0 only when intact")
    p.add_argument("--from-seq", type=int, help="first seq of the range (default: all)")
    p.add_argument("--to-seq", type=int, help="last seq of the range (default: all)")
    p.add_argument(
        "--checkpoints", action="append", metavar="PATH",
        help="checkpoint file(s) to check against (repeatable; default: the configured one)",
    )  # fmt: skip
    p.set_defaults(func=_command(_verify))

    p = sub.add_parser("export", help="one organisation's entries as JSON lines on stdout")
    p.add_argument("--org", required=True, help="organisation id")
    p.add_argument("--from", dest="start", type=_when, required=True, help="ISO date/time (UTC)")
    p.add_argument("--to", dest="end", type=_when, required=True, help="ISO date/time, exclusive")
    p.add_argument("--actor", help="pseudonymous id of the operator (recorded)")
    p.set_defaults(func=_command(_export))

    p = sub.add_parser("stats", help="anonymous counts by hour, action and result (JSON lines)")
    p.add_argument("--from", dest="start", type=_when, help="ISO date/time (UTC)")
    p.add_argument("--to", dest="end", type=_when, help="ISO date/time, exclusive")
    p.set_defaults(func=_command(_stats))

    p = sub.add_parser("purge", help="delete entries past audit_retention_days (never < 366)")
    p.add_argument("--actor", help="pseudonymous id of the operator (recorded)")
    p.set_defaults(func=_command(_purge))
