"""Location service throughput and footprint: apply()/get() per second for each backend, and bytes
per binding at 100,000 bindings in the memory backend (tracemalloc).

Run: .venv/bin/python -m benchmarks.bench_location [--runs 3] [--no-redis | --redis-only] [--baseline REV]
[--uvloop] [--write]. Each figure is the median of ``--runs`` runs; ``--write`` rewrites
benchmarks/results/location.md. ``--baseline REV`` runs the Redis figures of that git revision's
redis_store.py interleaved with the current one, so before/after are compared under the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
import types
import uuid
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from pathlib import Path

import redis.asyncio as aioredis

from benchmarks.machine import cpu_model, load_note
from registrar.location import ContactChange, Flow, MemoryLocationStore, RedisLocationStore, RegisterChanges

T0 = 1_700_000_000.0
REDIS_URL = "redis://127.0.0.1:6379/0"
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


async def _redis(n: int, concurrency: int, cls: type = RedisLocationStore) -> dict[str, float]:
    """Each phase: wall-clock ops/s, CPU µs per op of this (client) process — the cost the registrar
    pays, much less sensitive to the machine's load than ops/s — and the Redis server's CPU µs per op
    (from INFO cpu: it counts every client of that Redis, so other test runs inflate it)."""
    prefix = f"bench:loc:{uuid.uuid4().hex[:8]}"
    s = cls.from_url(prefix=prefix)
    regs = [changes(i) for i in range(n)]
    refresh = [(a, changes(i, 2)[1]) for i, (a, _) in enumerate(regs)]
    refresh2 = [(a, changes(i, 3)[1]) for i, (a, _) in enumerate(regs)]
    aors = [a for a, _ in regs]
    out: dict[str, float] = {}
    info = aioredis.Redis.from_url(REDIS_URL)

    async def server_cpu() -> float:
        cpu = await info.info("cpu")
        return cpu["used_cpu_user"] + cpu["used_cpu_sys"]

    async def phase(name: str, coro: Awaitable[object]) -> None:
        gc.collect()
        server = await server_cpu()
        t, cpu = time.perf_counter(), time.process_time()
        await coro
        cpu, t = time.process_time() - cpu, time.perf_counter() - t
        server = await server_cpu() - server
        out[f"redis {name}, ops/s"] = n / t
        out[f"redis {name}, client CPU µs/op"] = cpu / n * 1e6
        out[f"redis {name}, Redis server CPU µs/op"] = server / n * 1e6

    async def seq_apply(items: list[tuple[str, RegisterChanges]], now: float) -> None:
        for a, c in items:
            await s.apply(a, c, now)

    async def seq_get() -> None:
        for a in aors:
            await s.get(a, T0 + 2)

    async def in_flight(ops: Iterable[Callable[[], Awaitable[object]]]) -> None:
        """``concurrency`` callers sharing one queue of operations, as concurrent REGISTERs would."""
        it = iter(ops)

        async def worker() -> None:
            for op in it:
                await op()

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    def par_apply(items: list[tuple[str, RegisterChanges]], now: float) -> Awaitable[None]:
        return in_flight(partial(s.apply, a, c, now) for a, c in items)

    def par_get() -> Awaitable[None]:
        return in_flight(partial(s.get, a, T0 + 2) for a in aors)

    try:
        await phase("apply() new, sequential", seq_apply(regs, T0))
        await phase("apply() refresh, sequential", seq_apply(refresh, T0 + 1))
        await phase("get() sequential", seq_get())
        await phase(f"apply() refresh, {concurrency} in flight", par_apply(refresh2, T0 + 2))
        await phase(f"get() {concurrency} in flight", par_get())
        assert len(await s.get(aors[-1], T0 + 2)) == 1 and await s.count_contacts(T0 + 2) == len(set(aors))
    finally:
        keys = [k async for k in info.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await info.delete(*keys[i : i + 1000])
        await info.aclose()
        await s.close()
    return out


def baseline_store(rev: str) -> type:
    """RedisLocationStore as it was at git revision ``rev``, to compare before/after within one run."""
    src = subprocess.run(
        ["git", "show", f"{rev}:registrar/location/redis_store.py"],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType(f"redis_store_{rev}")
    exec(compile(src, f"{rev}:redis_store.py", "exec"), module.__dict__)
    return module.RedisLocationStore


def median_of(runs: int, fn: Callable[[], dict[str, float]]) -> dict[str, float]:
    results = [fn() for _ in range(runs)]
    return {k: statistics.median(r[k] for r in results) for k in results[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=20_000, help="operations per throughput run")
    ap.add_argument("--footprint", type=int, default=100_000)
    ap.add_argument("--redis-n", type=int, default=5_000)
    ap.add_argument("--in-flight", type=int, default=50)
    ap.add_argument("--no-redis", action="store_true")
    ap.add_argument("--redis-only", action="store_true", help="skip the memory backend figures")
    ap.add_argument("--baseline", metavar="REV", help="also run redis_store.py of git REV (interleaved)")
    ap.add_argument("--uvloop", action="store_true", help="run the Redis figures on uvloop (as workers do)")
    ap.add_argument("--write", action="store_true", help=f"write {RESULTS}")
    args = ap.parse_args()

    figures: dict[str, float] = {}
    if not args.redis_only:
        figures |= median_of(args.runs, lambda: bench_memory(args.n))
        figures |= median_of(args.runs, lambda: bench_footprint(args.footprint))
    if not args.no_redis:
        run = asyncio.run
        if args.uvloop:
            import uvloop

            run = uvloop.run
        stores = {"": RedisLocationStore}
        if args.baseline:
            stores = {f"[{args.baseline}] ": baseline_store(args.baseline), "": RedisLocationStore}
        runs: dict[str, list[dict[str, float]]] = {label: [] for label in stores}
        for _ in range(args.runs):  # interleaved, so both see the same machine load
            for label, cls in stores.items():
                runs[label].append(run(_redis(args.redis_n, args.in_flight, cls)))
        for label, results in runs.items():
            figures |= {label + k: statistics.median(r[k] for r in results) for k in results[0]}

    machine = f"{os.cpu_count()} CPU ({cpu_model()}), Python {platform.python_version()}"
    lines = [
        "# Location service benchmark",
        "",
        f"- machine: {machine}",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- command: `.venv/bin/python -m benchmarks.bench_location {' '.join(sys.argv[1:])}`",
        f"- median of {args.runs} runs; {load_note()}",
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
