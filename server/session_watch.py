"""Live sockets end with their login session: absolute end and idle end.

The hub's ticker (about once a second) calls :meth:`SessionWatch.poll` with
its sockets; no socket has a timer or task of its own.

* **Absolute end.** :attr:`server.auth.Principal.expires_at` is the wall-clock
  time (``time.time()`` seconds, the clock of the sessions table) at which the
  socket's session ends whatever happens (session absolute timeout, guest
  account expiry). Each tick closes a socket past it with 4010
  (``SESSION_REVOKED``), reason ``session_expired``: one attribute read and a
  comparison per socket.
* **Idle end.** A request on a socket (any request; heartbeats and ``hello``
  do not count, as clients answer heartbeats on their own) marks the socket
  ``active``. Every ``interval_s`` (``min(60 s, session idle timeout / 4)``)
  the watch hands the :class:`SessionKeeper` the session ids of live sockets
  that saw a request (their ``last_seen`` is refreshed, as a REST call would)
  and all the watched ids; the keeper answers which sessions have ended (idle,
  past their end, revoked), and their sockets close with 4010
  ``session_expired``. So an active socket keeps its session alive, the
  session of an idle socket ends at its idle timeout like any other, and the
  socket closes within ``interval_s`` of that. One batched call per node per
  interval, in a background task so the ticker never waits on the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Iterable
from typing import Protocol

from protocol.errors import CloseCode
from server.auth import Principal

log = logging.getLogger(__name__)

#: The close reason of a socket whose session ended by timeout (code 4010).
SESSION_EXPIRED = "session_expired"
#: Longest interval between two keeper rounds (last-seen refreshed at most this often).
MAX_INTERVAL_S = 60.0


class Watched(Protocol):
    """What the watch needs of a socket (:class:`server.connection.Connection`)."""

    active: bool

    @property
    def principal(self) -> Principal | None:
        """Who the socket is authenticated as."""
        ...

    @property
    def closing(self) -> bool:
        """True once a close was requested."""
        ...

    def close(self, code: int, reason: str, *, flush: bool = False) -> None:
        """Close the socket."""
        ...


class SessionKeeper(Protocol):
    """Keeps login sessions alive from socket activity (the accounts sidecar)."""

    async def keep_alive(self, active: Collection[str], watched: Collection[str]) -> set[str]:
        """Refresh ``active`` sessions' last use; return the ids of ``watched`` that ended."""
        ...


def keeper_interval(idle_timeout_s: float) -> float:
    """Seconds between keeper rounds for a session idle timeout."""
    return min(MAX_INTERVAL_S, idle_timeout_s / 4)


class SessionWatch:
    """Closes sockets whose session ended (see the module docstring)."""

    def __init__(self, keeper: SessionKeeper | None, interval_s: float) -> None:
        self.keeper = keeper
        self.interval_s = interval_s
        self._next_round: float | None = None
        self._round: asyncio.Task[None] | None = None

    def poll(self, conns: Iterable[Watched], now: float, wall: float) -> None:
        """One tick: close sockets past their absolute end; start a keeper round when due.

        ``now`` is the ticker's monotonic time, ``wall`` the wall-clock time.
        """
        due = self.keeper is not None and self._round is None
        if due:
            if self._next_round is None:
                self._next_round = now + self.interval_s
            due = now >= self._next_round
        active: dict[str, list[Watched]] = {}
        watched: dict[str, list[Watched]] = {}
        for conn in conns:
            p = conn.principal
            if p is None or conn.closing:
                continue
            if p.expires_at is not None and wall >= p.expires_at:
                conn.close(CloseCode.SESSION_REVOKED, SESSION_EXPIRED, flush=True)
            elif due:
                watched.setdefault(p.session_id, []).append(conn)
                if conn.active:
                    conn.active = False
                    active.setdefault(p.session_id, []).append(conn)
        if due:
            self._next_round = now + self.interval_s
            if watched:
                self._round = asyncio.get_running_loop().create_task(
                    self._keep(list(active), watched)
                )

    async def _keep(self, active: list[str], watched: dict[str, list[Watched]]) -> None:
        assert self.keeper is not None
        try:
            ended = await self.keeper.keep_alive(active, list(watched))
        except Exception:
            # A database hiccup must not close every socket: retry at the next round.
            log.exception("session keeper failed")
            return
        finally:
            self._round = None
        for session_id in ended:
            for conn in watched.get(session_id, ()):
                conn.close(CloseCode.SESSION_REVOKED, SESSION_EXPIRED, flush=True)

    async def close(self) -> None:
        """Cancel a keeper round in flight (hub shutdown)."""
        task, self._round = self._round, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
