"""An ordered publisher for the EEG topics: one broker batch in flight at a time.

The channel service batches publishes per loop step, but its batches may
overlap in time, and on Redis two pipelines on pooled connections can then
overtake each other. Chat does not mind (its events carry seqs and are
recovered from the store); a stream's topic does: a node receiving frame
``n + 1`` before frame ``n`` would see a hole. :class:`OrderedPublisher`
keeps the call order: what is published while a batch is in flight leaves in
the next batch, after it. Fill replies (:mod:`server.eeg.relay`) go through
the same publisher, so a reply never overtakes the samples accepted before it.
"""

from __future__ import annotations

import asyncio
import logging

from server.broker.base import Broker, BrokerError
from server.supervise import Supervisor

log = logging.getLogger(__name__)


class OrderedPublisher:
    """Publishes ``(topic, payload)`` in call order, batched per loop step."""

    def __init__(self, broker: Broker, supervisor: Supervisor) -> None:
        self.broker, self.supervisor = broker, supervisor
        self._queue: list[tuple[str, bytes]] = []
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    def publish(self, topic: str, payload: bytes) -> None:
        """Queue a message (never blocks); it leaves after everything queued before it."""
        self._queue.append((topic, payload))
        if self._task is None:
            self._task = self.supervisor.spawn("eeg-publish", self._drain())

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # the rest of this loop step joins the batch
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    await self.broker.publish_many(batch)
                except BrokerError as exc:
                    self.failures += 1
                    log.warning("eeg publish failed", extra={"error": type(exc).__name__})
        finally:
            self._task = None

    async def close(self, timeout_s: float = 5.0) -> None:
        """Wait (at most ``timeout_s``) for what is queued to leave."""
        task = self._task
        if task is not None:
            await asyncio.wait([task], timeout=timeout_s)
