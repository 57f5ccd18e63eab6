"""``medhub-chat admin ...``: everyday administration over the accounts API (no WebSocket).

For an organisation's admins (a superadmin names ``--org``): users and their
state, invitations and re-invitations, disable / enable, unlock, MFA reset,
forced password change, care relationships (a consultation is a care
relationship with an id) and delegations to secretaries (a practitioner may
grant and list their own). Every change is audited by the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from clients.accounts import call, directory_all
from clients.admin import AdminApi
from clients.cli_session import AddCommand, Context, confirmed, say
from clients.cli_text import refusals, stamp, table
from clients.errors import ApiError, TransportError

Command = Callable[[Context, AdminApi], Awaitable[int]]

USER_REFUSALS = dict(
    not_found="no such user in your organisation: check the id (`medhub-chat admin users`)",
    forbidden="only your organisation's administrators may do that",
)


def admin(command: Command) -> Callable[[Context], int]:
    """A command run with the profile's session against the accounts API."""

    async def go(ctx: Context) -> int:
        return await command(ctx, AdminApi(ctx.server, ctx.token()))

    return lambda ctx: asyncio.run(go(ctx))


async def _me(ctx: Context, api: AdminApi) -> tuple[str, str]:
    """The signed-in user's organisation and role (saved at sign-in, else asked)."""
    if ctx.profile.org_id and ctx.profile.role:
        return ctx.profile.org_id, ctx.profile.role
    me = await call(api.base_url, "GET", "/session", api.token)
    return str(me["org_id"]), str(me["role"])


async def _org(ctx: Context, api: AdminApi) -> str:
    """``--org``, else the signed-in admin's own organisation."""
    if getattr(ctx.args, "org", None):
        return str(ctx.args.org)
    return (await _me(ctx, api))[0]


async def _who(api: AdminApi, *users: str) -> dict[str, str]:
    """``Name (u-...)`` of each of ``users`` (one directory request per 100), or the id
    alone when the directory cannot tell."""
    try:
        found = await directory_all(api.base_url, api.token, users)
    except (ApiError, TransportError):
        found = {}
    return {u: f"{found[u].name} ({u})" if u in found else u for u in users}


def _invitation(name: str, code: str, until: float | None, ctx: Context) -> None:
    valid = f" (valid until {stamp(until)})" if until else ""
    say(f"one-time invitation code for {name}{valid}:")
    say(f"  {code}")
    say(f"give it to them in person or by phone; they run `medhub-chat --server {ctx.server} "
        "enrol CODE`")  # fmt: skip


# -- users -------------------------------------------------------------------------------------
async def users(ctx: Context, api: AdminApi) -> int:
    """The users of the organisation: name, role, state, since when."""
    org = await _org(ctx, api)
    with refusals(**USER_REFUSALS):
        found = await api.users(org)
    if ctx.args.json:
        for u in found:
            print(json.dumps(u, ensure_ascii=False), flush=True)
        return 0
    if not found:
        say("no users yet: invite one with `medhub-chat admin invite`")
        return 0
    rows = []
    for u in sorted(found, key=lambda u: (str(u.get("name") or "").casefold(), u.get("id"))):
        state = str(u.get("status") or "?") + (", locked" if u.get("locked") else "")
        created = u.get("created_at")
        since = stamp(float(created)) if isinstance(created, int | float) and created else ""
        rows.append([str(u.get("name") or "?"), str(u.get("email") or ""),
                     str(u.get("role") or "?"), state, since, str(u.get("id"))])  # fmt: skip
    for line in table(["NAME", "EMAIL", "ROLE", "STATE", "CREATED", "ID"], rows):
        say(line)
    return 0


async def invite(ctx: Context, api: AdminApi) -> int:
    """Invite a person; prints the one-time code they enrol with."""
    a = ctx.args
    org = await _org(ctx, api)
    with refusals(
        conflict=f"{a.email} is already used by another account",
        forbidden=f"you may not invite a {a.role} here",
        not_found=f"no organisation {org} (or not visible to you)",
        bad_request="the server refused these values: check the email, name and phone",
    ):
        out = await api.invite(org, role=a.role, name=a.name, email=a.email, phone=a.phone)
    say(f"invited {a.name} ({a.role}) as {out['user_id']}")
    _invitation(a.name, str(out["invitation_token"]), out.get("expires_at_us"), ctx)
    return 0


async def reinvite(ctx: Context, api: AdminApi) -> int:
    """A new one-time code for someone whose invitation expired or went wrong."""
    with refusals(
        **USER_REFUSALS,
        conflict="they are enrolled and active: reset their authenticator app instead "
        "(`medhub-chat admin reset-mfa USER`)",
    ):
        out = await confirmed(ctx, lambda: api.reinvite(ctx.args.user))
    who = (await _who(api, ctx.args.user))[ctx.args.user]
    _invitation(who, str(out["invitation"]), out.get("expires_at"), ctx)
    return 0


def _user_action(call_name: str, done: str, conflict: str) -> Command:
    """``admin <action> USER``: one POST on the user, then one sentence.

    ``conflict``: what a ``409`` means for this action (the account is not in a
    state it applies to). A request for a recent sign-in is answered at once.
    """

    async def run(ctx: Context, api: AdminApi) -> int:
        with refusals(**USER_REFUSALS, conflict=conflict):
            out: dict[str, Any] = await confirmed(
                ctx, lambda: getattr(api, call_name)(ctx.args.user)
            )
        say(f"{(await _who(api, ctx.args.user))[ctx.args.user]} {done}")
        if out.get("invitation"):
            _invitation("them", str(out["invitation"]), out.get("expires_at"), ctx)
        return 0

    return run


# -- care and delegation -----------------------------------------------------------------------
async def care_add(ctx: Context, api: AdminApi) -> int:
    """Record that a practitioner follows a patient, or holds a consultation with them."""
    a = ctx.args
    kind = a.kind or ("consultation" if a.consultation else "follows")
    with refusals(
        not_found=USER_REFUSALS["not_found"],
        forbidden="these roles do not fit (a practitioner and a patient of one organisation), "
        "or you are not an administrator of it",
        bad_request="the server refused these values (a consultation id is letters, digits, "
        "'.', '_', ':', '-')",
    ):
        rid = await api.add_care(kind, a.actor, a.patient, a.consultation)
    what = f"consultation {a.consultation}" if a.consultation else kind.replace("_", " ")
    who = await _who(api, a.actor, a.patient)
    say(f"care relationship {rid} recorded: {who[a.actor]}, {who[a.patient]}, {what}")
    return 0


async def care_list(ctx: Context, api: AdminApi) -> int:
    """The organisation's live care relationships, with names."""
    org = await _org(ctx, api)
    with refusals(**USER_REFUSALS):
        found = await api.care(org)
    if ctx.args.json:
        for r in found:
            print(json.dumps(r), flush=True)
        return 0
    if not found:
        say("no care relationships yet: record one with `medhub-chat admin care add`")
        return 0
    who = await _who(api, *(u for r in found for u in (r["actor_id"], r["patient_id"])))
    for r in found:
        what = f"consultation {r['ref_id']}" if r.get("ref_id") else str(r["kind"])
        say(f"{r['id']}  {who[r['actor_id']]}, {who[r['patient_id']]}: {what.replace('_', ' ')}")
    return 0


async def care_end(ctx: Context, api: AdminApi) -> int:
    """End a care relationship (the rights it gave end at once)."""
    with refusals(not_found="no such care relationship in your organisation"):
        await api.end_care(ctx.args.rel)
    say(f"care relationship {ctx.args.rel} ended")
    return 0


async def delegation_grant(ctx: Context, api: AdminApi) -> int:
    """Let a secretary act for a practitioner (consultations, contact, records)."""
    a = ctx.args
    with refusals(
        not_found=USER_REFUSALS["not_found"],
        forbidden="only a practitioner (or their administrator) delegates, to a secretary of "
        "the same organisation",
    ):
        did = await api.grant_delegation(a.practitioner, a.secretary, a.scope)
    who = await _who(api, a.secretary, a.practitioner)
    say(f"delegation {did}: {who[a.secretary]} acts for {who[a.practitioner]} "
        f"({', '.join(a.scope)})")  # fmt: skip
    return 0


async def delegation_revoke(ctx: Context, api: AdminApi) -> int:
    """Revoke a delegation (effective at once)."""
    with refusals(not_found="no such delegation (or not visible to you)"):
        await api.revoke_delegation(ctx.args.delegation)
    say(f"delegation {ctx.args.delegation} revoked")
    return 0


async def delegation_list(ctx: Context, api: AdminApi) -> int:
    """The organisation's delegations (admins), else the ones I gave or received."""
    admins = ("admin", "superadmin")
    org = await _org(ctx, api) if ctx.args.org or (await _me(ctx, api))[1] in admins else None
    found = await api.delegations(org)
    if ctx.args.json:
        for d in found:
            print(json.dumps(d), flush=True)
        return 0
    if not found:
        say("no delegations")
        return 0
    who = await _who(api, *(u for d in found for u in (d["delegate_id"], d["practitioner_id"])))
    for d in found:
        say(f"{d['id']}  {who[d['delegate_id']]} acts for {who[d['practitioner_id']]} "
            f"({', '.join(d['scopes'])})")  # fmt: skip
    return 0


ROLES = ["patient", "secretary", "practitioner", "technician", "interpreter", "admin"]


def add_commands(add: AddCommand, common: argparse.ArgumentParser) -> None:
    """``admin ...`` in the ``medhub-chat`` parser."""
    top = add("admin", "administration: users, invitations, care relationships, delegations")
    sub = top.add_subparsers(dest="admin_command", required=True, metavar="ACTION")

    def action(name: str, help_: str, parent: Any = sub) -> argparse.ArgumentParser:
        return parent.add_parser(name, help=help_, description=help_, parents=[common])  # type: ignore[no-any-return]

    def user_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("user", metavar="USER", help="the user's id (u-..., see `admin users`)")

    p = action("users", "the organisation's users: name, role, state (invited, locked...)")
    p.add_argument("--org", help="the organisation's id (default: mine; superadmins)")
    p.set_defaults(run=admin(users))

    p = action("invite", "invite a person; prints the one-time code they enrol with")
    p.add_argument("--role", required=True, choices=ROLES, help="their role")
    p.add_argument("--name", required=True, help="their full name, as others will see it")
    p.add_argument("--email", required=True, help="their email (they sign in with it)")
    p.add_argument("--phone", default="", help="their phone number (optional)")
    p.add_argument("--org", help="the organisation's id (default: mine; superadmins)")
    p.set_defaults(run=admin(invite))

    p = action("reinvite", "a new one-time code (invitation expired, enrolment went wrong)")
    user_arg(p)
    p.set_defaults(run=admin(reinvite))

    for name, help_, call_name, done, conflict in (
        ("disable", "disable an account: its sessions end at once", "disable",
         "disabled: their sessions have ended", "the account cannot be disabled now"),
        ("enable", "enable a disabled account again", "enable", "enabled: they can sign in",
         "the account is not disabled"),
        ("unlock", "lift a temporary lock after failed sign-ins", "unlock",
         "unlocked: they can sign in again now", "the account is not locked"),
        ("reset-mfa", "reset the authenticator app (lost phone): at their next sign-in "
         "they add their account to an app again", "reset_mfa",
         "must add their account to an authenticator app again at their next sign-in",
         "they have not enrolled yet: re-invite them (`medhub-chat admin reinvite USER`)"),
        ("force-password-reset", "make them choose a new password at their next sign-in "
         "(their sessions end now)", "force_password_reset",
         "must choose a new password at their next sign-in; their sessions have ended",
         "they have no password yet: re-invite them (`medhub-chat admin reinvite USER`)"),
    ):  # fmt: skip
        p = action(name, help_)
        user_arg(p)
        p.set_defaults(run=admin(_user_action(call_name, done, conflict)))

    care = action("care", "care relationships (who treats whom; consultations)")
    csub = care.add_subparsers(dest="care_command", required=True, metavar="ACTION")
    p = action("add", "record a care relationship between a practitioner and a patient", csub)
    p.add_argument("actor", metavar="PRACTITIONER", help="the practitioner's (or EEG staff's) id")
    p.add_argument("patient", metavar="PATIENT", help="the patient's id")
    p.add_argument(
        "--consultation", metavar="ID",
        help="a consultation with this id (its conversation: `medhub-chat consult ID`)",
    )  # fmt: skip
    p.add_argument(
        "--kind", choices=["follows", "consultation", "eeg_technician", "eeg_interpreter"],
        help="the kind (default: consultation with --consultation, else follows; the EEG "
        "kinds take the exam's id in --consultation)",
    )  # fmt: skip
    p.set_defaults(run=admin(care_add))
    p = action("list", "the organisation's care relationships", csub)
    p.add_argument("--org", help="the organisation's id (default: mine; superadmins)")
    p.set_defaults(run=admin(care_list))
    p = action("end", "end a care relationship (its rights end at once)", csub)
    p.add_argument("rel", metavar="ID", help="the relationship's id (printed by `care add`)")
    p.set_defaults(run=admin(care_end))

    dele = action("delegation", "delegations from practitioners to secretaries")
    dsub = dele.add_subparsers(dest="delegation_command", required=True, metavar="ACTION")
    p = action("grant", "let a secretary act for a practitioner", dsub)
    p.add_argument("practitioner", metavar="PRACTITIONER", help="the practitioner's id")
    p.add_argument("secretary", metavar="SECRETARY", help="the secretary's id")
    p.add_argument(
        "--scope", action="append", required=True,
        choices=["consultations", "contact", "records"],
        help="what they may do for the practitioner (repeat for several)",
    )  # fmt: skip
    p.set_defaults(run=admin(delegation_grant))
    p = action("revoke", "revoke a delegation (effective at once)", dsub)
    p.add_argument("delegation", metavar="ID", help="the delegation's id")
    p.set_defaults(run=admin(delegation_revoke))
    p = action("list", "the organisation's delegations (admins), else mine", dsub)
    p.add_argument("--org", help="the organisation's id (default: mine; superadmins)")
    p.set_defaults(run=admin(delegation_list))
