"""The test-call echo: answers an offer and sends back what it receives. No signalling.

A patient (or anyone) checks camera, microphone and network before a
consultation by calling the echo service: :class:`EchoPeer` returns every
received audio and video track on the same connection (``MediaRelay``), echoes
every data-channel message, and answers ``stats`` on the data channel with its
own view of the call (frames echoed, its RTCP round-trip time) as JSON. The
caller measures the round trip of its stamped frames and of data-channel pings
(:class:`media.peer.MediaPeer`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

from media.peer import add_remote_candidate, rtc_configuration

log = logging.getLogger(__name__)


class EchoPeer:
    """One echoed call (see the module docstring)."""

    def __init__(self, ice_servers: list[dict[str, Any]], *, relay_only: bool = False) -> None:
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers, relay_only))
        self._relay = MediaRelay()
        self.tracks = 0
        self.messages = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_channel)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.tracks += 1
        self.pc.addTrack(self._relay.subscribe(track))

    def _on_channel(self, channel: RTCDataChannel) -> None:
        def on_message(message: Any) -> None:
            self.messages += 1
            if message == "stats":
                self._send_stats(channel)
            elif message == "done":
                channel.send("done")
            else:
                channel.send(message)

        channel.on("message", on_message)

    def _send_stats(self, channel: RTCDataChannel) -> None:
        async def send() -> None:
            rtt = None
            for stats in (await self.pc.getStats()).values():
                remote = type(stats).__name__ == "RTCRemoteInboundRtpStreamStats"
                if remote and stats.roundTripTime is not None:
                    rtt = max(rtt or 0.0, stats.roundTripTime * 1000)
            channel.send("stats " + json.dumps({"tracks": self.tracks, "rtcp_rtt_ms": rtt}))

        task = asyncio.get_running_loop().create_task(send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def answer(self, offer: str) -> str:
        """The answer to ``offer``, echoing each of its tracks (candidates inside)."""
        await self.pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    async def add_candidate(self, init: dict[str, Any] | None) -> None:
        """Add a trickled remote candidate (``RTCIceCandidateInit``); None: the end."""
        await add_remote_candidate(self.pc, init)

    async def close(self) -> None:
        """Close the connection."""
        await self.pc.close()
