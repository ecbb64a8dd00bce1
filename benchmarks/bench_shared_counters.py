"""Counters shared through Redis (server.shared_counters) against the memory store:
`python -m benchmarks.bench_shared_counters [--customers 1000,10000,50000] [--calls 5000]`.

Needs Redis at 127.0.0.1:6379 (keys under a unique prefix, deleted at the end).

* refresh: one `sync()` pulling the balance and today's spend of K prepaid customers and the free
  minutes of one bundled account each (2K+K+1 keys in one MGET) into the cache — the per-interval
  cost of each process; plus Redis's own microseconds per MGET (INFO commandstats);
* seed: folding K customers into an empty Redis (one Lua script), what the first process pays at start;
* authorise: the call-path read (`run_now(authorise_call(...))`) from the memory store and from the
  shared store's cache;
* settle: `settle_call` of a priced call using free minutes (a take and a debit), one at a time
  (latency) and 50 at a time (throughput), memory store against Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import redis.asyncio as aioredis

from rating.balance_redis import READ_CHUNK, RedisCounterStore
from rating.counters import MemoryCounterStore
from rating.model import (
    AccountBilling,
    BalanceMode,
    CallToRate,
    CustomerBilling,
    Direction,
    Package,
    RateRow,
    RateTable,
    RatingSetup,
)
from rating.rater import Rater
from rating.settlement import authorise_call, settle_call
from server.billing import run_now
from server.pending_ops import PendingOps
from server.shared_counters import SharedCounters, Watch

URL = "redis://127.0.0.1:6379/0"
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def setup_for(n: int) -> RatingSetup:
    table = RateTable("t", (RateRow("+336", "France mobile", "mobile", Decimal("0.02")),))
    customers = {f"c{i}": CustomerBilling(f"c{i}", balance_mode=BalanceMode.HARD) for i in range(n)}
    accounts = {f"c{i}/1": AccountBilling(f"c{i}/1", f"c{i}", "p") for i in range(n)}
    package = Package("p", "t", free_minutes=100)
    return RatingSetup({"t": table}, {"p": package}, customers, accounts)


def shared_store(client: aioredis.Redis, prefix: str, setup: RatingSetup, tmp: Path) -> SharedCounters:
    ids = tuple(setup.customers)
    watch = Watch(ids, ids, ids, tuple(setup.accounts))  # HARD and capped: the most keys
    pending = PendingOps(tmp / f"pending-{uuid.uuid4().hex}", "bench")
    shared = SharedCounters(RedisCounterStore(client, prefix), pending, watch, 3600.0)
    shared.clock = lambda: T0
    return shared


async def mget_usec(client: aioredis.Redis) -> tuple[float, float]:
    """(Redis microseconds spent in MGET in all, per MGET) since the last CONFIG RESETSTAT."""
    stats = (await client.info("commandstats")).get("cmdstat_mget", {})
    return float(stats.get("usec", 0.0)), float(stats.get("usec_per_call", 0.0))


async def bench_refresh(client: aioredis.Redis, n: int, repeat: int, tmp: Path) -> None:
    prefix = f"bench:counters:{uuid.uuid4().hex}:"
    setup = setup_for(n)
    shared = shared_store(client, prefix, setup, tmp)
    ledger = tmp / f"ledger-{n}.sqlite3"
    try:
        opening = {c: 50_000_000 for c in setup.customers}
        started = time.perf_counter()
        await shared.start(opening, ledger)  # seeds (empty Redis) and loads everything
        seed_s = time.perf_counter() - started
        await client.config_resetstat()
        walls, cpus = [], []
        for _ in range(repeat):
            w0, c0 = time.perf_counter(), time.process_time()
            assert await shared.sync()
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        keys = 3 * n + 1
        total, per_mget = await mget_usec(client)  # other clients' MGETs count too: a quiet Redis
        print(
            f"refresh  K={n:>6} ({keys:>6} keys): wall {statistics.median(walls) * 1e3:7.2f} ms, "
            f"process CPU {statistics.median(cpus) * 1e3:7.2f} ms, Redis {total / repeat / 1e3:6.2f} ms "
            f"({per_mget:5.0f} us per MGET of <= {READ_CHUNK} keys); start (seed + full load) {seed_s * 1e3:6.1f} ms"
        )
    finally:
        await shared.close()
        keys_ = [k async for k in client.scan_iter(match=f"{prefix}*", count=10_000)]
        for i in range(0, len(keys_), 10_000):
            await client.delete(*keys_[i : i + 10_000])


async def bench_calls(client: aioredis.Redis, calls: int, tmp: Path) -> None:
    setup = setup_for(1)
    rater = Rater(setup)
    prefix = f"bench:counters:{uuid.uuid4().hex}:"
    shared = shared_store(client, prefix, setup, tmp)
    await shared.start({"c0": 10**12}, tmp / "ledger-calls.sqlite3")
    memory = MemoryCounterStore()
    await memory.set_balance("c0", 10**12)
    setup_call = CallToRate(Direction.OUTBOUND, "c0/1", "+33612345678", T0)

    def authorise(store: object, n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            run_now(authorise_call(rater, store, setup_call))  # type: ignore[arg-type]
        return n / (time.perf_counter() - started)

    auth_n = calls * 20
    print(
        f"authorise: memory {authorise(memory, auth_n):,.0f}/s, shared cache {authorise(shared.cache, auth_n):,.0f}/s"
        f" ({auth_n} calls)"
    )

    def ended(i: int) -> CallToRate:  # 90 s: uses 2 free minutes until the bundle is gone, then pays
        return CallToRate(Direction.OUTBOUND, "c0/1", "+33612345678", T0, answered=True, duration=90 + i % 7)

    try:
        for label, make_store in (
            ("memory", lambda i: memory),
            ("redis ", lambda i: shared.settlement(f"b{i}", T0, "bench")),
        ):
            started = time.perf_counter()
            for i in range(calls):
                await settle_call(rater, make_store(i), ended(i))  # type: ignore[arg-type]
            one = calls / (time.perf_counter() - started)
            started = time.perf_counter()
            for lo in range(0, calls, 50):
                await asyncio.gather(
                    *(settle_call(rater, make_store(calls + i), ended(i)) for i in range(lo, lo + 50))  # type: ignore[arg-type]
                )
            many = calls / (time.perf_counter() - started)
            print(
                f"settle {label}: one at a time {one:10,.0f}/s ({1e6 / one:6.0f} us each), 50 at a time {many:10,.0f}/s"
            )
    finally:
        await shared.close()
        keys_ = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys_:
            await client.delete(*keys_)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", default="1000,10000,50000")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print(f"loadavg {Path('/proc/loadavg').read_text().strip()}, nproc {os.cpu_count()}")
    client = aioredis.Redis.from_url(URL)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in (int(x) for x in args.customers.split(",")):
                await bench_refresh(client, n, args.repeat, Path(tmp))
            await bench_calls(client, args.calls, Path(tmp))
    finally:
        await client.aclose()
    print(f"loadavg {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    asyncio.run(main())
