"""Location service throughput and footprint: apply()/get() per second for each backend, and bytes
per binding at 100,000 bindings in the memory backend (tracemalloc).

Run: .venv/bin/python -m benchmarks.bench_location [--runs 3] [--no-redis] [--write]
Each figure is the median of ``--runs`` runs; ``--write`` rewrites benchmarks/results/location.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import os
import platform
import statistics
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path

from benchmarks.machine import cpu_model
from registrar.location import ContactChange, Flow, MemoryLocationStore, RedisLocationStore, RegisterChanges

T0 = 1_700_000_000.0
RESULTS = Path(__file__).parent / "results" / "location.md"


def changes(i: int, cseq: int = 1) -> tuple[str, RegisterChanges]:
    """A realistic REGISTER: one Contact, one in three over TCP."""
    ip = f"198.51.{i // 250 % 250}.{i % 250}"
    port = 1024 + i % 60000
    if i % 3:
        flow = Flow("udp", ip, port, "203.0.113.5:5060")
    else:
        flow = Flow("tcp", ip, port, "203.0.113.5:5070", f"h1/{os.getpid()}/{i}")
    uri = f"sip:{1000 + i % 9000}@{ip}:{port};transport={flow.transport};line=ab{i:x}"
    ch = RegisterChanges(
        f"{i:08x}-5c1e-4d2a-9b7f@{ip}",
        cseq,
        flow,
        (ContactChange(uri, 3600),),
        user_agent="Yealink SIP-T46U 66.86.0.15",
    )
    return f"sip:{1000 + i % 9000}@customer{i // 9000}.example", ch


def rate(n: int, fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def bench_memory(n: int) -> dict[str, float]:
    regs = [changes(i) for i in range(n)]
    refresh = [(aor, changes(i, 2)[1]) for i, (aor, _) in enumerate(regs)]
    s = MemoryLocationStore()
    out = {"memory register() new, ops/s": rate(n, lambda: [s.register(a, c, T0) for a, c in regs])}
    out["memory register() refresh, ops/s"] = rate(n, lambda: [s.register(a, c, T0 + 1) for a, c in refresh])
    aors = [a for a, _ in regs]
    out["memory lookup(), ops/s"] = rate(n, lambda: [s.lookup(a, T0 + 2) for a in aors])

    async def via_async() -> None:
        s2 = MemoryLocationStore()
        for a, c in regs:
            await s2.apply(a, c, T0)

    out["memory apply() (async), ops/s"] = rate(n, lambda: asyncio.run(via_async()))
    out["memory sweep() of all, bindings/s"] = rate(n, lambda: s.sweep(T0 + 10_000))
    return out


def bench_footprint(n: int) -> dict[str, float]:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    s = MemoryLocationStore()
    for i in range(n):  # each REGISTER is built under tracing: what the store keeps of it counts
        a, c = changes(i)
        s.register(a, c, T0)
    del a, c
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert s.contact_count() == n
    return {f"memory bytes per binding at {n:,} bindings": used / n}


async def _redis(n: int, concurrency: int) -> dict[str, float]:
    prefix = f"bench:loc:{uuid.uuid4().hex[:8]}"
    s = RedisLocationStore.from_url(prefix=prefix)
    regs = [changes(i) for i in range(n)]
    out: dict[str, float] = {}
    try:
        t = time.perf_counter()
        for a, c in regs:
            await s.apply(a, c, T0)
        out["redis apply() sequential, ops/s"] = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for a, _ in regs:
            await s.get(a, T0)
        out["redis get() sequential, ops/s"] = n / (time.perf_counter() - t)
        refresh = [(a, changes(i, 2)[1]) for i, (a, _) in enumerate(regs)]
        sem = asyncio.Semaphore(concurrency)

        async def one(a: str, c: RegisterChanges) -> None:
            async with sem:
                await s.apply(a, c, T0 + 1)

        t = time.perf_counter()
        await asyncio.gather(*(one(a, c) for a, c in refresh))
        out[f"redis apply() {concurrency} in flight, ops/s"] = n / (time.perf_counter() - t)
    finally:
        keys = [k async for k in s._r.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await s._r.delete(*keys[i : i + 1000])
        await s.close()
    return out


def median_of(runs: int, fn: Callable[[], dict[str, float]]) -> dict[str, float]:
    results = [fn() for _ in range(runs)]
    return {k: statistics.median(r[k] for r in results) for k in results[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=20_000, help="operations per throughput run")
    ap.add_argument("--footprint", type=int, default=100_000)
    ap.add_argument("--redis-n", type=int, default=5_000)
    ap.add_argument("--no-redis", action="store_true")
    ap.add_argument("--write", action="store_true", help=f"write {RESULTS}")
    args = ap.parse_args()

    figures = median_of(args.runs, lambda: bench_memory(args.n))
    figures |= median_of(args.runs, lambda: bench_footprint(args.footprint))
    if not args.no_redis:
        figures |= median_of(args.runs, lambda: asyncio.run(_redis(args.redis_n, 50)))

    machine = f"{os.cpu_count()} CPU ({cpu_model()}), Python {platform.python_version()}"
    lines = [
        "# Location service benchmark",
        "",
        f"- machine: {machine}",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- command: `.venv/bin/python -m benchmarks.bench_location {' '.join(sys.argv[1:])}`",
        f"- median of {args.runs} runs; measured under load (2 noisy cores shared with other test runs)",
        "",
        "| figure | value |",
        "|---|---:|",
        *(f"| {k} | {v:,.0f} |" for k, v in figures.items()),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
