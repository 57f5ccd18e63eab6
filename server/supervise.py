"""Supervised background work: no loop of the node may die silently.

:meth:`Supervisor.loop` runs a long-lived coroutine (the hub ticker, the
presence refresh, the chat checker, the access watch). When it raises, the
failure is logged with its traceback, counted in
``medhub_task_failures_total{task}``, and the loop is started again after a
backoff (0.1 s doubling to ``max_backoff_s``, reset once a run lasted a
minute); ``medhub_task_restarts_total{task}`` counts the restarts. A loop that
failed ``unhealthy_failures`` times within ``unhealthy_window_s`` seconds is
reported unhealthy by :meth:`Supervisor.health` (so ``/readyz`` answers 503)
until it has run a whole window without failing.

:meth:`Supervisor.spawn` keeps a reference to a one-shot task (so it is never
garbage-collected mid-flight) and logs and counts its failure.

Not thread-safe: use it from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger(__name__)

#: A run at least this long (seconds) resets a loop's backoff.
STABLE_RUN_S = 60.0


class _Loop:
    __slots__ = ("failures", "name", "task")

    def __init__(self, name: str) -> None:
        self.name = name
        self.task: asyncio.Task[None] | None = None
        self.failures: deque[float] = deque(maxlen=64)


class Supervisor:
    """The background tasks of one node; see the module docstring."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_backoff_s: float = 5.0,
        unhealthy_failures: int = 3,
        unhealthy_window_s: float = 60.0,
    ) -> None:
        self.max_backoff_s = max_backoff_s
        self.unhealthy_failures = unhealthy_failures
        self.unhealthy_window_s = unhealthy_window_s
        self._loops: dict[str, _Loop] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        r = registry or CollectorRegistry()
        self._failures = Counter(
            "medhub_task_failures", "Background task failures, by task", ["task"], registry=r
        )
        self._restarts = Counter(
            "medhub_task_restarts", "Background loops restarted, by task", ["task"], registry=r
        )

    def loop(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``factory()`` now and again after every failure, until :meth:`close`.

        ``name`` must be unique (ValueError otherwise). A run that returns
        normally ends the loop (it is not restarted).
        """
        if name in self._loops:
            raise ValueError(f"loop {name} is already supervised")
        entry = self._loops[name] = _Loop(name)
        entry.task = asyncio.get_running_loop().create_task(self._run(entry, factory), name=name)

    async def _run(self, entry: _Loop, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        backoff = 0.1
        while not self._closed:
            started = time.monotonic()
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                now = time.monotonic()
                entry.failures.append(now)
                self._failures.labels(entry.name).inc()
                if now - started >= STABLE_RUN_S:
                    backoff = 0.1
                log.error(
                    "background loop failed; restarting",
                    exc_info=exc,
                    extra={"task": entry.name, "retry_in_s": round(backoff, 3)},
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)
            self._restarts.labels(entry.name).inc()

    def spawn(self, name: str, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in a task kept until done; its failure is logged and counted."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(name, t))
        return task

    def _done(self, name: str, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._failures.labels(name).inc()
            log.error("background task failed", exc_info=exc, extra={"task": name})

    @property
    def pending(self) -> int:
        """One-shot tasks still running."""
        return len(self._tasks)

    def health(self) -> dict[str, bool]:
        """``{loop name: healthy}``: unhealthy when stopped, or failing repeatedly."""
        now = time.monotonic()
        out = {}
        for name, entry in self._loops.items():
            recent = sum(1 for t in entry.failures if now - t <= self.unhealthy_window_s)
            running = entry.task is not None and not entry.task.done()
            out[name] = running and recent < self.unhealthy_failures
        return out

    async def wait_spawned(self, timeout_s: float) -> None:
        """Wait at most ``timeout_s`` for the one-shot tasks (e.g. pending publishes)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)

    async def stop(self, name: str) -> None:
        """Cancel loop ``name`` (if supervised) and wait for it to end."""
        entry = self._loops.pop(name, None)
        if entry is not None and entry.task is not None:
            entry.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await entry.task

    async def close(self) -> None:
        """Cancel every loop and one-shot task and wait for them to end."""
        self._closed = True
        tasks = [e.task for e in self._loops.values() if e.task is not None]
        tasks += list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._loops.clear()
        self._tasks.clear()
