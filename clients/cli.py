"""``medhub-chat``: medhub from a terminal: sign in, chat, presence, and everyday administration.

    medhub-chat enrol CODE                       # first time: password + authenticator app
    medhub-chat login --email me@example.org     # password, then the app's code
    medhub-chat conversations                    # my conversations, unread counts
    medhub-chat consult CONSULTATION "hello"     # a consultation's conversation (+ a message)
    medhub-chat open USER                        # a conversation with one person
    medhub-chat send CONV "text"                 # sends; says its number (#seq) once committed
    medhub-chat history CONV [--before N]        # a page of messages, older pages on request
    medhub-chat tail CONV                        # prints new messages until Ctrl-C
    medhub-chat admin users                      # for admins: users, invitations, care, ...

Names are shown instead of ids, times as local dates. ``--profile NAME`` keeps
a separate saved session per person (several people on one machine).

Errors a user can cause print one line on stderr saying what to do, never a
traceback. Exit codes: 0 ok; 1 refused (sign-in refused, session ended: log in
again, or a refusal from the server); 2 usage; 3 no connection (the server is
unreachable, dropped the connection or is temporarily unavailable: check
``--server`` or try again). Commands give up connecting after
``--connect-timeout`` seconds (default 10). Once ``tail`` is connected it
survives server restarts and network drops and misses nothing.
"""

from __future__ import annotations

import argparse
import sys

from clients import cli_admin, cli_chat, cli_session
from clients.accounts import api_url
from clients.cli_text import USAGE, Refused, explain
from clients.errors import MedhubError
from clients.profiles import DEFAULT as DEFAULT_PROFILE
from clients.profiles import path_of

DEFAULT_SERVER = cli_session.DEFAULT_SERVER

EPILOG = f"""\
where commands go:
  The server is --server URL, else $MEDHUB_SERVER, else the server saved in the
  profile by its last login or enrol, else {DEFAULT_SERVER}.
  A profile (--profile NAME, else $MEDHUB_PROFILE, else "default") keeps one
  person's session in ~/.config/medhub/ (mode 0600): sign in once per profile.

first steps:
  medhub-chat --profile doctor enrol CODE        (the code your administrator gave you)
  medhub-chat --profile doctor login --email alice@clinic.example
  medhub-chat --profile doctor conversations

exit status: 0 done, 1 refused (read the message), 2 wrong usage,
3 no connection to the server (check --server, or try again later)
"""


def _common(*, defaults: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name."""
    d = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    g.add_argument(
        "--profile", metavar="NAME", default=d(None),
        help='whose saved session to use (default: $MEDHUB_PROFILE, else "default")',
    )  # fmt: skip
    g.add_argument(
        "--server", metavar="URL", default=d(None),
        help=f"the medhub server, http(s)://host[:port] (default: $MEDHUB_SERVER, else the "
        f"profile's server, else {DEFAULT_SERVER})",
    )  # fmt: skip
    g.add_argument(
        "--json", action="store_true", default=d(False),
        help="print JSON lines (for scripts) instead of text",
    )  # fmt: skip
    g.add_argument(
        "--connect-timeout", type=float, default=d(10.0), metavar="SECONDS",
        help="give up connecting after this many seconds (default 10)",
    )  # fmt: skip
    return p


def build_parser() -> argparse.ArgumentParser:
    """The ``medhub-chat`` parser (every option has help)."""
    common = _common(defaults=False)
    p = argparse.ArgumentParser(
        prog="medhub-chat",
        description="Chat, presence and everyday administration of medhub, from a terminal.",
        epilog=EPILOG,
        parents=[_common(defaults=True)],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_,
            description=description or help_,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    cli_session.add_commands(add)
    cli_chat.add_commands(add)
    cli_admin.add_commands(add, common)
    return p


def _server_ok(parser: argparse.ArgumentParser, server: str | None, where: str) -> None:
    if server is None:
        return
    try:
        api_url(server)
    except ValueError:
        parser.error(f"{where} must be an http:// or https:// URL, not {server!r}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``medhub-chat``; returns the exit status (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _server_ok(parser, args.server, "--server")
    _server_ok(parser, cli_session.env_server(), "$MEDHUB_SERVER")
    args.profile = args.profile or cli_session.env_profile() or DEFAULT_PROFILE
    try:
        path_of(args.profile)
    except ValueError as exc:
        parser.error(str(exc))
    ctx = cli_session.Context(args)
    try:
        return int(args.run(ctx))
    except Refused as exc:
        print(f"medhub-chat: {exc.line}", file=sys.stderr)
        return exc.status
    except MedhubError as exc:
        line, status = explain(exc, ctx.server, getattr(args, "conv", None), ctx.command("login"))
        print(f"medhub-chat: {line}", file=sys.stderr)
        return status
    except EOFError:
        print("medhub-chat: input ended before the prompt was answered", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # e.g. `medhub-chat history ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
