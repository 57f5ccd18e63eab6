"""This node's devices in the broker's presence registry: batched, bounded, ordered.

Each socket is a device: member ``<node>:<conn>`` of broker presence key
``presence:<user>`` with its state as value and a TTL of ``ttl_s`` seconds. A
user's state is the strongest over the unexpired devices (``in-call`` >
``busy`` > ``away`` > ``online``), ``offline`` when none is left, with
``last_seen`` (unix ms, broker value ``presence-last:<user>``) stamped when
the last device goes. A node that dies stops refreshing, so its devices
expire by themselves.

One writer task per node (supervised) does all broker work, in batches:

* **Changes** (a socket opens, closes or sets its state) only update the local
  truth (``devices``) and mark the user dirty; the writer takes every dirty
  user at once and writes them with one ``presence_remove_many``, one
  ``presence_set_many`` and one ``presence_get_many`` (pipelines on Redis),
  then publishes the users whose combined state changed (one
  ``publish_many``). The pending work is bounded by the number of local users
  and closed sockets: a set, not a queue of jobs. Because the writer always
  writes the *current* local truth, a close can never be overtaken by an
  older open of the same socket.
* **Refresh**: every ``refresh_s`` the writer restarts the TTL of every open
  device in chunks of :data:`REFRESH_CHUNK` (one pipeline each: 20 round trips
  for 20,000 sockets), and re-reads the followed users (so a dead node's
  users turn offline for followers within about ``ttl_s + refresh_s``). The
  round's duration is observed in ``medhub_presence_refresh_seconds``.

A broker failure fails the waiting ``presence.set`` requests (``unavailable``),
keeps the dirty users for the next attempt and lets the supervisor restart
the writer with backoff.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence

import msgspec
from prometheus_client import CollectorRegistry, Histogram

from protocol.presence import STATES, PresenceState, rank
from server.channels import ChannelService, encode_event
from server.peer import Peer

#: Seconds a user's last-seen time is kept after their last device left (90 days).
LAST_SEEN_TTL_S = 90 * 24 * 3600.0
#: Devices (or followed users) refreshed in one broker pipeline.
REFRESH_CHUNK = 1000


def now_ms() -> int:
    """The wall clock in unix milliseconds."""
    return time.time_ns() // 1_000_000


def presence_key(user: str) -> str:
    """The broker presence key (and channel name) of ``user``."""
    return f"presence:{user}"


def combined(user: str, members: dict[str, bytes], last_seen: bytes | None) -> PresenceState:
    """A user's state from their unexpired devices (``last_seen`` used when offline)."""
    best = max((v.decode() for v in members.values()), key=rank, default="offline")
    if best not in STATES:
        best = "online"
    seen = int(last_seen) if best == "offline" and last_seen else None
    return PresenceState(user=user, state=best, ts=now_ms(), last_seen=seen)


class DeviceRegistry:
    """Writes this node's devices to the broker; see the module docstring."""

    def __init__(
        self,
        channels: ChannelService,
        node_id: str,
        registry: CollectorRegistry,
        *,
        ttl_s: float,
        refresh_s: float,
        watched: Callable[[], Iterable[str]],
    ) -> None:
        self.channels = channels
        self.broker = channels.broker
        self.node = node_id
        self.ttl_s, self.refresh_s = ttl_s, refresh_s
        self._watched = watched
        self.devices: dict[Peer, str] = {}
        self._by_user: dict[str, dict[Peer, str]] = {}
        self._dirty: dict[str, None] = {}
        self._removals: dict[tuple[str, str], None] = {}
        self._waiters: dict[str, list[asyncio.Future[PresenceState]]] = {}
        self._published: dict[str, tuple[str, int | None]] = {}
        self._wake = asyncio.Event()
        self._next_refresh = 0.0
        self.m_refresh = Histogram(
            "medhub_presence_refresh_seconds",
            "Time to refresh every local device's TTL once (one round)",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )

    def member(self, peer: Peer) -> str:
        """The broker member of a device."""
        return f"{self.node}:{peer.conn_id}"

    # -- local truth (synchronous, O(1)) --------------------------------------------------
    def opened(self, peer: Peer) -> None:
        """A socket is a new device, ``online``."""
        self._put(peer, "online")

    def set(self, peer: Peer, state: str) -> asyncio.Future[PresenceState]:
        """Set a device's state; the future resolves with the user's combined state
        once written (or fails with the broker's error)."""
        user = self._put(peer, state)
        fut: asyncio.Future[PresenceState] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(user, []).append(fut)
        return fut

    def _put(self, peer: Peer, state: str) -> str:
        assert peer.principal is not None
        user = peer.principal.user_id
        self.devices[peer] = state
        self._by_user.setdefault(user, {})[peer] = state
        self._mark(user)
        return user

    def closed(self, peer: Peer) -> None:
        """A device is gone."""
        if self.devices.pop(peer, None) is None or peer.principal is None:
            return
        user = peer.principal.user_id
        mine = self._by_user.get(user)
        if mine is not None:
            mine.pop(peer, None)
            if not mine:
                del self._by_user[user]
        self._removals[(presence_key(user), self.member(peer))] = None
        self._mark(user)

    def _mark(self, user: str) -> None:
        self._dirty[user] = None
        self._wake.set()

    def observe(self, channel: str, frame: bytes) -> None:
        """A state published by any node (channel observer): remember it."""
        try:
            data = msgspec.msgpack.decode(frame)["data"]
            self._published[data["user"]] = (data["state"], data.get("last_seen"))
        except (msgspec.DecodeError, KeyError, TypeError):
            return

    # -- the writer ----------------------------------------------------------------------
    async def run(self) -> None:
        """The writer loop (supervised: a broker failure raises; it is restarted)."""
        loop = asyncio.get_running_loop()
        if not self._next_refresh:
            self._next_refresh = loop.time() + self.refresh_s
        while True:
            timeout = self._next_refresh - loop.time()
            if not self._dirty and timeout > 0:
                self._wake.clear()
                try:
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            if loop.time() >= self._next_refresh:
                self._next_refresh = loop.time() + self.refresh_s
                await self.refresh_round()
            if self._dirty:
                await self.flush()

    async def flush(self) -> None:
        """Write every dirty user's devices, recompute them, publish the changes."""
        users, self._dirty = list(self._dirty), {}
        removals, self._removals = list(self._removals), {}
        waiters = {u: self._waiters.pop(u) for u in users if u in self._waiters}
        sets = [
            (presence_key(u), self.member(p), state.encode())
            for u in users
            for p, state in self._by_user.get(u, {}).items()
        ]
        try:
            if removals:
                await self.broker.presence_remove_many(removals)
            if sets:
                await self.broker.presence_set_many(sets, self.ttl_s)
            gone = {key.partition(":")[2] for key, _ in removals}
            states = await self.states(users, stamp_offline=gone)
        except BaseException as exc:
            for u in users:  # retried by the next attempt; the writer is restarted
                self._dirty.setdefault(u, None)
            for r in removals:
                self._removals.setdefault(r, None)
            for futs in waiters.values():
                for fut in futs:
                    if not fut.done():
                        fut.set_exception(exc)
            raise
        self.publish_changes(states.values())
        for u, futs in waiters.items():
            for fut in futs:
                if not fut.done():
                    fut.set_result(states[u])

    async def states(
        self, users: Sequence[str], *, stamp_offline: Iterable[str] = ()
    ) -> dict[str, PresenceState]:
        """The combined state of each user (one pipeline, plus one for last-seen times).

        Users in ``stamp_offline`` found offline get their last-seen time set now.
        """
        if not users:
            return {}
        members = await self.broker.presence_get_many([presence_key(u) for u in users])
        offline = [u for u in users if not members[presence_key(u)]]
        stamped = {u: str(now_ms()).encode() for u in stamp_offline if u in set(offline)}
        if stamped:
            await self.broker.set_values(
                [(f"presence-last:{u}", v) for u, v in stamped.items()], LAST_SEEN_TTL_S
            )
        unknown = [u for u in offline if u not in stamped]
        seen = await self.broker.get_values([f"presence-last:{u}" for u in unknown])
        last = {u: seen[f"presence-last:{u}"] for u in unknown} | stamped
        return {u: combined(u, members[presence_key(u)], last.get(u)) for u in users}

    def publish_changes(self, states: Iterable[PresenceState]) -> None:
        """Publish each state that differs from the last one known (batched)."""
        watched = set(self._watched())
        for ps in states:
            summary = (ps.state, ps.last_seen)
            if self._published.get(ps.user) == summary:
                continue
            if ps.user in watched or ps.user in self._by_user:
                self._published[ps.user] = summary
            else:
                self._published.pop(ps.user, None)  # bounded: only users that matter here
            channel = presence_key(ps.user)
            frame = encode_event(channel, 0, "presence", msgspec.to_builtins(ps))
            self.channels.publish(channel, frame)

    async def refresh_round(self) -> None:
        """Restart every open device's TTL, then re-read the followed users."""
        started = time.perf_counter()
        peers = list(self.devices)
        for i in range(0, len(peers), REFRESH_CHUNK):
            chunk = [
                (presence_key(p.principal.user_id), self.member(p), state.encode())
                for p in peers[i : i + REFRESH_CHUNK]
                if (state := self.devices.get(p)) is not None and p.principal is not None
            ]
            if chunk:
                await self.broker.presence_set_many(chunk, self.ttl_s)
        self.m_refresh.observe(time.perf_counter() - started)
        watched = list(self._watched())
        for i in range(0, len(watched), REFRESH_CHUNK):
            states = await self.states(watched[i : i + REFRESH_CHUNK])
            self.publish_changes(states.values())

    async def remove_all(self) -> None:
        """Remove this node's devices now (shutdown); their users go offline at once."""
        for peer in list(self.devices):
            self.closed(peer)
        if self._dirty:
            await self.flush()
