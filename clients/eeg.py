"""EEG from Python: a recorder that streams to the hub, a viewer that follows a stream.

Usage::

    auth = TokenAuth(token)                        # or TicketAuth(base_url, token)
    rec = Recorder(ws_url, auth, exam_id, meta)    # meta: protocol.eeg.StreamMeta
    sid = await rec.start()
    await rec.write(block)                         # samples x channels, digital values
    await rec.annotate(onset=1024, text="eyes closed", kind="eyes_closed")
    await rec.close()                              # everything acknowledged, stream closed

    view = Viewer(ws_url, auth, sid, backfill_s=600)
    await view.start()                             # watch, then backfill up to the live edge
    await view.wait_until(index)                   # every output below index held
    data = view.data(0, index)                     # contiguous outputs (samples x channels)

Reconnection: both reconnect by themselves after a transport failure, with
capped exponential backoff and full jitter. The recorder keeps every frame
the hub has not acknowledged (at most ``buffer_s`` seconds: older ones are
dropped and become a gap) and resends from the acknowledged index after an
``eeg.open`` resume; the hub drops what it already has. The viewer watches
again and fetches with ``eeg.backfill`` every range it missed (while it was
away, or skipped as a slow consumer: ``gap`` events), so what it holds is the
stream with no hole the hub could fill and no sample twice.

Errors: :class:`EegError` (an ``error`` reply: ``.code``); transport failures
are retried, never raised, except by :meth:`HubSocket.request` on a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from protocol.codec import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, JsonCodec, MsgpackCodec
from protocol.eeg import (
    BACKFILL_IN_FLIGHT,
    FORMATS,
    MAX_SAMPLES_FRAME_BYTES,
    StreamMeta,
    decode_view,
    encode_samples,
)
from protocol.streams import STREAM_MAGIC

TRANSPORT = (OSError, ConnectionClosed, WebSocketException, TimeoutError, EOFError)
#: Refusals worth another attempt later (a socket of ours the hub has not seen close yet
#: counts against the per-user limit).
RETRY_CODES = frozenset(
    {"unavailable", "timeout", "internal", "too_many_connections", "rate_limited"}
)


class EegError(Exception):
    """The hub answered ``error``: ``code`` is its stable code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class TokenAuth:
    """``hello`` with a bearer session token."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def hello(self) -> dict[str, str]:
        return {"method": "token", "token": self.token}


class TicketAuth:
    """``hello`` with a single-use ticket fetched from the accounts API for each socket."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url, self.token = base_url, token

    async def hello(self) -> dict[str, str]:
        from clients.accounts import ws_ticket

        return {"method": "ticket", "token": await ws_ticket(self.base_url, self.token, 10.0)}


class HubSocket:
    """One authenticated socket: requests, events (``on_event``), stream frames (``on_frame``)."""

    def __init__(self, ws: ClientConnection, binary: bool) -> None:
        self.ws, self.binary = ws, binary
        self.codec: MsgpackCodec | JsonCodec = MsgpackCodec() if binary else JsonCodec()
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self.on_event: Callable[[dict[str, Any]], None] = lambda e: None
        self.on_frame: Callable[[bytes], None] = lambda f: None
        self.on_error: Callable[[dict[str, Any]], None] = lambda e: None
        self.closed = asyncio.Event()
        self.welcome: dict[str, Any] = {}
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, url: str, auth: Any, *, binary: bool = True, timeout_s: float = 10.0
    ) -> HubSocket:
        """Connect and authenticate; raises EegError (refused) or a transport error."""
        proto = SUBPROTOCOL_MSGPACK if binary else SUBPROTOCOL_JSON
        ws = await asyncio.wait_for(
            connect(url, subprotocols=[proto], max_size=2**21, ping_interval=None),  # type: ignore[list-item]
            timeout_s,
        )
        sock = cls(ws, binary)
        sock._reader = asyncio.get_running_loop().create_task(sock._read())
        sock.welcome = await sock.request(
            "hello", timeout_s=timeout_s, auth=await auth.hello(), client="medhub-eeg"
        )
        return sock

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if isinstance(frame, bytes) and frame[:1] == bytes((STREAM_MAGIC,)):
                    self.on_frame(frame)
                    continue
                msg = self.codec.decode_raw(frame)
                if not isinstance(msg, dict):
                    continue
                kind = msg.get("type")
                if kind == "heartbeat":
                    await self.ws.send(self.codec.encode_raw({"type": "heartbeat"}))
                elif kind in ("result", "welcome", "error") and msg.get("id") in self._waiting:
                    fut = self._waiting.pop(msg["id"])
                    if not fut.done():
                        if kind == "error":
                            fut.set_exception(EegError(msg["code"], msg.get("message", "")))
                        else:
                            fut.set_result(msg.get("data", msg))
                elif kind == "event":
                    self.on_event(msg)
                elif kind == "error":
                    self.on_error(msg)
        except TRANSPORT:
            pass
        finally:
            self.closed.set()
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("socket closed"))
            self._waiting.clear()

    async def request(self, msg_type: str, *, timeout_s: float = 10.0, **fields: Any) -> Any:
        """Send a request; its ``result`` data. Raises EegError, ConnectionError, TimeoutError."""
        if self.closed.is_set():
            raise ConnectionError("socket closed")
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        await self.ws.send(self.codec.encode_raw({"type": msg_type, "id": rid, **fields}))
        return await asyncio.wait_for(fut, timeout_s)

    async def send_frame(self, frame: bytes) -> None:
        """Send a binary stream frame."""
        await self.ws.send(frame)

    def abort(self) -> None:
        """Drop the connection at once (no close handshake): a network failure."""
        transport = self.ws.transport
        if transport is not None:
            transport.abort()

    async def close(self) -> None:
        """Close politely."""
        with contextlib.suppress(*TRANSPORT):
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, *TRANSPORT):
                await self._reader


async def backoff(attempt: int, initial: float = 0.05, cap: float = 2.0) -> None:
    """Sleep a full-jitter exponential backoff for ``attempt`` (0, 1, ...)."""
    await asyncio.sleep(random.uniform(0, min(cap, initial * 2**attempt)))


def device_us() -> int:
    """The recorder clock: CLOCK_MONOTONIC in microseconds (shared by local processes)."""
    return time.monotonic_ns() // 1000


class Recorder:
    """Streams samples to the hub and keeps what is not acknowledged (module docstring)."""

    def __init__(
        self,
        url: str,
        auth: Any,
        exam: str,
        meta: StreamMeta,
        *,
        binary: bool = True,
        frame_samples: int | None = None,
        buffer_s: float = 120.0,
        stream: str | None = None,
    ) -> None:
        self.url, self.auth, self.exam, self.meta, self.binary = url, auth, exam, meta, binary
        self.frame_samples = frame_samples or max(1, meta.rate // 8)
        self.max_buffer = int(buffer_s * meta.rate)
        self.dtype = np.dtype(FORMATS[meta.format][2])
        self.sid: str | None = stream
        self.number = 0
        self.end = 0  #: index after the last sample written
        self.acked = 0  #: the hub's stored end
        #: (first, count, samples, device time) written and not acknowledged, ascending
        self.frames: list[tuple[int, int, bytes, int]] = []
        width = len(meta.channels) * self.dtype.itemsize
        #: samples per frame when resending (fewer, bigger frames: under the stream budget)
        self.resend_samples = max(1, min(meta.rate, 65535, (MAX_SAMPLES_FRAME_BYTES - 64) // width))
        self._bucket = (200.0, 400.0, 400.0, 0.0)  #: rate, burst, tokens, last (welcome's)
        self.sock: HubSocket | None = None
        self.reconnects = 0
        self.errors: list[dict[str, Any]] = []
        self._seq = 0
        self._acked_changed = asyncio.Event()
        self._connected = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        #: A refusal that retrying cannot fix (``eeg.open`` forbidden, ...): the recorder stops.
        self.failure: EegError | None = None

    async def start(self, timeout_s: float = 30.0) -> str:
        """Connect and open (or resume) the stream; its id. Raises EegError when refused."""
        self._runner = asyncio.get_running_loop().create_task(self._run())
        await asyncio.wait_for(self._connected.wait(), timeout_s)
        if self.failure is not None:
            raise self.failure
        assert self.sid is not None
        return self.sid

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                sock = await HubSocket.open(self.url, self.auth, binary=self.binary)
                await self._opened(sock)
                attempt = 0
                await sock.closed.wait()
            except EegError as exc:
                if exc.code not in RETRY_CODES:
                    self.failure = exc
                    self._connected.set()
                    return
            except (*TRANSPORT, ConnectionError):
                pass
            self._connected.clear()
            self.sock = None
            if self._closing:
                return
            self.reconnects += 1
            await backoff(attempt)
            attempt += 1

    async def _opened(self, sock: HubSocket) -> None:
        sock.on_event = self._on_event
        sock.on_error = self._on_error
        fields: dict[str, Any] = {"exam": self.exam, "meta": msgspec.to_builtins(self.meta)}
        if self.sid is not None:
            fields["stream"] = self.sid
        got = await sock.request("eeg.open", **fields)
        self.sid, self.number = got["stream"], got["number"]
        self._ack(got["acked"])
        await self._clock(sock)
        limits = sock.welcome.get("limits", {})
        # a margin under the hub's budget: frames may reach it closer together than sent
        rate = 0.8 * float(limits.get("stream_rate_per_s") or 200.0)
        burst = max(1.0, 0.5 * float(limits.get("stream_rate_burst") or 400.0))
        self._bucket = (rate, burst, burst, time.monotonic())
        sent = self.acked
        while True:  # resend what is not acknowledged, in order and merged, then go live
            pending = [f for f in self.frames if f[0] + f[1] > sent]
            if not pending:
                break
            for frame, end in self._merged(pending):
                await self._pace()
                await sock.send_frame(frame)
                sent = end
        self.sock = sock  # no await since the last check: later writes send at once
        self._connected.set()

    def _merged(self, entries: list[tuple[int, int, bytes, int]]) -> list[tuple[bytes, int]]:
        """Frames of at most ``resend_samples`` from consecutive entries; (frame, end)."""
        out: list[tuple[bytes, int]] = []
        i = 0
        while i < len(entries):
            first, count, data, device = entries[i]
            parts = [data]
            i += 1
            while (
                i < len(entries) and entries[i][0] == first + count
                and count + entries[i][1] <= self.resend_samples
            ):  # fmt: skip
                parts.append(entries[i][2])
                count += entries[i][1]
                i += 1
            frame = encode_samples(self.number, self._seq, first, count, device, b"".join(parts))
            self._seq += 1
            out.append((frame, first + count))
        return out

    async def _pace(self) -> None:
        """Wait for a token of the hub's stream budget (``welcome.limits``)."""
        rate, burst, tokens, last = self._bucket
        now = time.monotonic()
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens < 1:
            await asyncio.sleep((1 - tokens) / rate)
            now, tokens = time.monotonic(), 1.0
        self._bucket = (rate, burst, tokens - 1, now)

    async def _clock(self, sock: HubSocket, rounds: int = 4) -> None:
        last = None
        for _ in range(rounds):
            t0 = device_us()
            fields: dict[str, Any] = {"stream": self.sid, "t0": t0}
            if last is not None:
                fields["last"] = last
            got = await sock.request("eeg.clock", **fields)
            last = {"t0": t0, "hub_us": got["hub_us"], "t1": device_us()}

    def _on_error(self, msg: dict[str, Any]) -> None:
        """An ``error`` about a frame: a lost one (``rate_limited``, ``conflict``) means the
        hub's stream and ours differ: resume (reconnect) and resend from the acked index."""
        self.errors.append(msg)
        if msg.get("ref") == "stream:eeg" and msg.get("code") in ("rate_limited", "conflict"):
            self.kill_socket()

    def _on_event(self, msg: dict[str, Any]) -> None:
        data = msg.get("data") or {}
        if msg.get("kind") == "ack" and data.get("stream") == self.sid:
            self._ack(int(data["acked"]))

    def _ack(self, acked: int) -> None:
        if acked > self.acked:
            self.acked = acked
            self.frames = [f for f in self.frames if f[0] + f[1] > acked]
            self._acked_changed.set()

    async def write(self, block: npt.NDArray[np.generic]) -> None:
        """Frame and send ``block`` (samples x channels); kept until acknowledged."""
        data = np.ascontiguousarray(block, dtype=self.dtype)
        for k in range(0, data.shape[0], self.frame_samples):
            part = data[k : k + self.frame_samples]
            first, count, samples, device = self.end, part.shape[0], part.tobytes(), device_us()
            self.end += count
            self.frames.append((first, count, samples, device))
            while self.frames and self.end - self.frames[0][0] > self.max_buffer:
                self.frames.pop(0)  # older than the buffer: lost (the hub makes it a gap)
            sock = self.sock
            if sock is not None:
                frame = encode_samples(self.number, self._seq, first, count, device, samples)
                self._seq += 1
                with contextlib.suppress(*TRANSPORT):
                    await self._pace()
                    await sock.send_frame(frame)

    async def wait_acked(self, index: int | None = None, timeout_s: float = 30.0) -> None:
        """Return once the hub stored everything below ``index`` (default: all written)."""
        target = self.end if index is None else index
        deadline = time.monotonic() + timeout_s
        while self.acked < target:
            if self.failure is not None:
                raise self.failure
            self._acked_changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"acked {self.acked} of {target}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked_changed.wait(), min(left, 1.0))

    async def call(self, msg_type: str, timeout_s: float = 30.0, **fields: Any) -> Any:
        """A request on the current socket, retried across reconnects (idempotent ones only)."""
        deadline = time.monotonic() + timeout_s
        while True:
            await asyncio.wait_for(self._connected.wait(), max(0.01, deadline - time.monotonic()))
            sock = self.sock
            try:
                if sock is None:
                    raise ConnectionError("not connected")
                return await sock.request(msg_type, **fields)
            except (ConnectionError, *TRANSPORT):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def annotate(
        self,
        onset: int,
        text: str,
        *,
        duration: int = 0,
        kind: str = "note",
        frequency_hz: float | None = None,
        client_id: str | None = None,
    ) -> str:
        """Add an annotation (retried across reconnects: idempotent by ``client_id``); its id."""
        fields: dict[str, Any] = {
            "stream": self.sid,
            "onset": onset,
            "duration": duration,
            "text": text,
            "kind": kind,
            "client_id": client_id or f"c{random.getrandbits(60):x}",
        }
        if frequency_hz is not None:
            fields["frequency_hz"] = frequency_hz
        got = await self.call("eeg.annotate", **fields)
        return str(got["id"])

    def kill_socket(self) -> None:
        """Drop the current socket as a network failure would (tests, demos)."""
        if self.sock is not None:
            self.sock.abort()

    async def close(self, timeout_s: float = 30.0) -> int:
        """Wait until everything is acknowledged, close the stream; its end index."""
        await self.wait_acked(timeout_s=timeout_s)
        got = await self.call("eeg.close", stream=self.sid)
        await self.stop()
        return int(got["end"])

    async def stop(self) -> None:
        """Stop without closing the stream (it stays live, resumable)."""
        self._closing = True
        if self.sock is not None:
            await self.sock.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner


from clients.eeg_view import Coverage, Viewer  # noqa: E402  (the viewer half)

__all__ = [
    "BACKFILL_IN_FLIGHT",
    "Coverage",
    "EegError",
    "HubSocket",
    "Recorder",
    "TicketAuth",
    "TokenAuth",
    "Viewer",
    "backoff",
    "decode_view",
]

Connector = Callable[[], Awaitable[HubSocket]]
