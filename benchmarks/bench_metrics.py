"""What the metrics cost: per message (the instrumentation itself) and per scrape (workers merged).

    .venv/bin/python -m benchmarks.bench_metrics [--n 200000] [--repeat 5]

Per message, in one process, each alternative timed in turn (median of ``--repeat`` runs, ns per
call): sipcore's plain-integer cells (`FastCounter`, `FastHistogram`), prometheus_client's Counter
and Histogram, and prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``: every
increment written to an mmap'd file, run in a child process since the mode is chosen at import).
Per scrape: `merge_expositions` of two workers' real expositions (the server's registry after a few
thousand messages of each kind), the work worker 0 adds to a scrape with ``workers: 2``.
The whole-message figure (before/after on the same machine in one run) comes from
``benchmarks.bench_sip_cpu --mode both --against REV`` (see benchmarks/results/metrics.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from benchmarks.machine import cpu_model


def per_call(fn: Callable[[], None], n: int, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter_ns() - t0) / n)
    return statistics.median(runs)


def loop_overhead(n: int, repeat: int) -> float:
    def nothing() -> None:
        pass

    return per_call(nothing, n, repeat)


def in_process(n: int, repeat: int) -> dict[str, float]:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from server.metrics import SIP_BUCKETS, FastCounter, FastHistogram

    reg = CollectorRegistry()
    cell = FastCounter("a_total", "a", ["method"], registry=reg).labels("OPTIONS")
    hist = FastHistogram("b_seconds", "b", ["stage"], registry=reg).labels("answer")
    pc = Counter("c_total", "c", ["method"], registry=reg).labels("OPTIONS")
    ph = Histogram("d_seconds", "d", ["stage"], buckets=SIP_BUCKETS, registry=reg).labels("answer")
    base = loop_overhead(n, repeat)
    return {
        "FastCounter cell inc": per_call(cell.inc, n, repeat) - base,
        "FastHistogram cell observe(0.004)": per_call(lambda: hist.observe(0.004), n, repeat) - base,
        "prometheus_client Counter inc (child)": per_call(pc.inc, n, repeat) - base,
        "prometheus_client Histogram observe(0.004) (child)": per_call(lambda: ph.observe(0.004), n, repeat)
        - base,
    }


def multiprocess(n: int, repeat: int) -> dict[str, float]:
    code = (
        "import sys; from benchmarks.bench_metrics import per_call, loop_overhead;"
        "from prometheus_client import Counter, Histogram; from server.metrics import SIP_BUCKETS;"
        "n, r = int(sys.argv[1]), int(sys.argv[2]);"
        "c = Counter('c_total', 'c', ['method']).labels('OPTIONS');"
        "h = Histogram('d_seconds', 'd', ['stage'], buckets=SIP_BUCKETS).labels('answer');"
        "b = loop_overhead(n, r);"
        "print(per_call(c.inc, n, r) - b); print(per_call(lambda: h.observe(0.004), n, r) - b)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-c", code, str(n), str(repeat)],
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": tmp}, capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
    return {
        "multiprocess mode Counter inc (child)": float(out[0]),
        "multiprocess mode Histogram observe(0.004) (child)": float(out[1]),
    }


def merge_cost(repeat: int) -> tuple[float, int]:
    from prometheus_client import REGISTRY, generate_latest

    import server.registrar_service  # noqa: F401  (registers the registrar's metrics)
    from server import metrics
    from server import proxy_service as ps

    for i in range(3000):
        metrics.count_request(("OPTIONS", "REGISTER", "INVITE", "BYE", "ACK")[i % 5])
        metrics.count_response_sent((200, 401, 407, 180, 100, 486)[i % 6])
        metrics.REGISTER_SECONDS.observe(0.0002 * (i % 50))
        ps.CALLS_FINISHED.labels("outbound", "answered", "200").inc()
        ps.TRUNK_CALLS.labels(f"carrier{i % 5}", "answered").inc()
    metrics.set_build_info()
    text = generate_latest(REGISTRY).decode()
    texts = {0: text, 1: text}
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(20):
            metrics.merge_expositions(texts)
        runs.append((time.perf_counter() - t0) / 20 * 1000)
    return statistics.median(runs), len(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    figures = {**in_process(args.n, args.repeat), **multiprocess(args.n, args.repeat)}
    merge_ms, size = merge_cost(args.repeat)
    print(f"- machine: {os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()}")
    print(f"- command: `.venv/bin/python -m benchmarks.bench_metrics --n {args.n} --repeat {args.repeat}`\n")
    print("| per message | ns per call (median, loop overhead taken off) |\n|---|---:|")
    for what, ns in figures.items():
        print(f"| {what} | {ns:.0f} |")
    print(f"\nmerge of two workers' expositions ({size:,} bytes each): {merge_ms:.1f} ms per scrape")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
