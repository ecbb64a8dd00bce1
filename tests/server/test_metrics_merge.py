"""One /metrics for every worker (server.metrics.merge_expositions) and the lock-free histogram."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server.metrics import FastCounter, FastHistogram, merge_expositions


def _worker_text(requests: int, contacts: int, observed: list[float], cpu: float) -> str:
    reg = CollectorRegistry()
    FastCounter("sipcore_requests_total", "r", ["method"], registry=reg).labels("OPTIONS").inc(requests)
    Gauge("sipcore_registered_contacts", "c", registry=reg).set(contacts)
    Gauge("sipcore_transactions_active", "t", registry=reg).set(requests % 7)
    Counter("process_cpu_seconds", "cpu", registry=reg).inc(cpu)
    hist = FastHistogram("sipcore_register_duration_seconds", "h", registry=reg)
    for v in observed:
        hist.observe(v)
    return generate_latest(reg).decode()


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text.decode())
        for s in fam.samples
    }


def test_counters_and_histograms_summed_registry_gauges_maxed_process_metrics_per_worker() -> None:
    merged = _samples(merge_expositions({
        0: _worker_text(106, 3, [0.0004, 0.003], 1.5),
        1: _worker_text(94, 3, [0.2, 45.0, 99.0], 2.25),
    }))  # fmt: skip
    assert merged[("sipcore_requests_total", (("method", "OPTIONS"),))] == 200
    assert merged[("sipcore_transactions_active", ())] == 106 % 7 + 94 % 7
    assert merged[("sipcore_registered_contacts", ())] == 3  # each worker sees the whole registry
    assert merged[("process_cpu_seconds_total", (("worker", "0"),))] == 1.5
    assert merged[("process_cpu_seconds_total", (("worker", "1"),))] == 2.25
    assert ("process_cpu_seconds_total", ()) not in merged
    assert not [k for k in merged if k[0].endswith("_created")]
    h = "sipcore_register_duration_seconds"
    assert merged[(h + "_count", ())] == 5
    assert abs(merged[(h + "_sum", ())] - (0.0004 + 0.003 + 0.2 + 45.0 + 99.0)) < 1e-9
    assert merged[(h + "_bucket", (("le", "0.001"),))] == 1
    assert merged[(h + "_bucket", (("le", "0.005"),))] == 2
    assert merged[(h + "_bucket", (("le", "0.25"),))] == 3
    assert merged[(h + "_bucket", (("le", "60.0"),))] == 4
    assert merged[(h + "_bucket", (("le", "+Inf"),))] == 5


def test_fast_histogram_exposition_matches_prometheus_client() -> None:
    from prometheus_client import Histogram

    ours, theirs = CollectorRegistry(), CollectorRegistry()
    buckets = (0.001, 0.01, 0.1, 1.0)
    fast = FastHistogram("h_seconds", "h", ["stage"], buckets=buckets, registry=ours)
    ref = Histogram("h_seconds", "h", ["stage"], buckets=buckets, registry=theirs)
    for v in (0.0005, 0.001, 0.002, 0.05, 0.5, 3.0, 0.01):  # bounds inclusive (le)
        fast.labels("answer").observe(v)
        ref.labels("answer").observe(v)
    mine = {k: v for k, v in _samples(generate_latest(ours)).items() if not k[0].endswith("_created")}
    ref_samples = {
        k: v for k, v in _samples(generate_latest(theirs)).items() if not k[0].endswith("_created")
    }
    assert mine == ref_samples
