"""``medhub eeg ...``: exports and listings from this machine's database.

- ``medhub eeg export STREAM PATH``: the recording (live, finished, or left by a
  crashed hub) as EDF+, or BDF+ when 16 bits cannot hold its range
  (:mod:`server.eeg.export`); prints what it wrote as JSON.
- ``medhub eeg streams EXAM``: the exam's recordings (id, state, rate, format,
  channels, samples stored), as JSON.

Like ``medhub admin``, these commands open the database directly (whoever can
run them can read it anyway); an export is audited with no actor.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from typing import Any

from server.config import Settings, ensure_secrets


async def _export(settings: Settings, sid: str, path: str) -> dict[str, Any]:
    from server.audit.events import Action, AuditEvent
    from server.audit.trail import AuditTrail
    from server.eeg.export import export_stream
    from server.security.at_rest import settings_keyring
    from server.store.db import Database

    async with Database(settings.effective_database_url) as db:
        done = await export_stream(db, settings_keyring(settings), sid, path)
        trail = AuditTrail.from_settings(settings, db)
        await trail.start()
        try:
            await trail.record_durable(
                AuditEvent(action=Action.EXPORT, target_type="eeg_stream", target_id=sid)
            )
        finally:
            await trail.close()
    return dataclasses.asdict(done)


async def _streams(settings: Settings, exam: str) -> list[dict[str, Any]]:
    from server.eeg import store
    from server.store.db import Database

    async with Database(settings.effective_database_url) as db:
        found = await db.run(lambda c: store.streams_of(c, [exam]), readonly=True)
    return [dataclasses.asdict(s) for s in found.get(exam, [])]


def _cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from server.eeg.store import NotFound

    try:
        out = asyncio.run(_export(ensure_secrets(settings), args.stream, args.path))
    except NotFound:
        print(f"medhub: no stream {args.stream}")
        return 1
    print(json.dumps(out, indent=2))
    return 0


def _cmd_streams(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(asyncio.run(_streams(ensure_secrets(settings), args.exam)), indent=2))
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``medhub eeg export`` and ``medhub eeg streams``."""
    p: argparse.ArgumentParser = subparsers.add_parser("eeg", help="EEG recordings")
    sub = p.add_subparsers(dest="eeg_command", required=True)
    e = sub.add_parser("export", help="a recording as EDF+ (BDF+ past 16 bits)")
    e.add_argument("stream", help="stream id (t-xxxxxxxx)")
    e.add_argument("path", help="file to write")
    e.set_defaults(func=_cmd_export)
    s = sub.add_parser("streams", help="the recordings of an exam")
    s.add_argument("exam", help="exam id")
    s.set_defaults(func=_cmd_streams)
