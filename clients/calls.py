"""Video call signalling for the Python SDK (no media here: see :mod:`clients.call_peer`).

Usage::

    client = MedhubClient(url, token=token)
    calls = Calls(client)                      # before connect()
    await client.connect()
    servers = await calls.ice_servers()        # STUN/TURN with my TURN credentials
    call = await calls.invite(offer_sdp, conv=conv)     # rings every device of the callee
    answer_sdp = await call.answered()         # the first device to answer wins
    await call.send_candidate({"candidate": "candidate:...", "sdpMid": "0", "sdpMLineIndex": 0})
    async for signal in call.signals():        # trickled candidates, renegotiation
        ...
    await call.hangup()

    ring = await calls.incoming()              # on the callee's side: a ringing Call
    await ring.accept(answer_sdp)

The hub relays candidates and renegotiation offers/answers as binary ``call``
stream frames (``protocol/calls.py``) without decoding them; a :class:`Call`
sends and receives them in order. Lifecycle changes arrive as
:class:`CallEvent` in :meth:`Call.changes` (``accepted``, ``reconnecting``,
``resumed``, ``answered_elsewhere``, ``ended``); :meth:`Call.ended` waits for
the end and gives its reason.

Reconnection: after the client reconnects, every call this client is a party
of is resumed (``call.resume``) at once; frames sent meanwhile wait and leave
in order once it resumed. A call that ended while away is marked ended.

Errors: :class:`~clients.errors.HubError` (a refusal: ``forbidden``,
``not_found``, ``conflict``, ...), :class:`CallBusyError` (the callee is in
another call), :class:`GlareError` (the callee was calling me at the same
moment: accept ``.call`` instead), :class:`~clients.errors.TransportError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from clients.connection import Connection, TypedEvent
from clients.errors import HubError, MedhubError, TransportError
from protocol.calls import CALL_STREAM_CODE, Signal, parse_signal, signal_frame

log = logging.getLogger("clients.calls")

__all__ = [
    "Call",
    "CallBusyError",
    "CallEvent",
    "CallSignal",
    "Calls",
    "GlareError",
]


class CallBusyError(MedhubError):
    """The callee is in another call (the call was recorded as ``busy``)."""

    def __init__(self, call: str) -> None:
        super().__init__("the callee is busy")
        self.call = call


class GlareError(MedhubError):
    """The callee invited me at the same moment and their invite won: accept ``call``."""

    def __init__(self, call: Call) -> None:
        super().__init__("glare: accept the incoming call instead")
        self.call = call


@dataclass(frozen=True)
class CallSignal:
    """A relayed signal from the other party: ``kind`` and its opaque payload."""

    kind: Signal
    payload: bytes

    @property
    def candidate(self) -> dict[str, Any] | None:
        """A CANDIDATE's ``RTCIceCandidateInit`` (None for other kinds)."""
        if self.kind is not Signal.CANDIDATE:
            return None
        value: dict[str, Any] = json.loads(self.payload)
        return value

    @property
    def sdp(self) -> str | None:
        """An OFFER's or ANSWER's SDP (None for other kinds)."""
        return self.payload.decode() if self.kind in (Signal.OFFER, Signal.ANSWER) else None


@dataclass(frozen=True)
class CallEvent:
    """A lifecycle change of a call (see the module docstring)."""

    kind: str
    data: dict[str, Any]


def new_party_id() -> str:
    """A random party (device) id for one call."""
    return "p-" + secrets.token_urlsafe(12)


class Call:
    """One call as this client sees it: ringing here, or joined as a party."""

    def __init__(
        self, calls: Calls, call_id: str, *, role: str, caller: str, conv: str | None,
        media: str = "video", offer: str | None = None, echo: bool = False,
        party: str | None = None,
    ) -> None:  # fmt: skip
        self._calls = calls
        self.id = call_id
        self.role = role  # "caller" | "callee"
        self.caller = caller
        self.conv = conv
        self.media = media
        self.offer = offer  # the invite's offer, for a callee
        self.echo = echo
        self.party = party  # my device's party id once I am a party
        self.state = "ringing"
        self.end_reason: str | None = None
        self._answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._signals: asyncio.Queue[CallSignal | None] = asyncio.Queue()
        self._changes: asyncio.Queue[CallEvent | None] = asyncio.Queue()
        self._outbox: list[bytes] = []
        self._resuming = False

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.role} {self.state}>"

    @property
    def is_party(self) -> bool:
        """This client takes part in the call (it invited, or its answer won)."""
        return self.party is not None

    # -- lifecycle ------------------------------------------------------------------------------
    async def accept(self, answer: str) -> None:
        """Answer from this device (the first device wins). Raises HubError
        (``conflict``: answered elsewhere or ended)."""
        party = new_party_id()
        self.party = party
        try:
            await self._calls.client.request(
                "call.accept", call=self.id, party=party, answer=answer
            )
        except BaseException:
            self.party = None
            raise
        self.state = "connected"

    async def reject(self) -> None:
        """Decline the ringing call on every device. Raises HubError."""
        await self._calls.client.request("call.reject", call=self.id)

    async def cancel(self) -> None:
        """Give up calling. Raises HubError (``conflict`` when answered meanwhile)."""
        await self._calls.client.request("call.cancel", call=self.id)

    async def hangup(self, reason: str = "user_hangup") -> None:
        """End the call (``user_hangup``, ``ice_failed``, ``media_failed``, ``error``)."""
        await self._calls.client.request("call.hangup", call=self.id, reason=reason)

    async def answered(self, timeout_s: float | None = None) -> str:
        """The callee's SDP answer (caller side). Raises ``CallEndedError`` semantics as
        :class:`MedhubError` when the call ended first, TimeoutError after ``timeout_s``."""
        ended = asyncio.ensure_future(asyncio.shield(self._ended))
        try:
            await asyncio.wait(
                {self._answer, ended}, timeout=timeout_s, return_when="FIRST_COMPLETED"
            )
        finally:
            ended.cancel()
        if self._answer.done():
            return self._answer.result()
        if self._ended.done():
            raise MedhubError(f"the call ended: {self._ended.result()}")
        raise TimeoutError("no answer")

    async def ended(self, timeout_s: float | None = None) -> str:
        """Wait for the end of the call; its reason. TimeoutError after ``timeout_s``."""
        return await asyncio.wait_for(asyncio.shield(self._ended), timeout_s)

    async def changes(self) -> AsyncIterator[CallEvent]:
        """Lifecycle events until the call ends (the ``ended`` event included)."""
        while (item := await self._changes.get()) is not None:
            yield item

    # -- signals --------------------------------------------------------------------------------
    async def send_candidate(self, candidate: dict[str, Any] | str) -> None:
        """Trickle one ICE candidate (an ``RTCIceCandidateInit`` or its JSON text)."""
        text = candidate if isinstance(candidate, str) else json.dumps(candidate)
        await self._send(Signal.CANDIDATE, text.encode())

    async def send_end_of_candidates(self) -> None:
        """Tell the other party that no more candidates will come."""
        await self._send(Signal.END_OF_CANDIDATES, b"")

    async def send_offer(self, sdp: str) -> None:
        """A renegotiation offer (screen share, ICE restart)."""
        await self._send(Signal.OFFER, sdp.encode())

    async def send_answer(self, sdp: str) -> None:
        """The answer to a renegotiation offer."""
        await self._send(Signal.ANSWER, sdp.encode())

    async def _send(self, kind: Signal, payload: bytes) -> None:
        frame = signal_frame(kind, self.id, payload)
        if self._resuming or self._outbox:
            self._outbox.append(frame)  # leaves, in order, once the call is resumed
            return
        try:
            await self._calls.client.send_stream(frame)
        except TransportError:
            self._outbox.append(frame)

    async def _flush(self) -> None:
        while self._outbox:
            await self._calls.client.send_stream(self._outbox[0])
            self._outbox.pop(0)

    async def next_signal(self, timeout_s: float | None = None) -> CallSignal | None:
        """The next relayed signal, or None once the call ended."""
        return await asyncio.wait_for(self._signals.get(), timeout_s)

    async def signals(self) -> AsyncIterator[CallSignal]:
        """Relayed signals from the other party, in order, until the call ends."""
        while (item := await self._signals.get()) is not None:
            yield item

    async def report(self, **figures: float) -> None:
        """Send a quality summary (``rtt_ms``, ``loss``, ``bitrate_kbps``, ``jitter_ms``,
        ``frames_per_s``), kept with the call for support. One-way: never waits."""
        await self._calls.client.notify("call.quality", call=self.id, **figures)

    # -- from the hub ---------------------------------------------------------------------------
    def _event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "accepted":
            if self.role == "caller" and not self._answer.done():
                self._answer.set_result(str(data.get("answer", "")))
            self.state = "connected"
        elif kind == "answered_elsewhere":
            self._end("answered_elsewhere")
        elif kind == "ended":
            self._end(str(data.get("reason", "")))
        if kind != "ring":
            self._changes.put_nowait(CallEvent(kind, data))
        if kind in ("ended", "answered_elsewhere"):
            self._changes.put_nowait(None)

    def _end(self, reason: str) -> None:
        self.state = "ended"
        self.end_reason = reason
        if not self._ended.done():
            self._ended.set_result(reason)
        self._signals.put_nowait(None)
        self._calls._forget(self)


class Calls:
    """The call API of one :class:`~clients.connection.Connection` (see the module doc).

    Build it before :meth:`~clients.connection.Connection.connect`, so that no
    ring is missed.
    """

    def __init__(self, client: Connection) -> None:
        self.client = client
        self._calls: dict[str, Call] = {}
        self._rings: asyncio.Queue[Call] = asyncio.Queue()
        client.add_event_tap(self._on_event)
        client.on_stream(CALL_STREAM_CODE, self._on_frame)
        client.add_connected_hook(self._reconnected)
        self._tasks: set[asyncio.Task[None]] = set()

    async def ice_servers(self) -> list[dict[str, Any]]:
        """STUN/TURN servers (``RTCIceServer`` dicts) with TURN credentials minted for me."""
        got = await self.client.request("call.ice_servers")
        servers: list[dict[str, Any]] = got["ice_servers"]
        return servers

    async def invite(
        self, offer: str, *, conv: str | None = None, to: str | None = None,
        echo: bool = False, media: str = "video", lifetime_s: float | None = None,
    ) -> Call:  # fmt: skip
        """Call a member of ``conv`` (``to`` when it has several others), or the echo
        service (``echo``). Raises HubError, CallBusyError, GlareError."""
        party = new_party_id()
        fields: dict[str, Any] = {"party": party, "offer": offer, "media": media}
        if conv is not None:
            fields["conv"] = conv
        if to is not None:
            fields["to"] = to
        if echo:
            fields["echo"] = True
        if lifetime_s is not None:
            fields["lifetime_ms"] = int(lifetime_s * 1000)
        got = await self.client.request("call.invite", **fields)
        cid = str(got["call"])
        if got["state"] == "glare":
            incoming = self._calls.get(cid) or Call(
                self, cid, role="callee", caller=str(got["caller"]), conv=conv, media=media
            )
            self._calls[cid] = incoming
            raise GlareError(incoming)
        if got["state"] == "ended":
            raise CallBusyError(cid)
        call = Call(self, cid, role="caller", caller="", conv=conv, media=media, party=party)
        call.caller = self.client.session.user_id if self.client.session else ""
        call.echo = echo
        self._calls[cid] = call
        return call

    async def incoming(self, timeout_s: float | None = None) -> Call:
        """The next call ringing on this device (TimeoutError after ``timeout_s``)."""
        while True:
            call = await asyncio.wait_for(self._rings.get(), timeout_s)
            if call.state == "ringing":
                return call

    async def pending(self) -> list[Call]:
        """Calls ringing for me now that this device may have missed (``call.pending``)."""
        got = await self.client.request("call.pending")
        return [self._ring(ring) for ring in got["calls"]]

    def calls(self) -> list[Call]:
        """The calls this client knows of (ringing or joined), not ended."""
        return list(self._calls.values())

    # -- from the connection ----------------------------------------------------------------------
    def _ring(self, data: dict[str, Any]) -> Call:
        cid = str(data["call"])
        call = self._calls.get(cid)
        if call is None:
            call = Call(
                self, cid, role="callee", caller=str(data["caller"]), conv=data.get("conv"),
                media=str(data.get("media", "video")), offer=str(data["offer"]),
                echo=bool(data.get("echo", False)),
            )  # fmt: skip
            self._calls[cid] = call
        elif call.offer is None:
            call.offer = str(data["offer"])
        return call

    def _on_event(self, event: TypedEvent) -> bool:
        if not event.ch.startswith("call:"):
            return False
        data = event.data if isinstance(event.data, dict) else {}
        if event.kind == "ring":
            self._rings.put_nowait(self._ring(data))
            return True
        call = self._calls.get(event.ch.partition(":")[2])
        if call is not None:
            call._event(event.kind, data)
        return True

    def _on_frame(self, frame: bytes) -> None:
        try:
            kind, cid, payload = parse_signal(frame)
        except ValueError:
            log.warning("malformed call frame from the hub")
            return
        call = self._calls.get(cid)
        if call is not None:
            call._signals.put_nowait(CallSignal(kind, payload))

    def _forget(self, call: Call) -> None:
        if self._calls.get(call.id) is call:
            del self._calls[call.id]

    def _reconnected(self) -> None:
        for call in list(self._calls.values()):
            if call.is_party and call.state != "ended":
                call._resuming = True
                task = asyncio.get_running_loop().create_task(self._resume(call))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _resume(self, call: Call) -> None:
        try:
            got = await self.client.request("call.resume", call=call.id, party=call.party)
        except HubError as exc:
            call._event("ended", {"call": call.id, "reason": exc.code})
            return
        except MedhubError:
            call._resuming = False
            return  # dropped again: the next reconnect resumes it
        if got["state"] == "ended":
            call._event("ended", {"call": call.id, "reason": got.get("reason", "")})
            return
        if got.get("answer") and not call._answer.done():  # answered while I was away
            call._event("accepted", {"call": call.id, "answer": got["answer"]})
        call._resuming = False
        try:
            await call._flush()
        except MedhubError:
            return
        call._changes.put_nowait(CallEvent("resumed_here", {"call": call.id, "role": got["role"]}))
