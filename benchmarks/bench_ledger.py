"""Ledger appends, SQLite against PostgreSQL (rating.ledger_store):
`python -m benchmarks.bench_ledger [--appends 1000] [--writers 4]`.

Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust): a throwaway database, dropped at the end.

* one writer: the latency of ``append`` (one transaction each; PostgreSQL: advisory lock + INSERT +
  COMMIT) on an open ledger, p50 / p99 / max, and of ``append_all`` of a 50-row batch (the server's
  call debits, ~once a second);
* open + append + close: what the server pays per piece of work (it opens the ledger for each);
* several writers (one connection each, as several hosts): appends per second in total, and the p99
  of each append, serialised by the lock.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from rating.ledger import EntryKind, LedgerEntry
from rating.ledger_store import LedgerAt, PostgresLedgerAt, open_ledger

ROOT = "postgresql://postgres@127.0.0.1:5432/postgres"


def entry(i: int) -> LedgerEntry:
    return LedgerEntry(f"c{i % 100}", EntryKind.CALL, -1_000 - i, datetime.now(UTC), f"call {i}")


def quantiles(samples: list[float]) -> str:
    """Nearest-rank p50 / p99 (never beyond the largest sample) and the maximum, in ms."""
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return ordered[max(0, min(len(ordered) - 1, round(p * len(ordered)) - 1))] * 1e3

    return f"p50 {rank(0.50):.2f} ms, p99 {rank(0.99):.2f} ms, max {ordered[-1] * 1e3:.2f} ms"


def timed(n: int, work: Callable[[int], object]) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        work(i)
        out.append(time.perf_counter() - t0)
    return out


def one_writer(at: LedgerAt, n: int) -> None:
    with open_ledger(at) as ledger:
        print(f"  append (open ledger), {n}x: {quantiles(timed(n, lambda i: ledger.append(entry(i))))}")
        batches = timed(max(n // 50, 20), lambda i: ledger.append_all([entry(i * 50 + j) for j in range(50)]))
        print(f"  append_all of 50 rows, {len(batches)}x: {quantiles(batches)}")

    def open_append(i: int) -> None:
        with open_ledger(at) as ledger:
            ledger.append(entry(i))

    print(f"  open + append + close, {n // 5}x: {quantiles(timed(n // 5, open_append))}")


def writers(at: LedgerAt, count: int, n: int) -> None:
    samples: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(count + 1)

    def run() -> None:
        with open_ledger(at) as ledger:
            start.wait()
            mine = timed(n, lambda i: ledger.append(entry(i)))
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    print(f"  {count} writers x {n}: {count * n / took:,.0f} appends/s in total; {quantiles(samples)}")


async def sql(statement: str) -> None:
    con = await asyncpg.connect(ROOT, timeout=5)
    try:
        await con.execute(statement)
    finally:
        await con.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--appends", type=int, default=1000)
    ap.add_argument("--writers", type=int, default=4)
    args = ap.parse_args()
    name = f"sipcore_ledger_bench_{secrets.token_hex(4)}"
    asyncio.run(sql(f"CREATE DATABASE {name}"))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for label, at in (
                ("SQLite", Path(tmp) / "ledger.sqlite3"),
                ("PostgreSQL", PostgresLedgerAt(f"{ROOT.rsplit('/', 1)[0]}/{name}")),
            ):
                print(label)
                one_writer(at, args.appends)
                writers(at, args.writers, args.appends // args.writers)
    finally:
        asyncio.run(sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


if __name__ == "__main__":
    main()
