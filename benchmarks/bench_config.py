"""Benchmark: load the 10,000-account SIPp configuration (target < 1 s) and build the bridges.

    .venv/bin/python -m benchmarks.bench_config [--accounts 10000] [--repeat 7] [--write]

Times each stage separately (load_config = YAML + schema + semantics + rate file; then the rating,
routing and registrar views a reload also builds) and reports min / median / max over ``--repeat``
runs. ``--write`` appends the figures to benchmarks/results/config.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.machine import cpu_model as _cpu_model
from benchmarks.make_bench_config import write_bench_config
from config.bridge import rating_setup, registrar_view, routing_setup
from config.loader import load_config

RESULTS = Path(__file__).parent / "results" / "config.md"


def _time(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def run(accounts: int, repeat: int) -> list[tuple[str, list[float]]]:
    with tempfile.TemporaryDirectory(prefix="bench-config-") as tmp:
        path = write_bench_config(Path(tmp) / "bench.yaml", accounts)
        load_times, cfg = _time(lambda: load_config(path), repeat)
        assert cfg.summary().accounts == accounts + 1
        rows = [("load_config", load_times)]
        for name, fn in (("rating_setup", rating_setup), ("routing_setup", routing_setup)):
            rows.append((name, _time(lambda fn=fn: fn(cfg), repeat)[0]))
        rows.append(("registrar_view (md5 HA1 each)", _time(lambda: registrar_view(cfg), repeat)[0]))
        return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--write", action="store_true", help="append the figures to " + str(RESULTS))
    args = parser.parse_args(argv)
    rows = run(args.accounts, args.repeat)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"### Config load, {args.accounts:,} accounts ({stamp})",
        "",
        f"- machine: {os.cpu_count()} CPUs, {_cpu_model()}; Python {platform.python_version()}",
        f"- command: `.venv/bin/python -m benchmarks.bench_config --accounts {args.accounts}"
        f" --repeat {args.repeat}`",
        "- measured under load (other helpers running tests on the same 2 noisy cores)",
        "",
        "| stage | min (ms) | median (ms) | max (ms) |",
        "|---|---:|---:|---:|",
    ]
    for name, times in rows:
        ms = [t * 1000 for t in times]
        lines.append(f"| {name} | {min(ms):.0f} | {statistics.median(ms):.0f} | {max(ms):.0f} |")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a", encoding="utf-8") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
