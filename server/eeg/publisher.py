"""An ordered publisher for the EEG topics: one broker batch in flight at a time.

The channel service batches publishes per loop step, but its batches may
overlap in time, and on Redis two pipelines on pooled connections can then
overtake each other. Chat does not mind (its events carry seqs and are
recovered from the store); a stream's topic does: a node receiving frame
``n + 1`` before frame ``n`` would see a hole. :class:`OrderedPublisher`
keeps the call order: what is published while a batch is in flight leaves in
the next batch, after it. Fill replies (:mod:`server.eeg.relay`) go through
the same publisher, so a reply never overtakes the samples accepted before it.

**Bound.** :meth:`OrderedPublisher.publish` never blocks, so a broker that is
slow or down (Redis unreachable until its timeout) would let messages pile
up for as long as the recorders stream. The sample frames held (queued, or
in the batch in flight) are bounded by ``max_bytes`` (the setting
``eeg_publish_queue_bytes``): a sample frame that does not fit is dropped,
counted (:attr:`OrderedPublisher.dropped`, ``medhub_eeg_publish_dropped_total``)
and logged once per overflow episode: one warning at the first drop (no
payload, no topic); the episode ends when everything held has left, and the
next drop after that warns again. What is kept leaves in call order.

Only sample frames (``F`` messages on ``eegraw:<stream>``) are ever dropped:
losing one costs the recording nothing and the other nodes a gap, never wrong
data:

- the owner node pushed the samples into its own feed (its ring and its
  viewers) and queued them for the store *before* publishing them, so the
  recording, its acknowledgements, the export and the owner node's viewers
  lose nothing;
- another node watching the stream sees the next sample frame start past its
  ring's end: it counts a hole (``Feed.holes``, logged ``eeg topic hole``) and
  the range becomes a gap in *that node's* ring. Its viewers get no live
  frames for it, and while the range is in that node's ring a backfill page
  answers it as ``missing`` (pages are read from the ring, not the store); the
  range is read from the store once it is older than that node's ring, and a
  node whose feed is created later fills it from the owner's complete ring
  (:mod:`server.eeg.relay`). Holes are not repaired from the store while in
  a node's ring.

Everything else is always queued, whatever the bound (and is not counted in
it): a gap (``G``) or end (``E``) message is a few bytes and the end is what
tells other nodes the stream closed (without it their viewers would never see
the last outputs or the closed state); a fill reply answers a request that
waits for all of it (a lost part would be a silent hole in the asking node's
ring, a lost ``end`` a wait of ``eeg_fill_timeout_s``), and its size is
bounded by the ring it copies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from server.broker.base import Broker, BrokerError
from server.config import EEG_PUBLISH_QUEUE_MIN_BYTES
from server.eeg.feed import samples_message, topic_of
from server.supervise import Supervisor

log = logging.getLogger(__name__)

#: Smallest ``max_bytes`` accepted (the setting's lower bound).
MIN_QUEUE_BYTES = EEG_PUBLISH_QUEUE_MIN_BYTES

_SAMPLES_TOPIC = topic_of("")  # "eegraw:"
_SAMPLES_TAG = samples_message(b"")  # b"F"


def is_sample_frame(topic: str, payload: bytes) -> bool:
    """True for a stream topic's sample frame: the only kind the bound may drop."""
    return topic.startswith(_SAMPLES_TOPIC) and payload[:1] == _SAMPLES_TAG


class OrderedPublisher:
    """Publishes ``(topic, payload)`` in call order, batched per loop step.

    ``max_bytes`` bounds the payload bytes of sample frames held (queued or
    in flight; see the module docstring); ``on_dropped`` is called once per
    dropped frame (a metric). Raises ValueError when ``max_bytes`` is below
    :data:`MIN_QUEUE_BYTES`.
    """

    def __init__(
        self,
        broker: Broker,
        supervisor: Supervisor,
        *,
        max_bytes: int,
        on_dropped: Callable[[], None] | None = None,
    ) -> None:
        if max_bytes < MIN_QUEUE_BYTES:
            raise ValueError(f"max_bytes must be at least {MIN_QUEUE_BYTES}")
        self.broker, self.supervisor = broker, supervisor
        self.max_bytes = max_bytes
        self._on_dropped = on_dropped
        self._queue: list[tuple[str, bytes]] = []
        self._task: asyncio.Task[None] | None = None
        self._sample_bytes = 0
        self._episode_dropped = 0  #: frames dropped since the overflow began (0: none)
        self.failures = 0  #: batches the broker refused (their messages are lost)
        self.dropped = 0  #: sample frames dropped because the bound was reached

    @property
    def sample_bytes(self) -> int:
        """Payload bytes of the sample frames queued or in flight (at most ``max_bytes``)."""
        return self._sample_bytes

    def publish(self, topic: str, payload: bytes) -> None:
        """Queue a message (never blocks); it leaves after everything queued before it.

        A sample frame that would take :attr:`sample_bytes` past ``max_bytes``
        is dropped instead (counted in :attr:`dropped`); other messages are
        always queued.
        """
        if is_sample_frame(topic, payload):
            size = len(payload)
            if self._sample_bytes + size > self.max_bytes:
                self._drop()
                return
            self._sample_bytes += size
        self._queue.append((topic, payload))
        if self._task is None:
            self._task = self.supervisor.spawn("eeg-publish", self._drain())

    def _drop(self) -> None:
        self.dropped += 1
        if self._on_dropped is not None:
            self._on_dropped()
        if self._episode_dropped == 0:
            log.warning(
                "eeg publish queue full: dropping sample frames until the broker catches up",
                extra={"max_bytes": self.max_bytes, "held_bytes": self._sample_bytes},
            )
        self._episode_dropped += 1

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # the rest of this loop step joins the batch
            while self._queue:
                batch, self._queue = self._queue, []
                held = sum(len(p) for t, p in batch if is_sample_frame(t, p))
                try:
                    await self.broker.publish_many(batch)
                except BrokerError as exc:
                    self.failures += 1
                    log.warning("eeg publish failed", extra={"error": type(exc).__name__})
                finally:
                    self._sample_bytes -= held
            self._episode_dropped = 0  # all held left: the next drop is a new episode
        finally:
            self._task = None

    async def close(self, timeout_s: float = 5.0) -> None:
        """Wait (at most ``timeout_s``) for what is queued to leave."""
        task = self._task
        if task is not None:
            await asyncio.wait([task], timeout=timeout_s)
