"""Presence of users across nodes, in the broker's presence registry.

Each socket is a device: member ``<node>:<conn>`` of broker presence key
``presence:<user>`` with its state as value and a TTL of ``ttl_s`` seconds,
refreshed every ``refresh_s`` by ONE task per node (not per socket). A user's
state is the strongest over the unexpired devices (``in-call`` > ``busy`` >
``away`` > ``online``), ``offline`` when none is left, with ``last_seen``
(unix ms, broker value ``presence-last:<user>``) stamped when the last device
goes. A node that dies stops refreshing, so its devices expire by themselves.

Changes are published on topic ``presence:<user>`` (msgpack of
:class:`~protocol.presence.PresenceState`) by the node that saw them; each
node subscribed for local followers sends them COALESCE (keyed by user): a slow
socket gets the latest state, never each flap. The refresh task also re-reads
the followed users, so a dead node's users turn offline for followers within
about ``ttl_s + refresh_s``.

Updates are applied by one worker per node in arrival order (a close never
overtakes the open of the same socket). The periodic refresh goes through the
same worker, in chunks of :data:`REFRESH_CHUNK`, and skips a device closed
meanwhile, so it never writes a closed device back (the close's removal is
queued after it). Visibility: rule 5 of :mod:`server.policy`;
refusals are audited. Handler errors: ``bad_request`` (too
many users followed), ``unavailable`` (broker down).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import msgspec

from protocol.codec import JsonCodec, MsgpackCodec
from protocol.errors import ErrorCode
from protocol.messages import Event
from protocol.presence import (
    MAX_WATCHED_PER_SOCKET,
    PresenceGet,
    PresenceSet,
    PresenceState,
    PresenceSubscribe,
    PresenceUnsubscribe,
    rank,
)
from protocol.presence import STATES as _STATES
from server import policy
from server.audit.events import Action as AuditAction
from server.audit.events import AuditEvent
from server.audit.events import Result as AuditResult
from server.broker.base import Broker, BrokerError, Subscription
from server.chat.access import audit_id
from server.chat.facts import Facts, subject_of
from server.connection import Connection
from server.hub import AuditRecorder
from server.policy import Role
from server.router import HandlerError, RequestContext, Router
from server.sendqueue import Delivery

log = logging.getLogger(__name__)

_MSGPACK, _JSON = MsgpackCodec(), JsonCodec()
#: Seconds a user's last-seen time is kept after their last device left (90 days).
LAST_SEEN_TTL_S = 90 * 24 * 3600.0
#: Devices (or followed users) refreshed by one job of the ordered worker.
REFRESH_CHUNK = 100


def _ms() -> int:
    return time.time_ns() // 1_000_000


class _Watch:
    __slots__ = ("conns", "ready", "subscription")

    def __init__(self) -> None:
        self.conns: set[Connection] = set()
        self.subscription: Subscription | None = None
        self.ready = asyncio.Event()  # set once subscribed (or failed, and dropped)


class PresenceService:
    """Presence of one node; see the module docstring."""

    def __init__(
        self, broker: Broker, facts: Facts, audit: AuditRecorder, node_id: str, *,
        ttl_s: float = 30.0, refresh_s: float = 10.0,
    ) -> None:  # fmt: skip
        self.broker, self.facts, self.audit, self.node = broker, facts, audit, node_id
        self.ttl_s, self.refresh_s = ttl_s, refresh_s
        self.devices: dict[Connection, str] = {}
        self._watch: dict[str, _Watch] = {}
        self._conn_watch: dict[Connection, set[str]] = {}
        self._published: dict[str, tuple[str, int | None]] = {}
        self._jobs: asyncio.Queue[tuple[Callable[[], Awaitable[Any]], asyncio.Future[Any] | None]]
        self._jobs = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def register(self, router: Router) -> None:
        """Route the presence requests."""
        router.add(PresenceSet, self.set_state)
        router.add(PresenceSubscribe, self.subscribe)
        router.add(PresenceUnsubscribe, self.unsubscribe)
        router.add(PresenceGet, self.get)

    async def start(self) -> None:
        """Start the update worker and the refresh task."""
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._worker(), name="presence-worker"),
                loop.create_task(self._refresh(), name="presence-refresh"),
            ]

    async def close(self) -> None:
        """Remove this node's devices and stop."""
        for conn in list(self.devices):
            self.connection_closed(conn)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._jobs.put_nowait((_noop, done))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(done, 5.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for w in self._watch.values():
            if w.subscription is not None:
                with contextlib.suppress(BrokerError):
                    await self.broker.unsubscribe(w.subscription)
        self._watch.clear()

    # -- devices -------------------------------------------------------------------
    def _member(self, conn: Connection) -> str:
        return f"{self.node}:{conn.conn_id}"

    def connection_opened(self, conn: Connection) -> None:
        """A socket is a new device, ``online``."""
        if conn.principal is None:
            return
        self.devices[conn] = "online"
        user, member = conn.principal.user_id, self._member(conn)
        self._jobs.put_nowait((lambda: self._set(user, member, "online"), None))

    def connection_closed(self, conn: Connection) -> None:
        """A device is gone; also drop the socket's follows."""
        for user in self._conn_watch.pop(conn, set()):
            self._unwatch(conn, user)
        if self.devices.pop(conn, None) is None or conn.principal is None:
            return
        user, member = conn.principal.user_id, self._member(conn)
        self._jobs.put_nowait((lambda: self._remove(user, member), None))

    async def _worker(self) -> None:
        while True:
            job, fut = await self._jobs.get()
            try:
                result = await job()
            except Exception as exc:
                log.warning("presence update failed", extra={"error": type(exc).__name__})
                if fut is not None and not fut.done():
                    fut.set_exception(exc)
            else:
                if fut is not None and not fut.done():
                    fut.set_result(result)

    async def _set(self, user: str, member: str, state: str) -> PresenceState:
        await self.broker.presence_set(f"presence:{user}", member, state.encode(), self.ttl_s)
        return await self._recompute(user)

    async def _remove(self, user: str, member: str) -> PresenceState:
        key = f"presence:{user}"
        await self.broker.presence_remove(key, member)
        if not await self.broker.presence_get(key):
            await self.broker.set_value(
                f"presence-last:{user}", str(_ms()).encode(), LAST_SEEN_TTL_S
            )
        return await self._recompute(user)

    async def state_of(self, user: str) -> PresenceState:
        """``user``'s combined state now (reads the broker)."""
        members = await self.broker.presence_get(f"presence:{user}")
        best = max((v.decode() for v in members.values()), key=rank, default="offline")
        if best not in _STATES:
            best = "online"
        last_seen = None
        if best == "offline":
            raw = await self.broker.get_value(f"presence-last:{user}")
            last_seen = int(raw) if raw else None
        return PresenceState(user=user, state=best, ts=_ms(), last_seen=last_seen)

    async def _recompute(self, user: str) -> PresenceState:
        ps = await self.state_of(user)
        summary = (ps.state, ps.last_seen)
        if self._published.get(user) != summary:
            self._published[user] = summary
            if ps.state == "offline" and user not in self._watch:
                self._published.pop(user, None)
            await self.broker.publish(f"presence:{user}", msgpack.packb(msgspec.to_builtins(ps)))
        return ps

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            conns, users = list(self.devices), list(self._watch)
            last: asyncio.Future[Any] | None = None
            for i in range(0, len(conns), REFRESH_CHUNK):
                last = self._enqueue(self._refresh_devices, conns[i : i + REFRESH_CHUNK])
            for i in range(0, len(users), REFRESH_CHUNK):
                last = self._enqueue(self._refresh_users, users[i : i + REFRESH_CHUNK])
            if last is not None:  # never queue a new round before this one is done
                with contextlib.suppress(Exception):
                    await last

    def _enqueue(
        self, job: Callable[[list[Any]], Awaitable[None]], items: list[Any]
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._jobs.put_nowait((lambda: job(items), fut))
        return fut

    async def _refresh_devices(self, conns: list[Connection]) -> None:
        """Restart the TTL of the devices still open (run by the ordered worker)."""
        for conn in conns:
            state = self.devices.get(conn)  # None: closed since; its removal is queued
            if state is not None and conn.principal is not None:
                key = f"presence:{conn.principal.user_id}"
                await self.broker.presence_set(key, self._member(conn), state.encode(), self.ttl_s)

    async def _refresh_users(self, users: list[str]) -> None:
        """Re-read followed users (a dead node's devices expire) and publish changes."""
        for user in users:
            if user in self._watch:
                await self._recompute(user)

    # -- following ----------------------------------------------------------------------
    def _on_change(self, topic: str, payload: bytes) -> None:
        data = msgpack.unpackb(payload, raw=False)
        user = data.get("user")
        watch = self._watch.get(user)
        if watch is None:
            return
        self._published[user] = (data.get("state"), data.get("last_seen"))
        event = Event(ch=topic, seq=0, kind="presence", data=data)
        frames: dict[bool, bytes | str] = {}
        for conn in list(watch.conns):
            binary = conn.codec.binary
            if binary not in frames:
                frames[binary] = (_MSGPACK if binary else _JSON).encode(event)
            conn.send_frame(frames[binary], "event", Delivery.COALESCE, key=topic)

    async def _watch_user(self, conn: Connection, user: str) -> None:
        """Follow ``user`` for ``conn``; returns once the subscription is active."""
        while True:
            watch = self._watch.get(user)
            if watch is None:
                watch = self._watch[user] = _Watch()
                watch.conns.add(conn)
                try:
                    watch.subscription = await self.broker.subscribe(
                        f"presence:{user}", self._on_change
                    )
                except BaseException:
                    if self._watch.get(user) is watch:
                        del self._watch[user]
                    raise
                finally:
                    watch.ready.set()
                break
            await watch.ready.wait()
            if self._watch.get(user) is watch:
                break
            # its subscribe failed and it was dropped: start over (and subscribe ourselves)
        watch.conns.add(conn)
        self._conn_watch.setdefault(conn, set()).add(user)

    def _unwatch(self, conn: Connection, user: str) -> None:
        watch = self._watch.get(user)
        if watch is None:
            return
        watch.conns.discard(conn)
        if not watch.conns:
            del self._watch[user]
            sub = watch.subscription
            if sub is not None:
                self._jobs.put_nowait((lambda: self.broker.unsubscribe(sub), None))

    # -- visibility ------------------------------------------------------------------------
    async def _contacts(self, viewer: policy.Subject) -> list[str]:
        me = viewer.user_id
        rels = await self.facts.relationships_of([me])
        if viewer.role == Role.PATIENT:
            carers = {r.actor_id for r in rels if r.patient_id == me}
            dels = await self.facts.delegations_of(carers)
            return sorted(carers | {d.delegate_id for d in dels if d.practitioner_id in carers})
        colleagues = {u.user_id for u in await self.facts.colleagues(viewer.org_id)}
        practitioners = {me} | {d.practitioner_id for d in viewer.delegations}
        if practitioners != {me}:
            rels = rels | await self.facts.relationships_of(practitioners)
        patients = {r.patient_id for r in rels if r.actor_id in practitioners}
        return sorted((colleagues | patients) - {me})

    async def _visible(
        self, ctx: RequestContext, users: list[str], contacts: bool
    ) -> tuple[list[str], list[str]]:
        p = ctx.principal
        viewer = await subject_of(self.facts, p.user_id, p.org_id, p.role, p.acting_for)
        wanted = list(dict.fromkeys(users))
        if contacts:
            wanted += [u for u in await self._contacts(viewer) if u not in wanted]
        found = await self.facts.users(wanted)
        dels = await self.facts.delegations_of(list(found))
        rels = policy.Facts(await self.facts.relationships_of([p.user_id, *found]))
        allowed, refused = [], []
        for user in wanted:
            fact = found.get(user)
            if fact is None:
                refused.append(user)
                self._audit(ctx, AuditAction.DENIED, user, "unknown_user")
                continue
            target = policy.Subject(
                user, fact.org_id, fact.role, frozenset(d for d in dels if d.delegate_id == user)
            )
            decision = policy.presence_visible(viewer, target, rels)
            if decision:
                allowed.append(user)
            else:
                refused.append(user)
                self._audit(ctx, AuditAction.DENIED, user, decision.reason)
        return allowed, refused

    def _audit(
        self, ctx: RequestContext, action: AuditAction, target: str, reason: str | None = None
    ) -> None:
        p = ctx.principal
        self.audit.record(
            AuditEvent(
                action=action, result=AuditResult.OK if reason is None else AuditResult.DENIED,
                actor=p.user_id, acting_for=p.acting_for, role=p.role, org=p.org_id,
                target_type="presence", target_id=audit_id(target), reason=reason,
                source=ctx.connection.client_address, request_id=ctx.connection.conn_id,
            )
        )  # fmt: skip

    # -- handlers ---------------------------------------------------------------------------
    async def set_state(self, ctx: RequestContext, msg: PresenceSet) -> dict[str, Any]:
        """Set this device's state; answers the user's combined state."""
        conn = ctx.connection
        self.devices[conn] = msg.state
        fut: asyncio.Future[PresenceState] = asyncio.get_running_loop().create_future()
        user, member = ctx.principal.user_id, self._member(conn)
        self._jobs.put_nowait((lambda: self._set(user, member, msg.state), fut))
        try:
            ps = await fut
        except BrokerError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "broker unavailable") from exc
        return {"state": ps.state}

    async def get(self, ctx: RequestContext, msg: PresenceGet) -> dict[str, Any]:
        """A snapshot of the visible users among those asked."""
        allowed, refused = await self._visible(ctx, msg.users, msg.contacts)
        self._audit(ctx, AuditAction.READ, ctx.principal.user_id)
        return await self._snapshot(allowed, refused)

    async def subscribe(self, ctx: RequestContext, msg: PresenceSubscribe) -> dict[str, Any]:
        """Follow the visible users asked; a snapshot now, changes as events."""
        conn = ctx.connection
        allowed, refused = await self._visible(ctx, msg.users, msg.contacts)
        already = self._conn_watch.get(conn, set())
        if len(already | set(allowed)) > MAX_WATCHED_PER_SOCKET:
            raise HandlerError(ErrorCode.BAD_REQUEST, f"at most {MAX_WATCHED_PER_SOCKET} users")
        try:
            for user in allowed:
                await self._watch_user(conn, user)
        except BrokerError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "broker unavailable") from exc
        self._audit(ctx, AuditAction.SUBSCRIBE, ctx.principal.user_id)
        return await self._snapshot(allowed, refused)

    async def unsubscribe(self, ctx: RequestContext, msg: PresenceUnsubscribe) -> dict[str, Any]:
        """Stop following some (or all) users."""
        conn = ctx.connection
        mine = self._conn_watch.get(conn, set())
        for user in list(msg.users or mine):
            if user in mine:
                mine.discard(user)
                self._unwatch(conn, user)
        return {}

    async def _snapshot(self, allowed: list[str], refused: list[str]) -> dict[str, Any]:
        try:
            states = [msgspec.to_builtins(await self.state_of(u)) for u in allowed]
        except BrokerError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "broker unavailable") from exc
        return {"presence": states, "refused": refused}


async def _noop() -> None:
    return None
