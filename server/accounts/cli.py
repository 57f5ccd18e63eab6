"""``medhub admin ...``: bootstrap the superadmin, manage organisations and users.

Each command migrates the database, opens the stores, the broker and the audit
trail (every change is audited with no actor: the CLI operator), runs, and
closes them. Invitation tokens are printed once, to stdout, for the operator
to hand over out of band; they are never logged.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from server.accounts.errors import ApiError
from server.config import Settings
from server.policy import Role

if TYPE_CHECKING:
    from server.app import Components

Action = Callable[["Components", argparse.Namespace], Awaitable[int]]


async def _with_components(settings: Settings, args: argparse.Namespace, action: Action) -> int:
    from server.app import build_components
    from server.store.migrate import upgrade_to_head_async

    c = build_components(settings)
    await upgrade_to_head_async(
        c.settings.effective_database_url, at_rest_key=c.settings.secret_at_rest_key
    )
    await c.database.connect()
    await c.broker.start()
    await c.audit.start()
    try:
        return await action(c, args)
    except ApiError as exc:
        print(f"medhub admin: {exc.code}: {exc.message}")
        return 1
    finally:
        await c.audit.close()
        await c.broker.close()
        await c.database.close()
        c.accounts.hasher.close()


def _run(action: Action) -> Callable[[argparse.Namespace, Settings], int]:
    def func(args: argparse.Namespace, settings: Settings) -> int:
        return asyncio.run(_with_components(settings, args, action))

    return func


async def _create_superadmin(c: Components, args: argparse.Namespace) -> int:
    inv = await c.accounts.admin.create_superadmin(args.name, args.email)
    print(f"superadmin {inv.user.id} created in organisation {inv.user.org_id}")
    until = datetime.fromtimestamp(inv.expires_us / 1_000_000, UTC).isoformat(timespec="minutes")
    print(f"one-time enrolment code (valid until {until}):")
    print(inv.token)
    print("to set the password and enrol TOTP:")
    print(f"  .venv/bin/medhub-chat --server http://{c.settings.host}:{c.settings.port} enrol CODE")
    return 0


async def _org_create(c: Components, args: argparse.Namespace) -> int:
    org = await c.accounts.admin.create_org(None, args.name)
    print(org.id)
    return 0


async def _org_list(c: Components, args: argparse.Namespace) -> int:
    for org in await c.accounts.admin.store.list_orgs():
        print(f"{org.id}\t{'disabled' if org.disabled else 'active'}\t{org.name}")
    return 0


async def _user_invite(c: Components, args: argparse.Namespace) -> int:
    inv = await c.accounts.admin.invite(
        None, args.org, role=args.role, name=args.name, email=args.email, phone=args.phone
    )
    print(f"user {inv.user.id} invited; one-time invitation code:")
    print(inv.token)
    return 0


async def _user_list(c: Components, args: argparse.Namespace) -> int:
    for u in await c.accounts.admin.store.list_users(args.org):
        print(f"{u.id}\t{u.org_id}\t{u.role}\t{u.status}")
    return 0


async def _user_disable(c: Components, args: argparse.Namespace) -> int:
    user = await c.accounts.admin.disable(None, args.user_id)
    print(f"user {user.id} disabled; sessions revoked")
    return 0


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``admin ...`` to the ``medhub`` parser."""
    admin = subparsers.add_parser("admin", help="accounts administration")
    sub = admin.add_subparsers(dest="admin_command", required=True)

    p = sub.add_parser("create-superadmin", help="create a superadmin; print an enrolment code")
    p.add_argument("--name", required=True)
    p.add_argument("--email", required=True)
    p.set_defaults(func=_run(_create_superadmin))

    org = sub.add_parser("org", help="organisations").add_subparsers(dest="org_cmd", required=True)
    p = org.add_parser("create", help="create an organisation; print its id")
    p.add_argument("name")
    p.set_defaults(func=_run(_org_create))
    p = org.add_parser("list", help="list organisations")
    p.set_defaults(func=_run(_org_list))

    user = sub.add_parser("user", help="users").add_subparsers(dest="user_cmd", required=True)
    p = user.add_parser("invite", help="invite a user; print a one-time invitation code")
    p.add_argument("--org", required=True)
    p.add_argument("--role", required=True, choices=[r.value for r in Role if r != Role.SUPERADMIN])
    p.add_argument("--name", required=True)
    p.add_argument("--email", required=True)
    p.add_argument("--phone", default="")
    p.set_defaults(func=_run(_user_invite))
    p = user.add_parser("list", help="list users (of one organisation with --org)")
    p.add_argument("--org")
    p.set_defaults(func=_run(_user_list))
    p = user.add_parser("disable", help="disable a user; revoke their sessions")
    p.add_argument("user_id")
    p.set_defaults(func=_run(_user_disable))
