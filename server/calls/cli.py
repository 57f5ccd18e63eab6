"""``medhub calls ...``: call records for support, and the test-call echo account.

- ``medhub calls show CALL``: one call's record (who called whom, when, how it
  ended, the parties' quality reports), as JSON.
- ``medhub calls list --conv CONV | --consultation ID``: the newest records.
- ``medhub calls echo-account``: make sure the echo service account exists and
  print its user id (for ``calls_echo_users``). The account is a
  ``technician`` (a staff role with no clinical access of its own: it sees no
  record, and rule 7 lets anyone test-call it) in an organisation of its own,
  "Test calls". Its first-run credentials (user id, email, one-time invitation)
  go to ``<data_dir>/echo-peer.json`` (mode 0600), which ``medhub-call echo``
  reads: it accepts the invitation, enrols TOTP and keeps its password and TOTP
  secret there. ``--new`` makes a fresh account (e.g. after the invitation
  expired unused).

Like ``medhub admin``, these commands open this machine's database directly
(whoever can run them can read it anyway); changes are audited with no actor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.config import Settings, ensure_secrets

if TYPE_CHECKING:
    from server.accounts.module import Accounts
    from server.store.db import Database

#: The role of echo service accounts (staff, no clinical access of its own).
ECHO_ROLE = "technician"
ECHO_ORG_NAME = "Test calls"
ECHO_NAME = "Test call (echo)"


@dataclass
class Components:
    """What these commands use: the settings, the database, the accounts services."""

    settings: Settings
    database: Database
    accounts: Accounts


Action = Callable[[Components, argparse.Namespace], Awaitable[int]]


def echo_credentials_path(settings: Settings, given: str | None) -> Path:
    """Where the echo peer's credentials live (``<data_dir>/echo-peer.json`` by default)."""
    return Path(given) if given else Path(settings.data_dir) / "echo-peer.json"


def write_private(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path``, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    os.chmod(path, 0o600)


async def _with_components(settings: Settings, args: argparse.Namespace, action: Action) -> int:
    """Run ``action`` with the stores open (migrated first), then close them.

    Builds only what the commands need (not the composition root, which
    imports this capability: no import loop).
    """
    from server.accounts.module import build_accounts
    from server.audit.trail import AuditTrail
    from server.broker import create_broker
    from server.store.db import Database
    from server.store.migrate import upgrade_to_head_async

    settings = ensure_secrets(settings)
    database = Database(settings.effective_database_url, pool_size=1)
    broker = create_broker(settings)
    audit = AuditTrail.from_settings(settings, database)
    accounts = build_accounts(settings, database, broker, audit)
    await upgrade_to_head_async(
        settings.effective_database_url, at_rest_key=settings.secret_at_rest_key
    )
    await database.connect()
    await broker.start()
    await audit.start()
    try:
        return await action(Components(settings, database, accounts), args)
    finally:
        await audit.close()
        await broker.close()
        await database.close()
        accounts.hasher.close()


def _run(action: Action) -> Callable[[argparse.Namespace, Settings], int]:
    def func(args: argparse.Namespace, settings: Settings) -> int:
        return asyncio.run(_with_components(settings, args, action))

    return func


async def _show(c: Components, args: argparse.Namespace) -> int:
    from server.calls import records

    found = await c.database.run(lambda conn: records.get(conn, args.call), readonly=True)
    if found is None:
        print(f"medhub calls: not_found: no call {args.call}", file=sys.stderr)
        return 1
    print(json.dumps(found, indent=2, sort_keys=True))
    return 0


async def _list(c: Components, args: argparse.Namespace) -> int:
    from server.calls import records

    if args.conv:
        rows = await c.database.run(
            lambda conn: records.of_conversation(conn, args.conv, limit=args.limit), readonly=True
        )
    else:
        rows = await c.database.run(
            lambda conn: records.of_consultation(conn, args.consultation), readonly=True
        )
    print(json.dumps(rows, indent=2, sort_keys=True))
    return 0


async def _echo_account(c: Components, args: argparse.Namespace) -> int:
    path = echo_credentials_path(c.settings, args.credentials)
    admin = c.accounts.admin
    creds: dict[str, Any] = {}
    if path.exists() and not args.new:
        creds = json.loads(path.read_text())
        user = await admin.store.get_user(str(creds.get("user_id", "")))
        if user is not None and user.status in ("active", "invited"):
            print(user.id)
            return 0
    org_id = str(creds.get("org_id") or "")
    if not org_id or await admin.store.get_org(org_id) is None:
        org_id = (await admin.create_org(None, ECHO_ORG_NAME)).id
    email = args.email or f"echo-{secrets.token_hex(4)}@test-calls.medhub.invalid"
    inv = await admin.invite(None, org_id, role=ECHO_ROLE, name=ECHO_NAME, email=email)
    write_private(
        path, {"user_id": inv.user.id, "org_id": org_id, "email": email, "invitation": inv.token}
    )
    print(inv.user.id)
    print(f"echo account created; credentials in {path}", file=sys.stderr)
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``medhub calls ...``."""
    calls = subparsers.add_parser("calls", help="call records (support) and the echo account")
    sub = calls.add_subparsers(dest="calls_cmd", required=True)
    p = sub.add_parser("show", help="one call's record and quality reports (JSON)")
    p.add_argument("call", help="call id")
    p.set_defaults(func=_run(_show))
    p = sub.add_parser("list", help="the newest call records of a conversation or consultation")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--conv", help="conversation id")
    group.add_argument("--consultation", help="consultation id")
    p.add_argument("--limit", type=int, default=50, help="records at most (default 50)")
    p.set_defaults(func=_run(_list))
    p = sub.add_parser(
        "echo-account", help="ensure the test-call echo account exists; print its user id"
    )
    p.add_argument("--credentials", help="credentials file (default <data_dir>/echo-peer.json)")
    p.add_argument("--email", help="the account's email (default: a random .invalid address)")
    p.add_argument("--new", action="store_true", help="make a new account even if one exists")
    p.set_defaults(func=_run(_echo_account))
