"""``medhub admin ...``: the accounts administration of this machine's database.

For the operator of the server (no login: whoever can run ``medhub`` with its
settings can read its database anyway). Each command migrates the database,
opens the stores, the broker and the audit trail, runs, and closes them.
Every change is audited with no actor (the CLI operator) and reaches running
nodes through the access change log.

One validation for both doors: the arguments go through the same msgspec
Structs as the REST bodies (:func:`server.accounts.schemas.parse`) and ids
through the same check as the API's paths, and the commands call the same
service methods as the REST routes; an error prints one line
(``medhub admin: <code>: <message>``, the API's code and message) on stderr
and exits 1. Invitation tokens are printed once, to stdout, for the operator
to hand over out of band; they are never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import msgspec

from server.accounts.errors import ApiError
from server.accounts.routes import user_out
from server.accounts.schemas import (
    CareCreate,
    DelegationCreate,
    InviteRequest,
    OrgCreate,
    UserList,
    parse,
)
from server.accounts.web import check_id
from server.config import Settings
from server.policy import RelationKind, Relationship, Role, Scope

if TYPE_CHECKING:
    from server.app import Components

Action = Callable[["Components", argparse.Namespace], Awaitable[int]]


async def with_components(settings: Settings, args: argparse.Namespace, action: Action) -> int:
    """Run ``action`` with the components open (database migrated first); its exit code.

    An :class:`ApiError` it raises prints one line on stderr and gives 1.
    """
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
        print(f"medhub admin: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await c.audit.close()
        await c.broker.close()
        await c.database.close()
        c.accounts.hasher.close()


def _run(action: Action) -> Callable[[argparse.Namespace, Settings], int]:
    def func(args: argparse.Namespace, settings: Settings) -> int:
        return asyncio.run(with_components(settings, args, action))

    return func


def when(us: int) -> str:
    """A time (microseconds since the epoch) as a local date and time."""
    return datetime.fromtimestamp(us / 1_000_000).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> None:
    """Print ``rows`` under ``headers`` in aligned columns, or ``empty`` when none."""
    if not rows:
        print(empty)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for line in (headers, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


# -- bootstrap and organisations ----------------------------------------------------------
async def _create_superadmin(c: Components, args: argparse.Namespace) -> int:
    body = parse(InviteRequest, {"role": "superadmin", "name": args.name, "email": args.email})
    admin = c.accounts.admin
    try:
        inv = await admin.create_superadmin(body.name, body.email)
        print(f"superadmin {inv.user.id} created in organisation {inv.user.org_id}")
    except ApiError as exc:
        found = await admin.store.user_by_email(body.email) if exc.code == "conflict" else None
        unfinished = found is not None and (found.status != "active" or not found.totp_secret)
        if found is None or found.role != Role.SUPERADMIN or not unfinished:
            raise
        inv = await c.accounts.recovery.reinvite(None, found.id)
        print(f"superadmin {found.id} had not finished enrolling: its earlier codes are void")
    print(f"one-time enrolment code (valid until {when(inv.expires_us)}):")
    print(inv.token)
    print("to set the password and enrol TOTP:")
    print(f"  .venv/bin/medhub-chat --server http://{c.settings.host}:{c.settings.port} enrol CODE")
    return 0


async def _org_create(c: Components, args: argparse.Namespace) -> int:
    body = parse(OrgCreate, {"name": args.name})
    org = await c.accounts.admin.create_org(None, body.name)
    print(org.id)
    return 0


async def _org_list(c: Components, args: argparse.Namespace) -> int:
    orgs = await c.accounts.admin.store.list_orgs()
    rows = [[o.id, "disabled" if o.disabled else "active", o.name] for o in orgs]
    table(["ID", "STATE", "NAME"], rows, "no organisations yet")
    return 0


# -- users ----------------------------------------------------------------------------------
async def _user_invite(c: Components, args: argparse.Namespace) -> int:
    body = parse(
        InviteRequest,
        {"role": args.role, "name": args.name, "email": args.email, "phone": args.phone},
    )
    inv = await c.accounts.admin.invite(
        None, check_id(args.org), role=body.role, name=body.name, email=body.email,
        phone=body.phone,
    )  # fmt: skip
    print(f"user {inv.user.id} invited; one-time invitation code (valid until "
          f"{when(inv.expires_us)}):")  # fmt: skip
    print(inv.token)
    return 0


async def _user_list(c: Components, args: argparse.Namespace) -> int:
    org = check_id(args.org) if args.org else None
    views = await c.accounts.admin.list_users(None, org)
    if args.json:
        print(msgspec.json.encode(UserList([user_out(v) for v in views])).decode())
        return 0
    names = {o.id: o.name for o in await c.accounts.admin.store.list_orgs()}
    rows = []
    for v in views:
        u = v.user
        row = [u.id, u.name, u.email, u.role, u.status, "locked" if v.locked else "-"]
        rows.append([*row, when(u.created_us), *([] if org else [names.get(u.org_id, u.org_id)])])
    headers = ["ID", "NAME", "EMAIL", "ROLE", "STATE", "LOCKED", "CREATED"]
    table([*headers, *([] if org else ["ORGANISATION"])], rows, "no users")
    return 0


def _user_action(name: str) -> Action:
    """A ``user <action> USER_ID`` command calling the service method the route calls."""

    async def action(c: Components, args: argparse.Namespace) -> int:
        user_id = check_id(args.user_id)
        a, r = c.accounts.admin, c.accounts.recovery
        if name == "reinvite":
            inv = await r.reinvite(None, user_id)
            print(f"user {user_id} re-invited; earlier codes are void. One-time invitation "
                  f"code (valid until {when(inv.expires_us)}):")  # fmt: skip
            print(inv.token)
            return 0
        if name == "disable":
            await a.disable(None, user_id)
            done = "disabled; sessions revoked"
        elif name == "enable":
            view = await r.enable(None, user_id)
            done = f"enabled ({view.user.status})"
        elif name == "reset-mfa":
            await r.reset_mfa(None, user_id)
            done = "MFA reset; sessions revoked; the next login enrols a new authenticator"
        elif name == "force-password-reset":
            await r.force_password_reset(None, user_id)
            done = "sessions revoked; the next login must change the password"
        else:
            await a.unlock(None, user_id)
            done = "unlocked"
        print(f"user {user_id} {done}")
        return 0

    return action


# -- care relationships and delegations --------------------------------------------------------
async def _who(c: Components, user_ids: Sequence[str]) -> dict[str, str]:
    """``Name (id)`` of each user id (the operator sees every name)."""
    out = {}
    for uid in dict.fromkeys(user_ids):
        user = await c.accounts.admin.store.get_user(uid)
        out[uid] = f"{user.name} ({uid})" if user else uid
    return out


async def _care_add(c: Components, args: argparse.Namespace) -> int:
    body = parse(
        CareCreate,
        {"kind": args.kind, "actor_id": args.actor, "patient_id": args.patient, "ref_id": args.ref},
    )
    rel = Relationship(body.kind, body.actor_id, body.patient_id, body.ref_id)
    print(await c.accounts.admin.add_care(None, rel))
    return 0


async def _care_end(c: Components, args: argparse.Namespace) -> int:
    await c.accounts.admin.end_care(None, check_id(args.rel_id))
    print(f"care relationship {args.rel_id} ended")
    return 0


async def _care_list(c: Components, args: argparse.Namespace) -> int:
    found = await c.accounts.admin.list_care(None, check_id(args.org))
    if args.json:
        rels = [
            {"id": i, "kind": r.kind, "actor_id": r.actor_id, "patient_id": r.patient_id,
             "ref_id": r.ref_id}
            for i, r in found
        ]  # fmt: skip
        print(msgspec.json.encode({"relationships": rels}).decode())
        return 0
    who = await _who(c, [u for _, r in found for u in (r.actor_id, r.patient_id)])
    rows = [[i, r.kind, who[r.actor_id], who[r.patient_id], r.ref_id or "-"] for i, r in found]
    table(["ID", "KIND", "ACTOR", "PATIENT", "REF"], rows, "no care relationships")
    return 0


async def _delegation_grant(c: Components, args: argparse.Namespace) -> int:
    body = parse(
        DelegationCreate,
        {"practitioner_id": args.practitioner, "delegate_id": args.delegate, "scopes": args.scope},
    )
    admin = c.accounts.admin
    scopes = [str(s) for s in body.scopes]
    print(await admin.grant_delegation(None, body.practitioner_id, body.delegate_id, scopes))
    return 0


async def _delegation_revoke(c: Components, args: argparse.Namespace) -> int:
    await c.accounts.admin.revoke_delegation(None, check_id(args.delegation_id))
    print(f"delegation {args.delegation_id} revoked")
    return 0


async def _delegation_list(c: Components, args: argparse.Namespace) -> int:
    found = await c.accounts.admin.list_delegations(None, check_id(args.org))
    if args.json:
        items = [
            {"id": d.id, "practitioner_id": d.practitioner_id, "delegate_id": d.delegate_id,
             "scopes": sorted(d.scopes)}
            for d in found
        ]  # fmt: skip
        print(msgspec.json.encode({"delegations": items}).decode())
        return 0
    who = await _who(c, [u for d in found for u in (d.practitioner_id, d.delegate_id)])
    rows = [
        [d.id, who[d.practitioner_id], who[d.delegate_id], ",".join(sorted(d.scopes))]
        for d in found
    ]
    table(["ID", "PRACTITIONER", "DELEGATE", "SCOPES"], rows, "no delegations")
    return 0


USER_ACTIONS = {
    "disable": "disable the account; its sessions end at once",
    "enable": "enable a disabled account again",
    "reinvite": "print a new one-time invitation code; the account enrols again "
    "(for accounts that never finished enrolling, or disabled ones)",
    "reset-mfa": "forget the authenticator app and recovery codes; the next login enrols a new one",
    "force-password-reset": "end the sessions; the next login must change the password",
    "unlock": "lift the temporary locks after failed sign-ins",
}


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``admin ...`` to the ``medhub`` parser."""
    admin = subparsers.add_parser(
        "admin", help="accounts administration (on this machine's database)"
    )
    sub = admin.add_subparsers(dest="admin_command", required=True)

    p = sub.add_parser("create-superadmin", help="create a superadmin; print an enrolment code")
    p.add_argument("--name", required=True, help="the person's full name")
    p.add_argument("--email", required=True, help="their email (their login)")
    p.set_defaults(func=_run(_create_superadmin))

    org = sub.add_parser("org", help="organisations").add_subparsers(dest="org_cmd", required=True)
    p = org.add_parser("create", help="create an organisation; print its id")
    p.add_argument("name", help="the organisation's name (shown in authenticator apps)")
    p.set_defaults(func=_run(_org_create))
    p = org.add_parser("list", help="list organisations")
    p.set_defaults(func=_run(_org_list))

    user = sub.add_parser("user", help="users").add_subparsers(dest="user_cmd", required=True)
    p = user.add_parser("invite", help="invite a user; print a one-time invitation code")
    p.add_argument("--org", required=True, help="organisation id (o-...)")
    p.add_argument("--role", required=True, choices=[r.value for r in Role if r != Role.SUPERADMIN])
    p.add_argument("--name", required=True, help="the person's full name")
    p.add_argument("--email", required=True, help="their email (their login)")
    p.add_argument("--phone", default="", help="their phone number (optional)")
    p.set_defaults(func=_run(_user_invite))
    p = user.add_parser("list", help="list users with their role and state")
    p.add_argument("--org", help="only this organisation (o-...)")
    p.add_argument("--json", action="store_true", help="JSON, as GET /api/v1/users answers")
    p.set_defaults(func=_run(_user_list))
    for name, text in USER_ACTIONS.items():
        p = user.add_parser(name, help=text)
        p.add_argument("user_id", help="the user's id (u-...)")
        p.set_defaults(func=_run(_user_action(name)))

    care = sub.add_parser("care", help="care relationships (who looks after which patient)")
    cs = care.add_subparsers(dest="care_cmd", required=True)
    p = cs.add_parser("add", help="record a care relationship; print its id")
    p.add_argument("--kind", required=True, choices=[k.value for k in RelationKind])
    p.add_argument("--actor", required=True, help="practitioner, technician or interpreter id")
    p.add_argument("--patient", required=True, help="the patient's id")
    p.add_argument("--ref", help="consultation or EEG exam id (for those kinds)")
    p.set_defaults(func=_run(_care_add))
    p = cs.add_parser("end", help="end a care relationship (the rights it gave end at once)")
    p.add_argument("rel_id", help="the relationship's id (r-...)")
    p.set_defaults(func=_run(_care_end))
    p = cs.add_parser("list", help="live care relationships of an organisation")
    p.add_argument("--org", required=True, help="organisation id (o-...)")
    p.add_argument("--json", action="store_true", help="JSON output for scripts")
    p.set_defaults(func=_run(_care_list))

    deleg = sub.add_parser("delegation", help="delegations from practitioners to secretaries")
    ds = deleg.add_subparsers(dest="delegation_cmd", required=True)
    p = ds.add_parser("grant", help="a practitioner delegates scopes to a secretary; print its id")
    p.add_argument("--practitioner", required=True, help="the delegating practitioner's id")
    p.add_argument("--delegate", required=True, help="the secretary's id")
    p.add_argument(
        "--scope", required=True, action="append", choices=[s.value for s in Scope],
        help="what the secretary may do (repeat for several)",
    )  # fmt: skip
    p.set_defaults(func=_run(_delegation_grant))
    p = ds.add_parser("revoke", help="revoke a delegation (effective at once)")
    p.add_argument("delegation_id", help="the delegation's id (d-...)")
    p.set_defaults(func=_run(_delegation_revoke))
    p = ds.add_parser("list", help="live delegations of an organisation")
    p.add_argument("--org", required=True, help="organisation id (o-...)")
    p.add_argument("--json", action="store_true", help="JSON output for scripts")
    p.set_defaults(func=_run(_delegation_list))
