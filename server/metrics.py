"""Prometheus metrics of one hub process, in a registry of its own (no globals).

Served at ``/metrics``. Label values are bounded sets (message types from the
protocol registry, error codes from the catalogue, close codes), never user
data.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


class _TallyCollector(Collector):
    """Per-frame counters kept as plain integers, turned into metrics at scrape time.

    A prometheus ``Counter.inc`` takes a lock; at hundreds of thousands of
    frames per second (fan-out) that lock costs more than the rest of the path.
    Only the event loop's thread touches these tallies.
    """

    def __init__(self, name: str, doc: str, label: str) -> None:
        self.name, self.doc, self.label = name, doc, label
        self.tally: Tally[str] = Tally()

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.doc, labels=[self.label])
        for value, count in sorted(self.tally.items()):
            family.add_metric([value], count)
        yield family


class _ReadCollector(Collector):
    """Values read from components at scrape time (counters kept in plain attributes)."""

    def __init__(self) -> None:
        self.reads: list[tuple[str, str, str, Callable[[], float]]] = []

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        for name, doc, kind, read in self.reads:
            try:
                value = float(read())
            except Exception:  # a component gone or failing must not break /metrics
                log.debug("metric read failed", extra={"metric": name})
                continue
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, doc)
            family.add_metric([], value)
            yield family


class Metrics:
    """Every metric the hub exports; build one per process in the composition root."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge("medhub_ws_connections", "Open authenticated sockets", registry=r)
        self._in = _TallyCollector("medhub_ws_messages_in", "Frames received, by type", "type")
        self._out = _TallyCollector("medhub_ws_messages_out", "Frames queued, by type", "type")
        self._errors = _TallyCollector("medhub_ws_errors", "Error replies, by code", "code")
        for collector in (self._in, self._out, self._errors):
            r.register(collector)
        self.queue_drops = Counter(
            "medhub_ws_queue_drops",
            "Frames dropped or coalesced, by policy",
            ["policy"],
            registry=r,
        )
        self.handshake_failures = Counter(
            "medhub_ws_handshake_failures", "Refused handshakes, by reason", ["reason"], registry=r
        )
        self.closes = Counter(
            "medhub_ws_closes", "Sockets closed, by close code", ["code"], registry=r
        )
        self.transport_closes = Counter(
            "medhub_transport_closes",
            "Connections refused or closed below the hub (server/limits.py), by reason",
            ["reason"],
            registry=r,
        )
        self.integrity_failures = Counter(
            "medhub_integrity_failures",
            "Stored data that failed its integrity check (decryption or MAC): incidents",
            registry=r,
        )
        self.request_seconds = Histogram(
            "medhub_ws_request_seconds",
            "Time from a request's arrival to its reply being queued, by type",
            ["type"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

        self._reads = _ReadCollector()
        r.register(self._reads)
        # Label children cached by value: labels() costs a lock and a tuple per call.
        self._children: dict[tuple[int, str], Any] = {}

    def _child(self, metric: Histogram, value: str) -> Any:
        key = (id(metric), value)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(value)
        return child

    def read(self, name: str, doc: str, kind: str, value: Callable[[], float]) -> None:
        """Export ``value()`` (read at each scrape) as a ``counter`` or ``gauge``."""
        self._reads.reads.append((name, doc, kind, value))

    def count_in(self, kind: str) -> None:
        """One frame of message type ``kind`` received."""
        self._in.tally[kind] += 1

    def count_out(self, kind: str, n: int = 1) -> None:
        """``n`` frames of message type ``kind`` queued (or written) for sending."""
        self._out.tally[kind] += n

    def count_error(self, code: str) -> None:
        """One ``error`` reply with ``code``."""
        self._errors.tally[code] += 1

    def observe_request(self, kind: str, seconds: float) -> None:
        """A request of type ``kind`` took ``seconds`` to answer."""
        self._child(self.request_seconds, kind).observe(seconds)

    def render(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)
