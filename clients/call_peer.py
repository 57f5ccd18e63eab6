"""aiortc call participants driven through the SDK: dial, answer, and the echo service.

Glue between :mod:`clients.calls` (signalling through the hub) and
:mod:`media.peer` / :mod:`media.echo` (aiortc, no signalling). Used by the
``medhub-call`` command line (support staff, the echo service process) and
by the end-to-end tests.

Trickle: with ``trickle`` (the default) a participant sends its SDP without
candidates and trickles each candidate through the hub, then
end-of-candidates, as a browser does; without, the candidates stay inside the
SDP. Remote candidates and renegotiation offers are applied as they come, in
order, once the remote description is set (candidates may arrive before
``accepted``: they wait in the call's queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from aiortc import RTCSessionDescription

from clients.calls import Call, Calls
from clients.errors import MedhubError
from media.echo import EchoPeer
from media.peer import MediaPeer, split_candidates
from protocol.calls import Signal

log = logging.getLogger("clients.call_peer")


class IceFailedError(MedhubError):
    """No ICE candidate could be gathered (e.g. relay-only and the TURN server refused
    the credentials), or the connection failed: the call cannot carry media."""


def _gathered(sdp: str) -> str:
    """``sdp`` when it holds at least one candidate; else IceFailedError."""
    if not split_candidates(sdp)[1]:
        raise IceFailedError("no ICE candidate gathered (TURN refused or unreachable?)")
    return sdp


@dataclass
class Summary:
    """What a participant saw of a call (printed as JSON by ``medhub-call``)."""

    call: str = ""
    role: str = ""
    connected: bool = False
    connect_ms: float | None = None  # from the invite (or the ring) to ICE connected
    video_frames: int = 0
    audio_frames: int = 0
    channel_rtt_ms: float | None = None  # median data-channel round trip
    echo_rtt_ms: float | None = None  # median round trip of stamped frames (echo calls)
    pair: list[str] | None = None  # (local, remote) candidate types in use
    quality: dict[str, float] = field(default_factory=dict)
    remote_stats: dict[str, Any] | None = None
    end_reason: str | None = None
    error: str | None = None

    def json(self) -> str:
        """One line of JSON."""
        return json.dumps(asdict(self), sort_keys=True)


async def _trickle(call: Call, sdp: str) -> None:
    for init in split_candidates(sdp)[1]:
        await call.send_candidate(init)
    await call.send_end_of_candidates()


async def pump(call: Call, peer: MediaPeer | EchoPeer) -> None:
    """Apply the other party's signals to ``peer`` until the call ends (a task)."""
    async for signal in call.signals():
        try:
            if signal.kind is Signal.CANDIDATE:
                await peer.add_candidate(signal.candidate)
            elif signal.kind is Signal.END_OF_CANDIDATES:
                await peer.add_candidate(None)
            elif signal.kind is Signal.OFFER and signal.sdp is not None:
                pc = peer.pc
                await pc.setRemoteDescription(RTCSessionDescription(signal.sdp, "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                await call.send_answer(pc.localDescription.sdp)
            elif signal.kind is Signal.ANSWER and signal.sdp is not None:
                await peer.pc.setRemoteDescription(RTCSessionDescription(signal.sdp, "answer"))
        except (ValueError, MedhubError) as exc:  # a bad signal must not end the call
            log.warning("call signal not applied", extra={"error": type(exc).__name__})


def _spawn(tasks: set[asyncio.Task[Any]], coro: Any) -> asyncio.Task[Any]:
    task = asyncio.get_running_loop().create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


async def dial(
    calls: Calls,
    peer: MediaPeer,
    *,
    conv: str | None = None,
    to: str | None = None,
    echo: bool = False,
    trickle: bool = True,
    answer_timeout_s: float = 60.0,
) -> tuple[Call, asyncio.Task[None], float]:
    """Place a call with ``peer``'s media; returns once the answer is applied.

    Returns the call, the signal pump task, and the start time (monotonic).
    Raises :class:`IceFailedError` (no candidate: nobody is rung), what
    :meth:`clients.calls.Calls.invite` raises, and
    :class:`~clients.errors.MedhubError` when the call ends unanswered.
    """
    started = time.monotonic()
    local = _gathered(await peer.offer())
    offer = split_candidates(local)[0] if trickle else local
    call = await calls.invite(offer, conv=conv, to=to, echo=echo)
    if trickle:
        await _trickle(call, local)
    answer = await call.answered(answer_timeout_s)
    await peer.accept_answer(answer)
    task = asyncio.get_running_loop().create_task(pump(call, peer))
    return call, task, started


async def answer(
    call: Call, peer: MediaPeer | EchoPeer, *, trickle: bool = True
) -> asyncio.Task[None]:
    """Answer ringing ``call`` with ``peer``; returns the signal pump task.

    Raises HubError ``conflict`` when another device answered first,
    :class:`IceFailedError` when no candidate could be gathered (not answered).
    """
    assert call.offer is not None
    local = _gathered(await peer.answer(call.offer))
    await call.accept(split_candidates(local)[0] if trickle else local)
    if trickle:
        await _trickle(call, local)
    return asyncio.get_running_loop().create_task(pump(call, peer))


async def measure(
    call: Call, peer: MediaPeer, summary: Summary, *, started: float, frames: int,
    pings: int, timeout_s: float,
) -> None:  # fmt: skip
    """Wait for ICE, ``frames`` remote video frames and ``pings`` data-channel round
    trips; fill ``summary``. Raises TimeoutError."""
    await asyncio.wait_for(peer.connected.wait(), timeout_s)
    summary.connected = True
    summary.connect_ms = (time.monotonic() - started) * 1000
    await peer.wait_video_frames(frames, timeout_s)
    rtts = [await peer.ping(timeout_s) for _ in range(pings)]
    if rtts:
        summary.channel_rtt_ms = statistics.median(rtts)
    fill(summary, peer)
    summary.quality = await peer.quality()
    if summary.quality:
        with contextlib.suppress(MedhubError):
            await call.report(**summary.quality)


def fill(summary: Summary, peer: MediaPeer) -> None:
    """Copy ``peer``'s counters into ``summary``."""
    c = peer.counters
    summary.video_frames, summary.audio_frames = c.video_frames, c.audio_frames
    if c.echo_rtts_ms:
        summary.echo_rtt_ms = statistics.median(c.echo_rtts_ms)
    pair = peer.selected_pair()
    summary.pair = list(pair) if pair else None
    if peer.remote_stats:
        with contextlib.suppress(ValueError):
            summary.remote_stats = json.loads(peer.remote_stats)


async def serve_echo(
    calls: Calls, *, capacity: int = 4, max_call_s: float = 120.0, relay_only: bool = False,
    handled: asyncio.Queue[str] | None = None,
) -> None:  # fmt: skip
    """Answer test calls with an :class:`~media.echo.EchoPeer` until cancelled.

    At most ``capacity`` calls at once on this process (others are left to
    another echo process: every echo process of the account rings, the first
    to answer wins). Each call lasts at most ``max_call_s``. ``handled`` gets
    the id of each call once it ended (tests).
    """
    active: set[asyncio.Task[Any]] = set()
    while True:
        call = await calls.incoming()
        if not call.echo or len(active) >= capacity:
            continue
        _spawn(active, _echo_one(calls, call, max_call_s, relay_only, handled))


async def _echo_one(
    calls: Calls, call: Call, max_call_s: float, relay_only: bool,
    handled: asyncio.Queue[str] | None,
) -> None:  # fmt: skip
    peer: EchoPeer | None = None
    task: asyncio.Task[None] | None = None
    try:
        peer = EchoPeer(await calls.ice_servers(), relay_only=relay_only)
        task = await answer(call, peer)
        with contextlib.suppress(TimeoutError):
            await call.ended(max_call_s)
        if call.state != "ended":
            await call.hangup("user_hangup")
    except MedhubError as exc:  # answered by another echo process, or gone
        log.info("echo call not taken", extra={"error": type(exc).__name__})
    finally:
        if task is not None:
            task.cancel()
        if peer is not None:
            await peer.close()
        if handled is not None:
            handled.put_nowait(call.id)
