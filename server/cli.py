"""The ``medhub`` command line: serve, migrate, config, and each subsystem's commands.

Each subsystem adds its own sub-commands through an ``add_commands(subparsers)``
function; a sub-command sets ``func(args, settings) -> int`` (the exit code).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from server.config import ConfigError, Settings, load_settings, redacted

Command = Callable[[argparse.Namespace, Settings], int]


def _cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(redacted(settings), indent=2, sort_keys=True))
    return 0


def _cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from server.store.migrate import upgrade_to_head

    upgrade_to_head(settings)
    print(f"database at head: {redacted(settings)['database_url'] or 'SQLite in data_dir'}")
    return 0


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from server.serve import serve

    return serve(settings, host=args.host, port=args.port, only=getattr(args, "only", None))


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every subsystem's commands."""
    parser = argparse.ArgumentParser(prog="medhub", description=__doc__)
    parser.add_argument("--config", help="TOML settings file (else MEDHUB_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the hub (WebSocket + REST sidecars)")
    p.add_argument("--host", help="override the host setting")
    p.add_argument("--port", type=int, help="override the port setting")
    p.add_argument("--only", choices=["accounts"], help="serve only this sidecar (no /ws)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("migrate", help="apply database migrations up to the newest")
    p.set_defaults(func=_cmd_migrate)

    p = sub.add_parser("config", help="print the effective settings, secrets redacted")
    p.set_defaults(func=_cmd_config)

    from server.audit.cli import add_commands as add_audit_commands

    add_audit_commands(sub)
    from server.accounts.cli import add_commands as add_accounts_commands

    add_accounts_commands(sub)
    from server.accounts.demo import add_commands as add_demo_commands

    add_demo_commands(sub)
    from server.records.cli import add_commands as add_records_commands

    add_records_commands(sub)  # records, retention, backup, restore, keys
    from server.app import CAPABILITIES
    from server.capability import add_capability_commands

    add_capability_commands(CAPABILITIES, sub)  # each capability's own commands
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medhub`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    os.umask(0o077)  # every file medhub creates (database, secrets, exports) is private
    try:
        settings = load_settings(config_file=args.config)
    except ConfigError as exc:
        print(f"medhub: configuration error: {exc}", file=sys.stderr)
        return 2
    func: Command = args.func
    return func(args, settings)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
