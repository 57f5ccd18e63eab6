"""The EEG capability's counters (``/metrics``) and its LOSSY channels' gap marker."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from protocol.messages import Event, ServerMessage


def gap_marker(channel: str, skipped: int) -> ServerMessage:
    """The event telling a slow viewer that ``skipped`` frames of ``channel`` were dropped."""
    return Event(ch=channel, seq=0, kind="gap", data={"skipped": skipped})


class EegMetrics:
    """The capability's counters on ``/metrics`` (viewer drops: ``medhub_channel_*``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.samples = Counter(
            "medhub_eeg_samples",
            "EEG samples per channel, by outcome",
            ["result"],
            registry=registry,
        )
        self.view_frames = Counter(
            "medhub_eeg_view_frames",
            "Live eeg.view frames delivered to view channels",
            registry=registry,
        )
        self.pages = Counter(
            "medhub_eeg_backfill_pages",
            "Backfill pages served, by source",
            ["source"],
            registry=registry,
        )
        self.publish_dropped = Counter(
            "medhub_eeg_publish_dropped",
            "EEG sample frames not published to other nodes: eeg_publish_queue_bytes reached",
            registry=registry,
        )

    def count(self, result: str, n: int) -> None:
        """Count ``n`` samples of ``result`` (accepted, duplicate, gap, persist_failure)."""
        self.samples.labels(result).inc(n)
