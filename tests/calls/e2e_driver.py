"""End-to-end calls with real WebRTC: ``python -m tests.calls.e2e_driver WORKDIR``.

Runs inside a private network namespace that has only ``lo`` (see
``tests/calls/test_e2e.py`` and ../shared/webrtc-testing.md), with:

- a hub process (:mod:`tests.calls.e2e_hub`),
- two coturn servers: one sharing the hub's TURN secret, one with another secret,
- aiortc peers in this process, each driven through the SDK (``clients.calls``)
  with its own client and socket, trickling their candidates through the hub,
- the ``medhub-call`` echo service and a ``medhub-call dial --echo`` in processes
  of their own.

Prints one JSON object: each scenario's findings (or its error), the call
records the hub wrote, and the coturn logs' refusals.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import traceback
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from clients.call_peer import IceFailedError, Summary, answer, dial, measure
from clients.calls import Call, Calls
from clients.sdk import MedhubClient
from media.peer import MediaPeer, use_loopback_only
from tests.calls.coturn import Coturn, start_coturn
from tests.hubtest import token_for

SECRET = "e2e-turn-secret-0123456789"
WRONG = "not-the-hub-secret-987654"
STEP_S = 15.0
FRAMES = 10


class Hub:
    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process, self.port = process, port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def start_hub(workdir: Path, turn: Coturn) -> Hub:
    settings = {
        "calls_turn_urls": [turn.url], "secret_turn": SECRET, "calls_echo_users": ["echo"],
        "calls_grace_s": 10.0, "ws_rate_per_s": 10000.0, "ws_rate_burst": 10000,
    }  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.calls.e2e_hub", str(workdir / "hub"), json.dumps(settings),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if not line.startswith(b"READY "):
        raise RuntimeError(f"hub did not start: {line!r}")
    return Hub(proc, int(line.split()[1]))


async def stop_hub(hub: Hub) -> list[dict[str, Any]]:
    assert hub.process.stdin is not None
    assert hub.process.stdout is not None
    hub.process.stdin.write(b"STOP\n")
    await hub.process.stdin.drain()
    records: list[dict[str, Any]] = []
    while line := await asyncio.wait_for(hub.process.stdout.readline(), 60):
        if line.startswith(b"RECORDS "):
            records = json.loads(line[len(b"RECORDS ") :])
    await hub.process.wait()
    return records


async def client(hub: Hub, user: str) -> tuple[MedhubClient, Calls]:
    c = MedhubClient(hub.url, token=token_for(user), use_ticket=False, backoff_initial_s=0.05)
    calls = Calls(c)
    await c.connect(STEP_S)
    return c, calls


async def changes_until(call: Call, kinds: set[str], seen: list[str]) -> None:
    async for change in call.changes():
        seen.append(change.kind)
        if change.kind in kinds:
            kinds.discard(change.kind)
        if not kinds:
            return


async def two_party(
    hub: Hub, *, relay_only: bool = False, servers: list[dict[str, Any]] | None = None,
    drop_callee: bool = False,
) -> dict[str, Any]:  # fmt: skip
    (ac, alice), (bc, bob) = await client(hub, "alice"), await client(hub, "bob")
    out: dict[str, Any] = {}
    try:
        conv = await ac.create_conversation("direct", ["bob"])
        pa = MediaPeer(servers if servers is not None else await alice.ice_servers(),
                       relay_only=relay_only, size=(256, 192))  # fmt: skip
        pb = MediaPeer(servers if servers is not None else await bob.ice_servers(),
                       relay_only=relay_only, size=(256, 192))  # fmt: skip
        callee_summary = Summary(role="callee")

        async def callee() -> Call:
            ring = await bob.incoming(STEP_S)
            started = time.monotonic()
            callee_summary.call = ring.id
            await answer(ring, pb)
            await measure(ring, pb, callee_summary, started=started, frames=FRAMES, pings=3,
                          timeout_s=STEP_S)  # fmt: skip
            return ring

        answering = asyncio.ensure_future(callee())
        caller_summary = Summary(role="caller")
        call, _, started = await dial(alice, pa, conv=conv)
        caller_summary.call = call.id
        await measure(call, pa, caller_summary, started=started, frames=FRAMES, pings=3,
                      timeout_s=STEP_S)  # fmt: skip
        ring = await asyncio.wait_for(answering, STEP_S)
        out["caller"], out["callee"] = caller_summary.__dict__, callee_summary.__dict__
        if drop_callee:
            seen: list[str] = []
            before = (pa.counters.video_frames, pb.counters.video_frames)
            watching = asyncio.ensure_future(changes_until(call, {"reconnecting", "resumed"}, seen))
            dropped_at = time.monotonic()
            bc.kill_socket()  # the SDK reconnects and resumes the call by itself
            await asyncio.wait_for(watching, STEP_S)
            out["resumed_after_s"] = time.monotonic() - dropped_at
            out["caller_saw"] = seen
            out["reconnects"] = bc.reconnects
            await pa.wait_video_frames(before[0] + FRAMES, STEP_S)
            await pb.wait_video_frames(before[1] + FRAMES, STEP_S)
            out["frames_after_resume"] = [
                pa.counters.video_frames - before[0], pb.counters.video_frames - before[1]
            ]  # fmt: skip
            out["ping_after_resume_ms"] = await pb.ping(STEP_S)
            await asyncio.gather(pa.finish(STEP_S), pb.finish(STEP_S))
            await ring.hangup()  # over the new socket
            out["caller_end"] = await call.ended(STEP_S)
        else:
            await asyncio.gather(pa.finish(STEP_S), pb.finish(STEP_S))
            await call.hangup()
            out["callee_end"] = await ring.ended(STEP_S)
        out["pairs"] = [pa.selected_pair(), pb.selected_pair()]
        await pa.close()
        await pb.close()
    finally:
        await ac.close()
        await bc.close()
    return out


async def refused_turn(hub: Hub, wrong: Coturn) -> dict[str, Any]:
    """Credentials minted by the hub, against a TURN server with another secret."""
    ac, alice = await client(hub, "alice")
    try:
        servers = await alice.ice_servers()
        moved = [{**s, "urls": [wrong.url]} for s in servers]
        peer = MediaPeer(moved, relay_only=True, size=(256, 192))
        conv = await ac.create_conversation("direct", ["bob"])
        try:
            await dial(alice, peer, conv=conv)
            outcome = "dialled"
        except IceFailedError:
            outcome = "ice_failed"
        finally:
            await peer.close()
        return {
            "minted_username": servers[0]["username"],
            "outcome": outcome,
            "refused_in_log": f"<{servers[0]['username']}>" in wrong.log(),
        }
    finally:
        await ac.close()


async def echo_cli(hub: Hub, workdir: Path) -> dict[str, Any]:
    """The echo service and a support-staff test call, each a ``medhub-call`` process."""
    base = [sys.executable, "-m", "clients.cli_call", "--server", hub.url, "--loopback"]
    log = open(workdir / "echo.log", "wb")  # noqa: ASYNC230, SIM115 (a child's log file)
    service = await asyncio.create_subprocess_exec(
        *base, "--token", token_for("echo"), "echo", stdout=log, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert service.stderr is not None
        line = await asyncio.wait_for(service.stderr.readline(), 30)
        assert b"ready" in line, line
        dial_proc = await asyncio.create_subprocess_exec(
            *base, "--token", token_for("pat"), "--timeout", str(STEP_S), "dial", "--echo",
            "--json", "--frames", str(FRAMES), "--pings", "3",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(dial_proc.communicate(), 60)
        summary: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        summary["exit"] = dial_proc.returncode
        return summary
    finally:
        service.terminate()
        await service.wait()
        log.close()


async def scenario(results: dict[str, Any], name: str, work: Awaitable[dict[str, Any]]) -> None:
    started = time.monotonic()
    try:
        results[name] = await asyncio.wait_for(work, 60)
    except BaseException:
        results[name] = {"error": traceback.format_exc()}
    results[name]["seconds"] = round(time.monotonic() - started, 2)


async def main(workdir: Path) -> None:
    use_loopback_only()
    good = start_coturn(workdir / "turn-good", SECRET, (40000, 40199))
    wrong = start_coturn(workdir / "turn-wrong", WRONG, (40200, 40399))
    results: dict[str, Any] = {}
    try:
        hub = await start_hub(workdir, good)
        try:
            await scenario(results, "call", two_party(hub, servers=[]))
            await scenario(results, "resume", two_party(hub, servers=[], drop_callee=True))
            await scenario(results, "relay", two_party(hub, relay_only=True))
            await scenario(results, "wrong_secret", refused_turn(hub, wrong))
            await scenario(results, "echo", echo_cli(hub, workdir))
        finally:
            results["records"] = await stop_hub(hub)
    finally:
        good.stop()
        wrong.stop()
    print(json.dumps(results, default=str), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main(Path(sys.argv[1])))
