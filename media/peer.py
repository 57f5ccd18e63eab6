"""A WebRTC call participant built on aiortc: media, a data channel, counters. No signalling.

:class:`MediaPeer` wraps one ``RTCPeerConnection``: it sends synthetic
(:mod:`media.synthetic`) or file audio and video, receives the remote tracks
(counting frames, reading round-trip stamps), opens (or accepts) a data channel
and measures its round trip, and summarises quality figures. The caller moves
SDP and candidates between peers (clients/call_peer.py does it through the
hub); this module knows nothing of the hub.

Trickle: aiortc gathers every candidate before ``setLocalDescription`` returns.
:func:`split_candidates` takes them out of an SDP so that they can be sent one
by one (as a browser trickles); :meth:`MediaPeer.add_candidate` adds a
remote one (``None``: end of candidates).

Loopback-only machines (tests): call :func:`use_loopback_only` before any
peer connection is made: aioice never offers 127.0.0.1 by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaPlayer
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.sdp import candidate_from_sdp, candidate_to_sdp

from media.synthetic import StampedVideoTrack, ToneAudioTrack, read_stamp

log = logging.getLogger(__name__)

#: Label of the data channel a caller opens.
CHANNEL_LABEL = "medhub"


def use_loopback_only() -> None:
    """Make aioice offer 127.0.0.1 as its only host address (loopback-only namespaces)."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]  # type: ignore[assignment]


def rtc_configuration(
    ice_servers: list[dict[str, Any]], relay_only: bool = False
) -> RTCConfiguration:
    """An ``RTCConfiguration`` from ``RTCIceServer`` dicts (as ``call.ice_servers`` gives).

    An empty list stays empty (aiortc would otherwise fall back to a public STUN server).
    """
    servers = [
        RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
        for s in ice_servers
    ]
    policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)


def split_candidates(sdp: str) -> tuple[str, list[dict[str, Any]]]:
    """``sdp`` without its candidate lines, and those candidates as ``RTCIceCandidateInit``."""
    lines = sdp.split("\r\n")
    kept: list[str] = []
    found: list[dict[str, Any]] = []
    mid: str | None = None
    index = -1
    for line in lines:
        if line.startswith("m="):
            index += 1
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
        if line.startswith("a=candidate:"):
            found.append({"candidate": line[2:], "sdpMid": mid, "sdpMLineIndex": index})
            continue
        if line == "a=end-of-candidates":
            continue
        kept.append(line)
    return "\r\n".join(kept), found


async def add_remote_candidate(pc: RTCPeerConnection, init: dict[str, Any] | None) -> None:
    """Add a trickled remote candidate (``RTCIceCandidateInit``) to ``pc``; None or an
    empty ``candidate``: end of candidates. Raises ValueError for a malformed one."""
    text = "" if init is None else str(init.get("candidate", ""))
    if not text:
        await pc.addIceCandidate(None)
        return
    try:
        candidate = candidate_from_sdp(text.removeprefix("candidate:"))
    except (ValueError, IndexError) as exc:
        raise ValueError("malformed candidate") from exc
    candidate.sdpMid = init.get("sdpMid") if init else None
    candidate.sdpMLineIndex = init.get("sdpMLineIndex") if init else None
    await pc.addIceCandidate(candidate)


@dataclass
class Counters:
    """What a peer received and measured."""

    video_frames: int = 0
    audio_frames: int = 0
    echo_rtts_ms: list[float] = field(default_factory=list)
    channel_rtts_ms: list[float] = field(default_factory=list)


class MediaPeer:
    """One call participant's peer connection (see the module docstring).

    ``video_file`` / ``audio_file``: play a media file (PyAV formats) instead of
    the synthetic pattern and tone. ``relay_only``: use TURN relays only.
    ``echo_test``: the remote side echoes my media (the echo service): measure
    the round trip of my stamped frames.
    """

    def __init__(
        self,
        ice_servers: list[dict[str, Any]],
        *,
        relay_only: bool = False,
        video: bool = True,
        audio: bool = True,
        media_file: str | None = None,
        size: tuple[int, int] = (320, 240),
        echo_test: bool = False,
    ) -> None:
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers, relay_only))
        self.counters = Counters()
        self.echo_test = echo_test
        self.connected = asyncio.Event()
        self.failed = asyncio.Event()
        self.channel_open = asyncio.Event()
        self.done_received = asyncio.Event()
        self.stats_received = asyncio.Event()
        self.channel: RTCDataChannel | None = None
        self.video_track: StampedVideoTrack | None = None
        self._player: MediaPlayer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._pings: dict[int, tuple[float, asyncio.Future[float]]] = {}
        self._ping_seq = 0
        self._frame_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._outgoing: list[MediaStreamTrack] = []
        self.remote_stats: str | None = None
        if media_file is not None:
            self._player = MediaPlayer(media_file)
            if video and self._player.video is not None:
                self._outgoing.append(self._player.video)
            if audio and self._player.audio is not None:
                self._outgoing.append(self._player.audio)
        else:
            if video:
                self.video_track = StampedVideoTrack(*size)
                self._outgoing.append(self.video_track)
            if audio:
                self._outgoing.append(ToneAudioTrack())
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_channel)
        self.pc.on("connectionstatechange", self._on_state)

    # -- negotiation ------------------------------------------------------------------------
    async def offer(self) -> str:
        """Add the media and a data channel, and return the offer (candidates inside)."""
        for track in self._outgoing:
            self.pc.addTrack(track)
        self._on_channel(self.pc.createDataChannel(CHANNEL_LABEL))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def answer(self, offer: str) -> str:
        """Take ``offer``, add the media, and return the answer (candidates inside)."""
        await self.pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        for track in self._outgoing:
            self.pc.addTrack(track)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    async def accept_answer(self, answer: str) -> None:
        """Take the remote answer (caller side)."""
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def add_candidate(self, init: dict[str, Any] | None) -> None:
        """Add a trickled remote candidate (``RTCIceCandidateInit``); None: end of candidates."""
        await add_remote_candidate(self.pc, init)

    @staticmethod
    def candidate_init(candidate: Any) -> dict[str, Any]:
        """An aiortc ``RTCIceCandidate`` as ``RTCIceCandidateInit``."""
        return {
            "candidate": "candidate:" + candidate_to_sdp(candidate),
            "sdpMid": candidate.sdpMid,
            "sdpMLineIndex": candidate.sdpMLineIndex,
        }

    # -- events -----------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.connected.set()
        elif state in ("failed", "closed"):
            self.failed.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._spawn(self._consume(track))

    async def _consume(self, track: MediaStreamTrack) -> None:
        c = self.counters
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                if track.kind == "audio":
                    c.audio_frames += 1
                    continue
                c.video_frames += 1
                mine = self.video_track
                if mine is not None and self.echo_test:
                    stamp = read_stamp(frame)
                    sent = None if stamp is None else mine.sent.get(stamp)
                    if sent is not None:
                        c.echo_rtts_ms.append((time.monotonic() - sent) * 1000)
                for n, fut in list(self._frame_waiters):
                    if c.video_frames >= n and not fut.done():
                        fut.set_result(None)

    def _on_channel(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        channel.on("open", self.channel_open.set)
        channel.on("message", self._on_message)
        if channel.readyState == "open":
            self.channel_open.set()

    def _on_message(self, message: Any) -> None:
        if not isinstance(message, str):
            return
        if message == "done":
            self.done_received.set()
            return
        if message.startswith("stats "):
            self.remote_stats = message[len("stats ") :]
            self.stats_received.set()
            return
        word, _, rest = message.partition(" ")
        seq = int(rest) if rest.isdigit() else -1
        pending = self._pings.pop(seq, None) if word in ("ping", "pong") else None
        if pending is not None:  # my ping came back (answered, or echoed)
            started, fut = pending
            rtt = (time.monotonic() - started) * 1000
            self.counters.channel_rtts_ms.append(rtt)
            if not fut.done():
                fut.set_result(rtt)
        elif word == "ping" and self.channel is not None:
            self.channel.send(f"pong {rest}")

    # -- measurements -----------------------------------------------------------------------
    async def wait_video_frames(self, n: int, timeout_s: float) -> None:
        """Return once ``n`` remote video frames arrived; TimeoutError after ``timeout_s``."""
        if self.counters.video_frames >= n:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._frame_waiters.append((n, fut))
        try:
            await asyncio.wait_for(fut, timeout_s)
        finally:
            self._frame_waiters.remove((n, fut))

    async def ping(self, timeout_s: float = 5.0) -> float:
        """One data-channel round trip (ms); the other side answers (or echoes) it."""
        await asyncio.wait_for(self.channel_open.wait(), timeout_s)
        assert self.channel is not None
        self._ping_seq += 1
        seq = self._ping_seq
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pings[seq] = (time.monotonic(), fut)
        self.channel.send(f"ping {seq}")
        try:
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self._pings.pop(seq, None)

    async def finish(self, timeout_s: float = 5.0) -> None:
        """Say "done" on the data channel and wait for the other side's (so that neither
        side tears down while the other still checks). TimeoutError after ``timeout_s``."""
        await asyncio.wait_for(self.channel_open.wait(), timeout_s)
        assert self.channel is not None
        self.channel.send("done")
        await asyncio.wait_for(self.done_received.wait(), timeout_s)

    def selected_pair(self) -> tuple[str, str] | None:
        """The (local, remote) candidate types of the pair in use, or None."""
        for transceiver in self.pc.getTransceivers():
            ice = transceiver.receiver.transport.transport
            nominated = getattr(ice._connection, "_nominated", {})  # aioice state
            for pair in nominated.values():
                return pair.local_candidate.type, pair.remote_candidate.type
        return None

    async def quality(self) -> dict[str, float]:
        """Figures for ``call.quality``: rtt_ms, loss, bitrate_kbps, jitter_ms (as known)."""
        out: dict[str, float] = {}
        report = await self.pc.getStats()
        received = lost = 0
        for stats in report.values():
            kind = type(stats).__name__
            if kind == "RTCRemoteInboundRtpStreamStats" and stats.roundTripTime is not None:
                out["rtt_ms"] = max(out.get("rtt_ms", 0.0), stats.roundTripTime * 1000)
            elif kind == "RTCInboundRtpStreamStats":
                received += stats.packetsReceived or 0
                lost += max(stats.packetsLost or 0, 0)
                if stats.kind == "audio" and stats.jitter is not None:  # RTP units, 48 kHz
                    out["jitter_ms"] = stats.jitter / 48
        if received + lost:
            out["loss"] = lost / (received + lost)
        return out

    async def close(self) -> None:
        """Close the connection and stop the tracks."""
        for task in list(self._tasks):
            task.cancel()
        await self.pc.close()
        for track in self._outgoing:
            track.stop()
