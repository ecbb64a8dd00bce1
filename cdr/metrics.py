"""Prometheus metrics of the CDR pipeline, registered once per registry (default: the global one)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram


class CdrMetrics:
    """Counters and gauges shared by the spool and the writer."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = REGISTRY if registry is None else registry
        self.spooled = Counter(
            "sipcore_cdr_spooled", "CDRs made durable (fsync'd) in the spool", registry=reg
        )
        self.fsyncs = Counter("sipcore_cdr_spool_fsyncs", "Spool flushes ending in fsync", registry=reg)
        self.written = Counter("sipcore_cdr_written", "CDRs written to the store", registry=reg)
        self.retries = Counter(
            "sipcore_cdr_write_retries", "Failed store writes that will be retried", registry=reg
        )
        self.write_seconds = Histogram(
            "sipcore_cdr_store_write_seconds",
            "One batch written to the CDR store (successful writes)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=reg,
        )
        self.store_errors = Counter(
            "sipcore_cdr_store_errors", "CDR store operations that failed (each is retried)", registry=reg
        )
        self.bad_frames = Counter(
            "sipcore_cdr_spool_bad_frames", "Torn or corrupt spool tails skipped", registry=reg
        )
        self.backlog_bytes = Gauge(
            "sipcore_cdr_spool_backlog_bytes", "Spool bytes not yet acknowledged by the store", registry=reg
        )
        self.buffered = Gauge(
            "sipcore_cdr_spool_buffered", "CDRs appended but not yet fsync'd (not durable)", registry=reg
        )
