"""``medhub-chat``: sign in, list presence, send to and tail a conversation.

    medhub-chat --server https://hub.example enrol CODE     # first time: password + TOTP
    medhub-chat --server https://hub.example login --email me@example.org
    medhub-chat presence [--user u-1 ...]        # default: my contacts
    medhub-chat conversations
    medhub-chat send CONV "text"                 # prints the seq once committed
    medhub-chat tail CONV [--after N]            # prints events until Ctrl-C

``enrol`` takes the one-time code of an invitation (or of
``medhub admin create-superadmin``), asks for a new password, prints the
``otpauth://`` URI to add to an authenticator app (and writes its QR code as
SVG with ``--qr FILE``), asks for the first code, and prints the recovery
codes once. ``login`` asks for the password, then the TOTP code, and stores the session
token in ``$XDG_CONFIG_HOME/medhub/session.json`` (default ``~/.config``),
mode 0600.

Errors a user can cause print one line on stderr saying what to do, never a
traceback. Exit codes: 0 ok; 1 refused (sign-in refused, session ended: log in
again, or an ``error`` from the hub); 2 usage; 3 no connection (the hub is
unreachable or dropped the connection: check ``--server`` or try again).
Commands give up connecting after ``--connect-timeout`` seconds (default 10).
Once ``tail`` is connected it survives hub restarts and network drops: it
reconnects by itself (one line on stderr when the connection is lost and one
when it is back) and misses nothing; it ends only on Ctrl-C or a session end.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clients.accounts import api_url
from clients.sdk import (
    MedhubClient,
    MedhubError,
    SessionEndedError,
    SignInError,
    TransportError,
    UnconfirmedError,
    accept_invitation,
    confirm_enrolment,
    sign_in,
)

DEFAULT_SERVER = "http://127.0.0.1:8000"
SESSION_CLOSE = 4010  # protocol/SPEC.md section 12: session revoked, or rights changed


def session_path() -> Path:
    """Where the session token is kept."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "medhub" / "session.json"


def save_session(server: str, token: str) -> Path:
    """Write the session file with mode 0600 (created so, never world-readable)."""
    path = session_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"server": server, "token": token}, fh)
    os.chmod(path, 0o600)
    return path


def load_session() -> dict[str, str]:
    """The stored session; raises SystemExit(2) when there is none."""
    try:
        data: dict[str, str] = json.loads(session_path().read_text())
    except (OSError, ValueError):
        raise SystemExit("not signed in: run `medhub-chat login` first") from None
    return data


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medhub-chat", description=__doc__.split("\n")[0])
    p.add_argument("--server", help="hub base URL (default: the one you logged in to)")
    p.add_argument("--json", action="store_true", help="print events as JSON lines")
    p.add_argument(
        "--connect-timeout", type=float, default=10.0, metavar="SECONDS",
        help="give up connecting after this many seconds (default 10)",
    )  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    enrol = sub.add_parser("enrol", help="first sign-in with a one-time code: password + TOTP")
    enrol.add_argument("code", help="the one-time invitation or enrolment code")
    enrol.add_argument("--qr", help="also write the TOTP QR code to this SVG file")
    login = sub.add_parser("login", help="sign in with password then TOTP")
    login.add_argument("--email", required=True)
    pres = sub.add_parser("presence", help="list presence (default: my contacts)")
    pres.add_argument("--user", action="append", default=[])
    sub.add_parser("conversations", help="my conversations with unread counts")
    send = sub.add_parser("send", help="send a message")
    send.add_argument("conv")
    send.add_argument("text")
    send.add_argument(
        "--id", dest="client_msg_id", default=None,
        help="client message id: sending again with the same id never duplicates",
    )  # fmt: skip
    tail = sub.add_parser("tail", help="print a conversation's events as they come")
    tail.add_argument("conv")
    tail.add_argument("--after", type=int, default=None, help="replay after this seq")
    return p


async def _login(args: argparse.Namespace, password: str, code: str) -> int:
    server = args.server or DEFAULT_SERVER
    info = await sign_in(server, args.email, password, code)
    path = save_session(server, info.token)
    print(f"signed in as {info.user_id} ({info.role}, {info.org_id}); session saved to {path}")
    return 0


def _enrol(args: argparse.Namespace) -> int:
    """Interactive first sign-in; the prompts run outside the event loop."""
    server = args.server or DEFAULT_SERVER
    password = getpass.getpass("New password (12+ characters, 4 classes): ")
    if getpass.getpass("Again: ") != password:
        print("medhub-chat: the passwords differ", file=sys.stderr)
        return 2
    enrolment = asyncio.run(accept_invitation(server, args.code, password))
    if args.qr:
        Path(args.qr).write_text(enrolment.qr_svg)
        print(f"QR code written to {args.qr}")
    print("Add this to your authenticator app, then type its first code:")
    print(f"  {enrolment.otpauth_uri}")
    code = input("TOTP code: ").strip()
    info, recovery = asyncio.run(confirm_enrolment(server, enrolment.challenge, code))
    path = save_session(server, info.token)
    print(f"enrolled {info.user_id} ({info.role}, {info.org_id}); session saved to {path}")
    print("Recovery codes (each works once; keep them offline):")
    for rc in recovery:
        print(f"  {rc}")
    return 0


def _show(event: Any, as_json: bool) -> None:
    data = event.data
    if as_json:
        import msgspec

        print(json.dumps({"ch": event.ch, "seq": event.seq, "kind": event.kind,
                          "data": msgspec.to_builtins(data)}), flush=True)  # fmt: skip
    elif event.kind == "message":
        print(f"[{event.seq}] {data.sender}: {data.text}", flush=True)
    elif event.kind == "edit":
        print(f"[{event.seq}] {data.sender} edited #{data.target}: {data.text}", flush=True)
    elif event.kind == "delete":
        print(f"[{event.seq}] {data.sender} deleted #{data.target}", flush=True)
    else:
        print(f"({event.kind}) {data}", flush=True)


def _status_printer() -> tuple[Callable[[MedhubError, float], None], Callable[[], None]]:
    """``on_retry`` / ``on_connected`` callbacks for ``tail``: one line per state change."""
    state = {"up": False, "seen": False}

    def on_retry(error: MedhubError, delay_s: float) -> None:
        if isinstance(error, TransportError) and error.close_code == SESSION_CLOSE:
            return  # rights changed (back at once) or session ended (the last line says so)
        if state["up"]:
            state["up"] = False
            print(f"medhub-chat: connection lost ({_detail(error)}); reconnecting",
                  file=sys.stderr, flush=True)  # fmt: skip

    def on_connected() -> None:
        if not state["up"] and state["seen"]:
            print("medhub-chat: reconnected", file=sys.stderr, flush=True)
        state["up"] = state["seen"] = True

    return on_retry, on_connected


async def _connected(args: argparse.Namespace) -> int:
    stored = load_session()
    args.server = args.server or stored["server"]
    client = MedhubClient(args.server, token=stored["token"])
    if args.command == "tail":
        client.on_retry, client.on_connected = _status_printer()
    try:
        await client.connect(timeout_s=args.connect_timeout)
        if args.command == "presence":
            states = await client.presence(args.user, contacts=not args.user)
            for s in states:
                seen = f"  last seen {s.last_seen}" if s.last_seen else ""
                print(f"{s.user:<24} {s.state}{seen}")
        elif args.command == "conversations":
            for c in await client.conversations():
                print(
                    f"{c['conv']}  {c['kind']:<12} unread {c['unread']:<4} {c.get('title') or ''}"
                )
        elif args.command == "send":
            print(await client.send_message(args.conv, args.text, client_msg_id=args.client_msg_id))
        elif args.command == "tail":
            if args.after is None:
                last = next(
                    (c["last_seq"] for c in await client.conversations() if c["conv"] == args.conv),
                    0,
                )
                args.after = max(0, last - 20)
            await client.follow(args.conv, after_seq=args.after)
            async for event in client.events():
                _show(event, args.json)
    finally:
        await client.close()
    return 0


def _detail(exc: BaseException) -> str:
    """The innermost SDK error's message (what actually failed), on one line."""
    while isinstance(exc.__cause__, MedhubError):
        exc = exc.__cause__
    return " ".join(str(exc).split()) or type(exc).__name__


def _explain(exc: MedhubError, args: argparse.Namespace) -> tuple[str, int]:
    """The one line to print for ``exc``, and the exit status."""
    server = args.server or DEFAULT_SERVER
    if isinstance(exc, SessionEndedError):
        if exc.code == "password_expired":
            return "your password has expired: change it, then run `medhub-chat login`", 1
        return "your session has ended (logged out, expired or revoked): run `medhub-chat login`", 1
    if isinstance(exc, UnconfirmedError):
        again = f"medhub-chat send --id {exc.client_msg_id} {args.conv} ..."
        return f"message not confirmed (no connection); send it again with `{again}`", 3
    if isinstance(exc, TransportError):
        return (
            f"no connection to the hub at {server} ({_detail(exc)}); "
            "check --server, or try again later"
        ), 3
    if isinstance(exc, SignInError) and exc.retryable:
        return f"{exc}; try again later", 3
    return str(exc), 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``medhub-chat``; returns the exit status (see the module docstring)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.server is not None:
        try:
            api_url(args.server)
        except ValueError:
            parser.error(f"--server must be an http:// or https:// URL, not {args.server!r}")
    try:
        if args.command == "enrol":
            return _enrol(args)
        if args.command == "login":
            password = getpass.getpass("Password: ")
            code = input("TOTP code: ").strip()
            return asyncio.run(_login(args, password, code))
        return asyncio.run(_connected(args))
    except MedhubError as exc:
        line, status = _explain(exc, args)
        print(f"medhub-chat: {line}", file=sys.stderr)
        return status
    except EOFError:
        print("medhub-chat: input ended before the prompt was answered", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
