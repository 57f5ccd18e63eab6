"""Applying access changes on every node: revoked sessions, changed rights.

The durable record is the access change log (:mod:`server.accounts.access_log`),
written in the transaction of each change. Every node polls it; this module
adds the fast path and the effects:

- :meth:`Revocations.sessions_revoked` / :meth:`Revocations.user_changed`
  (called after a change commits) publish a notice on topic :data:`TOPIC`, so
  every node polls its log at once instead of at its next interval. The notice
  carries nothing: a lost one only delays the change by one interval.
- :meth:`Revocations.apply` (the watch's callback) does what each change
  means on this node: drop the cached credentials (:class:`AuthCache`), close
  the sockets (4010 ``session revoked`` for a session, 4011 ``rights
  changed`` for a user, who reconnects with the current rights) and tell the
  listeners (capabilities forget cached decisions about the user).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from protocol.errors import CloseCode
from server.accounts.access_log import AccessWatch, Change, ChangeKind
from server.accounts.authcache import AuthCache
from server.broker.base import Broker, BrokerError, Subscription

log = logging.getLogger(__name__)

TOPIC = "accounts.access_changed"


class SocketCloser(Protocol):
    """What revocation needs of the hub."""

    def close_session(self, session_id: str, code: int, reason: str) -> int:
        """Close the sockets of a session."""
        ...

    def close_user(self, user_id: str, code: int, reason: str) -> int:
        """Close the sockets of a user."""
        ...


class Revocations:
    """Publishes change notices and applies the log's changes on this node."""

    def __init__(self, broker: Broker, cache: AuthCache[Any]) -> None:
        self._broker = broker
        self.cache = cache
        self.watch: AccessWatch | None = None
        self._hub: SocketCloser | None = None
        self._sub: Subscription | None = None
        self._listeners: list[Callable[[str], None]] = []
        self.applied = 0

    def on_rights_changed(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(user_id)`` whenever a user's rights change (capabilities' caches)."""
        self._listeners.append(listener)

    async def start(self, hub: SocketCloser | None, watch: AccessWatch) -> None:
        """Subscribe to notices; changes close ``hub``'s sockets (when given)."""
        self._hub = hub
        self.watch = watch
        if self._sub is None:
            self._sub = await self._broker.subscribe(TOPIC, lambda topic, payload: watch.poke())

    async def close(self) -> None:
        """Unsubscribe (idempotent)."""
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await self._broker.unsubscribe(sub)
            except BrokerError:
                log.warning("could not unsubscribe from access notices")

    async def sessions_revoked(self, session_ids: list[str]) -> None:
        """Tell every node to poll the log now (the sessions are already revoked in it)."""
        if session_ids:
            await self._notify()

    async def user_changed(self, user_id: str) -> None:
        """Tell every node to poll the log now (the change is already in it)."""
        await self._notify()

    async def _notify(self) -> None:
        if self.watch is not None:
            self.watch.poke()  # this node need not wait for the broker
        try:
            await self._broker.publish(TOPIC, b"")
        except BrokerError:  # the other nodes see it at their next poll
            log.warning("could not publish an access notice")

    def apply(self, changes: list[Change]) -> None:
        """The effects of ``changes`` on this node (see the module docstring)."""
        hub = self._hub
        for change in changes:
            self.applied += 1
            if change.kind is ChangeKind.SESSION and change.session_id is not None:
                self.cache.forget_session(change.user_id, change.session_id)
                if hub is not None:
                    hub.close_session(
                        change.session_id, CloseCode.SESSION_REVOKED, "session revoked"
                    )
                continue
            self.cache.forget_user(change.user_id)
            if change.kind is ChangeKind.RIGHTS:
                if hub is not None:
                    hub.close_user(change.user_id, CloseCode.RIGHTS_CHANGED, "rights changed")
                for listener in self._listeners:
                    try:
                        listener(change.user_id)
                    except Exception:
                        log.exception("rights listener failed")
