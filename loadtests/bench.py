"""The driver behind ``make bench``: run each benchmark section, write docs/benchmarks.md.

``python -m loadtests.bench --write docs/benchmarks.md`` runs every section in
order, one at a time (the machine is shared by client and servers), and writes
a header (how to reproduce, date, machine) followed by each section verbatim.
``--only ws`` runs one section; without ``--write`` the result is printed.

A section is a module with ``async def run() -> str`` returning markdown;
``--quick`` (short runs, one round: for development, never for the file)
is passed as ``run(quick=True)`` to the sections whose ``run`` takes it. A
section whose module does not exist yet is written as "not yet measured"; a
section that fails is written with its error and the exit code is 1, so a
broken benchmark never leaves old figures looking current.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import uvloop

#: Section name -> (module, title), in the order they run and are written.
SECTIONS: dict[str, tuple[str, str]] = {
    "ws": ("loadtests.bench_ws", "WebSocket: round trip and memory per idle socket"),
    "audit": ("loadtests.bench_audit", "Audit trail"),
    "rest": ("loadtests.bench_rest", "REST: authenticated read and write, open loop"),
    "connect": ("loadtests.bench_connect", "Connect and authenticate"),
    "chat_latency": ("loadtests.bench_chat_latency", "Chat latency: 20 members, open loop"),
    "chat": ("loadtests.bench_chat", "Chat fan-out: 10, 100 and 1,000 members"),
    "presence": ("loadtests.bench_presence", "Presence: refresh round and churn"),
    "eeg": ("loadtests.bench_eeg", "EEG: recorder-to-viewer latency, hub CPU, plain fan-out"),
    "calls": ("loadtests.bench_calls", "Calls: invite to connected, signalling relay"),
}


async def run_section(name: str, quick: bool = False) -> tuple[str, bool]:
    """Markdown of section ``name`` and whether it succeeded."""
    module_name, title = SECTIONS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return f"## {title}\n\nNot yet measured (`{module_name}` does not exist yet).\n", True
    run = cast(Callable[..., Awaitable[str]], module.run)
    kwargs = {"quick": True} if quick and "quick" in inspect.signature(run).parameters else {}
    started = time.monotonic()
    try:
        text = await run(**kwargs)
    except Exception:
        elapsed = time.monotonic() - started
        error = traceback.format_exc()
        return f"## {title}\n\n**Failed** after {elapsed:.0f} s:\n\n```\n{error}```\n", False
    return text if text.endswith("\n") else text + "\n", True


def header(names: list[str]) -> str:
    """How to reproduce, when, and on what machine."""
    from loadtests.servers import machine_facts

    only = "" if names == list(SECTIONS) else f" (sections run: {', '.join(names)})"
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        "Reproduce with `make bench`, which runs"
        " `.venv/bin/python -m loadtests.bench --write docs/benchmarks.md`;"
        " one section alone with `--only NAME`"
        f" ({', '.join(SECTIONS)}). This file is written by that command: do not edit it by hand.",
        "",
        f"Measured {now}{only}, on:",
        "",
    ]
    lines += [f"- {fact}" for fact in machine_facts()]
    lines += ["", "Sections run one after the other; each says how it measures."]
    return "\n".join(lines) + "\n"


async def main_async(names: list[str], quick: bool = False) -> tuple[str, bool]:
    parts = [header(names)]
    ok = True
    for name in names:
        print(f"bench: running section {name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        text, passed = await run_section(name, quick)
        ok = ok and passed
        print(
            f"bench: section {name} {'done' if passed else 'FAILED'}"
            f" in {time.monotonic() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        parts.append(text)
    return "\n".join(parts), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__)
    parser.add_argument("--write", metavar="PATH", help="write the markdown here (else print it)")
    parser.add_argument("--only", choices=list(SECTIONS), action="append", help="run one section")
    parser.add_argument(
        "--quick", action="store_true", help="short runs, one round (development only)"
    )
    args = parser.parse_args(argv)
    names: list[str] = args.only or list(SECTIONS)
    if args.quick and args.write:
        parser.error("--quick figures are not for docs/benchmarks.md: drop --write")
    text, ok = uvloop.run(main_async(names, args.quick))
    if args.write:
        Path(args.write).write_text(text)
        print(f"bench: wrote {args.write}", file=sys.stderr)
    else:
        print(text, end="")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
