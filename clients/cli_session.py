"""``medhub-chat`` sign-in commands: enrol, login, logout, whoami, profiles.

Prompts run outside the event loop: passwords are read without echo at a
terminal (``getpass``), and as plain lines when the input is a pipe (a
script). A refused code is asked for again while its challenge lives (the
server keeps a login or enrolment challenge after a wrong code); a refused
password at enrolment is asked for again (the invitation is not spent by a
refusal).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from clients import profiles
from clients.accounts import (
    SessionInfo,
    accept_invitation,
    call,
    change_password,
    confirm_enrolment,
    directory,
    is_totp_code,
    mfa_step,
    password_step,
    reauthenticate,
    sign_out,
)
from clients.cli_text import USAGE, Refused, refusals, sentence, stamp
from clients.errors import ApiError, SignInError, TransportError

DEFAULT_SERVER = "http://127.0.0.1:8000"
#: Codes asked for at most this many times per run (a wrong one is asked for again).
CODE_TRIES = 5
#: New passwords asked for at most this many times per enrolment.
PASSWORD_TRIES = 3
#: A recovery code has at least this many characters (``xxxxx-xxxxx``).
RECOVERY_MIN_CHARS = 10

AddCommand = Callable[..., argparse.ArgumentParser]


def env_server() -> str | None:
    """``$MEDHUB_SERVER`` when set and not empty."""
    return os.environ.get("MEDHUB_SERVER") or None


def env_profile() -> str | None:
    """``$MEDHUB_PROFILE`` when set and not empty."""
    return os.environ.get("MEDHUB_PROFILE") or None


class Context:
    """One run of ``medhub-chat``: its arguments, its profile, its server."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.profile = profiles.load(args.profile) or profiles.Profile(name=args.profile)

    @property
    def server(self) -> str:
        """--server, else $MEDHUB_SERVER, else the profile's server, else the default."""
        return str(
            self.args.server or env_server() or self.profile.server or DEFAULT_SERVER
        ).rstrip("/")

    def command(self, rest: str) -> str:
        """How to type ``medhub-chat [--profile NAME] <rest>`` for this profile."""
        if self.profile.name == profiles.DEFAULT:
            return f"medhub-chat {rest}"
        return f"medhub-chat --profile {self.profile.name} {rest}"

    def token(self) -> str:
        """The saved session token; raises :class:`Refused` when not signed in."""
        if not self.profile.token:
            raise Refused(f"not signed in: run `{self.command('login')}` first")
        return self.profile.token


def ask_secret(prompt: str) -> str:
    """A password: without echo at a terminal, else one line of the input (a pipe).

    Raises EOFError when the input ends first.
    """
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return input(prompt)


def say(line: str = "") -> None:
    """One line on stdout, at once (a pipe or a person sees it now)."""
    print(line, flush=True)


def warn(line: str) -> None:
    """One ``medhub-chat: ...`` line on stderr."""
    print(f"medhub-chat: {line}", file=sys.stderr, flush=True)


async def name_of(server: str, token: str, user_id: str) -> str:
    """``user_id``'s display name, or the id itself when the directory cannot tell."""
    try:
        found = await directory(server, token, [user_id])
    except (ApiError, TransportError):
        return user_id
    person = found.get(user_id)
    return person.name if person else user_id


# -- shared steps -------------------------------------------------------------------------
T = TypeVar("T")


def choose_password(apply: Callable[[str], T]) -> T:
    """Ask for a new password twice and ``apply`` it; asked again when the policy refuses it.

    Raises :class:`Refused` after :data:`PASSWORD_TRIES` refusals.
    """
    for _ in range(PASSWORD_TRIES):
        password = ask_secret(
            "New password (12+ characters with lower and upper case, digits, symbols): "
        )
        if ask_secret("The same password again: ") != password:
            warn("the two passwords differ; type them again")
            continue
        try:
            return apply(password)
        except (SignInError, ApiError) as exc:
            if not exc.code.startswith("password_"):
                raise
            warn(f"{sentence(exc.code)}; type another")
    raise Refused("no password was accepted; run the same command again", USAGE)


def add_to_app(
    ctx: Context, challenge: str, otpauth_uri: str, qr_svg: str
) -> tuple[SessionInfo, list[str]]:
    """Show the TOTP secret, ask for the app's first code (again if refused), confirm it.

    Returns the session and the recovery codes. Raises :class:`Refused` when
    the enrolment expired or no valid code came.
    """
    if getattr(ctx.args, "qr", None):
        Path(ctx.args.qr).write_text(qr_svg)
        say(f"QR code written to {ctx.args.qr}")
    say("Add this to your authenticator app (or scan the QR code), then type the code it shows:")
    say(f"  {otpauth_uri}")
    for attempt in range(1, CODE_TRIES + 1):
        code = input("Code from your authenticator app: ").strip()
        if not is_totp_code(code):
            warn("the code is the 6 digits the app shows; type it again")
            continue
        try:
            return asyncio.run(confirm_enrolment(ctx.server, challenge, code))
        except SignInError as exc:
            if exc.code == "challenge_invalid":
                raise Refused(
                    "the enrolment took too long and expired: start again, or ask your "
                    "administrator to invite you again (`medhub-chat admin reinvite`)"
                ) from exc
            if exc.code != "mfa_failed" or attempt == CODE_TRIES:
                raise
            warn(
                "that code was not accepted: check the app's clock, wait for the next code "
                "and type it"
            )
    raise Refused("no valid code was typed; start again", USAGE)


def _signed_in(ctx: Context, info: SessionInfo, email: str | None, what: str) -> None:
    """Save the session in the profile and say who is signed in."""
    p = ctx.profile
    p.server, p.token = ctx.server, info.token
    p.email = email or p.email
    p.user_id, p.org_id, p.role = info.user_id, info.org_id, info.role
    path = profiles.save(p)
    who = asyncio.run(name_of(ctx.server, info.token, info.user_id))
    say(f"{what} as {who} ({info.role}) on {ctx.server}; session saved to {path}")


def _recovery_codes(codes: list[str]) -> None:
    say("Recovery codes: each works once in place of the app's code; keep them offline:")
    for rc in codes:
        say(f"  {rc}")


# -- enrol --------------------------------------------------------------------------------
def enrol(ctx: Context) -> int:
    """First sign-in with a one-time code: password, authenticator app, recovery codes."""
    enrolment = choose_password(
        lambda password: asyncio.run(accept_invitation(ctx.server, ctx.args.code, password))
    )
    info, recovery = add_to_app(ctx, enrolment.challenge, enrolment.otpauth_uri, enrolment.qr_svg)
    _signed_in(ctx, info, None, "enrolled and signed in")
    _recovery_codes(recovery)
    return 0


# -- login --------------------------------------------------------------------------------
def login(ctx: Context) -> int:
    """Password, then the app's code or a recovery code; saves the session in the profile.

    After an MFA reset the server asks for a new authenticator app instead; after
    a forced password reset (or an expired staff password) a new password is
    asked for before anything else.
    """
    server = ctx.server
    email = ctx.args.email or ctx.profile.email or input("Email: ").strip()
    password = ask_secret("Password: ")
    step = asyncio.run(password_step(server, email, password))
    if step.next == "enrol":
        say("Your authenticator app was reset by an administrator: add your account to it again.")
        info, recovery = add_to_app(ctx, step.challenge, step.otpauth_uri, step.qr_svg)
        _recovery_codes(recovery)
    else:
        info = _mfa(server, step.challenge)
    if info.restricted == "password_expired":
        say("Your password must be changed now (it expired, or an administrator asked for it).")
        choose_password(lambda new: asyncio.run(change_password(server, info.token, new)))
        say("password changed")
    _signed_in(ctx, info, email, "signed in")
    for notice in info.notices:
        say(notice_text(notice))
    return 0


def _mfa(server: str, challenge: str) -> SessionInfo:
    """Ask for the app's code or a recovery code (again when refused) and spend ``challenge``."""
    for attempt in range(1, CODE_TRIES + 1):
        code = input("Code from your authenticator app (or a recovery code): ").strip()
        if not is_totp_code(code) and len(code) < RECOVERY_MIN_CHARS:
            warn("type the 6 digits your app shows, or a recovery code (xxxxx-xxxxx)")
            continue
        try:
            return asyncio.run(mfa_step(server, challenge, code))
        except SignInError as exc:
            if exc.code != "mfa_failed" or attempt == CODE_TRIES:
                raise
            warn(f"{sentence('mfa_failed')}; try again")
    raise Refused("no valid code was typed; run the same command again", USAGE)


async def confirmed(ctx: Context, action: Callable[[], Awaitable[T]]) -> T:
    """Run ``action``; when the server wants a recent sign-in, ask for the password and
    code (``POST /reauth``) and run it once more."""
    try:
        return await action()
    except ApiError as exc:
        if exc.code != "reauth_required":
            raise
    say("This change needs you to confirm your password and authenticator code.")
    password = await asyncio.to_thread(ask_secret, "Your password: ")
    code = (await asyncio.to_thread(input, "Code from your authenticator app: ")).strip()
    with refusals(auth_failed="wrong password or code: nothing was changed"):
        await reauthenticate(ctx.server, ctx.token(), password, code)
    return await action()


def password(ctx: Context) -> int:
    """Change my password (asks for the current one and a code when the server wants it)."""
    token = ctx.token()

    def apply(new: str) -> None:
        asyncio.run(confirmed(ctx, lambda: change_password(ctx.server, token, new)))

    choose_password(apply)
    say("password changed; your other sessions have ended")
    return 0


def notice_text(notice: dict[str, object]) -> str:
    """A sign-in notice in words."""
    if notice.get("code") == "account_locked_recently":
        at = notice.get("at")
        when = f" on {stamp(float(at))}" if isinstance(at, int | float) else ""
        failures = notice.get("failures")
        count = f" after {failures} failed sign-in attempts" if failures else ""
        return (
            f"note: your account was locked{when}{count}. If that was not you, "
            "tell your administrator and change your password."
        )
    return f"note from the server: {notice.get('code')}"


# -- logout, whoami, profiles ------------------------------------------------------------------
def logout(ctx: Context) -> int:
    """End the session on the server and forget it here (the server and email stay saved)."""
    if not ctx.profile.token:
        say(f"not signed in (profile {ctx.profile.name})")
        return 0
    asyncio.run(sign_out(ctx.server, ctx.profile.token))
    ctx.profile.token = ""
    profiles.save(ctx.profile)
    say(f"signed out (profile {ctx.profile.name})")
    return 0


def whoami(ctx: Context) -> int:
    """Who this profile is signed in as, where; checks the session with the server."""

    async def go() -> str:
        token = ctx.token()
        me = await call(ctx.server, "GET", "/session", token)
        who = await name_of(ctx.server, token, str(me["user_id"]))
        return f"{who} ({me['role']}, organisation {me['org_id']}, user {me['user_id']})"

    say(f"profile {ctx.profile.name}: {asyncio.run(go())} on {ctx.server}")
    return 0


def list_profiles(ctx: Context) -> int:
    """The saved profiles: email, server, signed in or not."""
    found = profiles.names()
    if not found:
        say("no profiles yet: sign in with `medhub-chat --profile NAME login`")
        return 0
    for name in found:
        p = profiles.load(name) or profiles.Profile(name=name)
        state = "signed in" if p.token else "signed out"
        say(f"{name:<16} {p.email or '-':<32} {p.server or '-':<28} {state}")
    return 0


def add_commands(add: AddCommand) -> None:
    """The sign-in commands of the ``medhub-chat`` parser."""
    p = add(
        "enrol",
        "first sign-in with the one-time code from your administrator",
        "First sign-in with the one-time code from your administrator: choose a password,\n"
        "add the account to an authenticator app (otpauth:// link, or --qr FILE), type the\n"
        "code it shows (asked again if wrong), and keep the recovery codes printed at the\n"
        "end. The session is saved in the profile, with the server (--server, else\n"
        f"$MEDHUB_SERVER, else the profile's server, else {DEFAULT_SERVER}).",
    )
    p.add_argument("code", metavar="CODE", help="the one-time invitation or enrolment code")
    p.add_argument("--qr", metavar="FILE", help="also write the QR code to this SVG file")
    p.set_defaults(run=enrol)
    p = add(
        "login",
        "sign in: password, then the code of your authenticator app",
        "Sign in: asks for the password, then for the 6-digit code of your authenticator\n"
        "app (or one of your recovery codes, each usable once), and saves the session in\n"
        "the profile. The server is --server, else $MEDHUB_SERVER, else the server this\n"
        f"profile last signed in to (or enrolled on), else {DEFAULT_SERVER}.",
    )
    p.add_argument("--email", help="your email (default: the profile's last one, else asked for)")
    p.set_defaults(run=login)
    p = add("password", "change my password")
    p.set_defaults(run=password)
    p = add("logout", "sign out: end the session on the server and forget it here")
    p.set_defaults(run=logout)
    p = add("whoami", "who the profile is signed in as, and on which server")
    p.set_defaults(run=whoami)
    p = add("profiles", "list the saved profiles (one per person on this machine)")
    p.set_defaults(run=list_profiles)
