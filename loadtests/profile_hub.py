"""Diagnostics: a real-auth hub under REST or connect load, sampled by py-spy.

``python -m loadtests.profile_hub rest --endpoint read --rate 2000 --duration 15 --out F``
or ``python -m loadtests.profile_hub connect --duration 12 --out F`` starts the hub of
the REST (or connect) section with its seeded sessions, drives it with that section's
client, prints the hub's CPU per request (or socket) and, with ``--out``, records the hub
with ``py-spy record --format raw`` (py-spy must be installed; the sampling takes CPU
of its own, so latencies under ``--out`` are not figures). Not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from loadtests import bench_connect, bench_rest, seed
from loadtests.common import hub_args
from loadtests.servers import ServerProcess, cpu_seconds, running


async def _spy(
    server: ServerProcess, out: str | None, seconds: float
) -> asyncio.subprocess.Process | None:
    """py-spy recording ``server`` for ``seconds`` into ``out`` (None without ``out``)."""
    if out is None:
        return None
    exe = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if exe is None:
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    return await asyncio.create_subprocess_exec(
        exe, "record", "-p", str(server.pid), "-r", "100", "-d", str(int(seconds)),
        "--threads", "--format", "raw", "-o", out,
    )  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="medhub-profile-"))
    users = bench_rest.USERS if args.load == "rest" else bench_connect.USERS
    prepared = await seed.prepare(work / "db", users=users)
    seed.write_tokens(work / "tokens.json", prepared.tokens)
    settings = seed.hub_settings_file(work / "hub.json", prepared.secrets, prepared.db_path)
    notes: list[str] = []
    async with running("hub", work, notes, hub_args(settings, work / "monitor.json")) as server:
        spy = await _spy(server, args.out, args.duration)
        if args.load == "rest":
            cpu0 = cpu_seconds(server.pid)
            result = await bench_rest._client(server, args.endpoint, args.rate, args.duration, work)
            offered = args.rate * (args.duration + bench_rest.WARMUP_S)
            per = (cpu_seconds(server.pid) - cpu0) / offered * 1e6
            print(f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, errors "
                  f"{result['errors']}, hub CPU {per:.0f} µs per request")  # fmt: skip
        else:
            churn, _ = await bench_connect.churn(server, work, args.duration)
            print(f"{churn.rate:.0f} sockets/s, hub CPU {churn.server_us():.0f} µs per socket, "
                  f"errors {churn.errors}")  # fmt: skip
        if spy is not None:
            await spy.wait()
    for note in notes:
        print(note)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("load", choices=("rest", "connect"))
    parser.add_argument("--endpoint", choices=tuple(bench_rest.ENDPOINTS), default="read")
    parser.add_argument("--rate", type=float, default=2000.0, help="rest: requests/s offered")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    parser.add_argument("--out", help="py-spy raw output file (omit: no sampling)")
    import uvloop

    uvloop.run(main(parser.parse_args()))
