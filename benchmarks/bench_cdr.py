"""CDR ingest through the durable spool into SQLite and PostgreSQL, and a month's financial summary
over 1,000,000 CDRs in PostgreSQL.

Run: .venv/bin/python -m benchmarks.bench_cdr [--n 200000] [--rows 1000000] [--runs 3] [--no-pg] [--write]
Ingest = from the first ``append()`` until the store holds every CDR (``CdrPipeline.stop()`` drained),
i.e. spool framing + fsync'd flushes + batched idempotent store writes. Targets: >= 20,000 CDRs/s
each; financial summary < 2 s. PostgreSQL work happens in a throwaway schema dropped afterwards.
Each figure is the median of ``--runs`` runs; ``--write`` rewrites benchmarks/results/cdr.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import asyncpg
from prometheus_client import CollectorRegistry

from cdr.pipeline import CdrPipeline
from cdr.record import CdrRecord, Direction, Disposition
from cdr.store_postgres import COLUMNS, PostgresCdrStore, quote_ident
from cdr.store_sqlite import SqliteCdrStore

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
RESULTS = Path(__file__).parent / "results" / "cdr.md"
BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
RATE_COST, RATE_PRICE = Decimal("0.009"), Decimal("0.0138")


def sample(i: int, run: str) -> CdrRecord:
    start = BASE + dt.timedelta(seconds=(i * 2.6) % (31 * 86400))
    answered = i % 5 != 0
    duration = (i * 7) % 600 + 1 if answered else 0
    billed = -(-duration // 60) * 60
    return CdrRecord(
        call_id=f"{run}-{i:09d}@sip.example", leg=0, customer_id=f"cust{i % 50}",
        customer_ref=f"REF-{i % 50:04d}", internal=i % 50 == 0, account_id=f"cust{i % 50}/{2001 + i % 40}",
        direction=Direction.OUTBOUND, caller="+33144556677", dialed=f"06{i % 10**8:08d}",
        normalised=f"+336{i % 10**8:08d}", prefix="336", destination="France mobile", start=start,
        answer=start + dt.timedelta(seconds=4) if answered else None,
        end=start + dt.timedelta(seconds=4 + duration), duration=duration, billed_seconds=billed,
        disposition=Disposition.ANSWERED if answered else Disposition.NO_ANSWER,
        sip_status=200 if answered else 480, cost=RATE_COST * billed / 60, price=RATE_PRICE * billed / 60,
        currency="EUR", package="pro",
    )  # fmt: skip


_MONEY = {
    b: (RATE_COST * b / 60, RATE_PRICE * b / 60, (RATE_PRICE - RATE_COST) * b / 60) for b in range(0, 661, 60)
}


def copy_row(i: int) -> tuple[object, ...]:
    """The row sample(i) would store, built directly (1M CdrRecords would dominate the setup)."""
    start = BASE + dt.timedelta(seconds=(i * 2.6) % (31 * 86400))
    answered = i % 5 != 0
    duration = (i * 7) % 600 + 1 if answered else 0
    billed = -(-duration // 60) * 60
    cost, price, margin = _MONEY[billed]
    c = i % 50
    return (f"rep-{i:09d}@sip.example", 0, f"cust{c}", f"REF-{c:04d}", c == 0, f"cust{c}/{2001 + i % 40}",
            "outbound", "+33144556677", f"06{i % 10**8:08d}", f"+336{i % 10**8:08d}", "336", "France mobile",
            start, start + dt.timedelta(seconds=4) if answered else None,
            start + dt.timedelta(seconds=4 + duration), duration, billed,
            "answered" if answered else "no_answer", 200 if answered else 480, cost, price, margin, "EUR", 0,
            "pro")  # fmt: skip


async def ingest(store_factory, records: list[CdrRecord]) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Return (CDRs/s end to end, microseconds per append on the call path)."""
    with tempfile.TemporaryDirectory() as d:
        store = store_factory(Path(d))
        await store.open()
        await store.migrate()  # schema ready before the clock starts, as in a running server
        p = CdrPipeline(Path(d) / "spool", store, registry=CollectorRegistry(), batch_size=5000)
        await p.start()
        t0 = time.perf_counter()
        append_time = 0.0
        for k in range(0, len(records), 1000):  # the call path appends between other work
            a0 = time.perf_counter()
            for r in records[k : k + 1000]:
                p.append(r)
            append_time += time.perf_counter() - a0
            await asyncio.sleep(0)
        assert await p.stop(timeout=600)
        elapsed = time.perf_counter() - t0
        assert p.writer.written == len(records), (p.writer.written, len(records))
        return len(records) / elapsed, append_time / len(records) * 1e6


async def pg_schema_drop(schema: str) -> None:
    con = await asyncpg.connect(PG_DSN)
    await con.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    await con.close()


async def bench_pg_ingest(records: list[CdrRecord]) -> tuple[float, float]:
    schema = f"bench_cdr_{uuid.uuid4().hex[:10]}"
    try:
        return await ingest(lambda _d: PostgresCdrStore(PG_DSN, schema=schema), records)
    finally:
        await pg_schema_drop(schema)


async def bench_financial(rows: int, runs: int) -> tuple[float, float, int, list[float]]:
    """COPY `rows` CDRs (one month) into a throwaway schema; time store.usage(by='month') over it."""
    schema = f"bench_rep_{uuid.uuid4().hex[:10]}"
    store = PostgresCdrStore(PG_DSN, schema=schema)
    await store.open()
    try:
        await store.migrate()
        t0 = time.perf_counter()
        async with store.pool.acquire() as con:
            chunk = 100_000
            for k in range(0, rows, chunk):
                tuples = [copy_row(i) for i in range(k, min(rows, k + chunk))]
                await con.copy_records_to_table("cdr", records=tuples, columns=COLUMNS, schema_name=schema)
            await con.execute(f"ANALYZE {quote_ident(schema)}.cdr")
        load = time.perf_counter() - t0
        expected = sum(
            (_MONEY[-(-((i * 7) % 600 + 1) // 60) * 60][1] for i in range(rows) if i % 5), Decimal(0)
        )
        times = []
        n_lines = 0
        for _ in range(runs):
            q0 = time.perf_counter()
            usage = await store.usage(BASE, dt.datetime(2026, 2, 1, tzinfo=dt.UTC), by="month")
            times.append(time.perf_counter() - q0)
            n_lines = len(usage)
            assert sum(u.calls for u in usage) == rows
            assert sum((u.price for u in usage), Decimal(0)) == expected
        return statistics.median(times), load, n_lines, times
    finally:
        await store.close()
        await pg_schema_drop(schema)


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="CDRs per ingest run")
    ap.add_argument("--rows", type=int, default=1_000_000, help="CDRs for the report benchmark")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--write", action="store_true", help=f"write {RESULTS}")
    args = ap.parse_args()
    lines: list[str] = []

    def report(name: str, value: str, target: str) -> None:
        line = f"| {name} | {value} | {target} |"
        lines.append(line)
        print(line, flush=True)

    print("| figure | median | target |\n|---|---|---|")
    sq_rates, sq_app, pg_rates, pg_app = [], [], [], []
    for run in range(args.runs):
        recs = [sample(i, f"s{run}-{uuid.uuid4().hex[:6]}") for i in range(args.n)]
        rate, app = asyncio.run(ingest(lambda d: SqliteCdrStore(d / "cdr.sqlite3"), recs))
        sq_rates.append(rate)
        sq_app.append(app)
        if not args.no_pg:
            rate, app = asyncio.run(bench_pg_ingest(recs))
            pg_rates.append(rate)
            pg_app.append(app)
    report(f"ingest spool -> SQLite, {args.n:,} CDRs (runs: {_runs(sq_rates)})",
           f"{statistics.median(sq_rates):,.0f} CDRs/s",
           ">= 20,000 CDRs/s")  # fmt: skip
    report(
        "append() on the call path (SQLite run)", f"{statistics.median(sq_app):.2f} us/CDR", "cheap, no I/O"
    )
    if not args.no_pg:
        report(f"ingest spool -> PostgreSQL, {args.n:,} CDRs (runs: {_runs(pg_rates)})",
               f"{statistics.median(pg_rates):,.0f} CDRs/s",
               ">= 20,000 CDRs/s")  # fmt: skip
        q, load, n_lines, qs = asyncio.run(bench_financial(args.rows, max(args.runs, 3)))
        report(f"financial summary, 1 month, {args.rows:,} CDRs in PostgreSQL ({n_lines} lines; runs: "
               f"{', '.join(f'{x * 1000:.0f}' for x in qs)} ms)",
               f"{q * 1000:,.0f} ms", "< 2,000 ms")  # fmt: skip
        report(f"COPY load of {args.rows:,} CDRs (setup, incl. Python row generation)", f"{load:.1f} s", "-")
    if args.write:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")),
                   platform.processor())  # fmt: skip

        RESULTS.write_text(
            "# CDR benchmarks\n\n"
            f"- machine: {os.cpu_count()} CPUs, {cpu}; Python {sys.version.split()[0]}\n"
            f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC\n"
            f"- command: `.venv/bin/python -m benchmarks.bench_cdr {' '.join(sys.argv[1:])}`\n"
            f"- median of {args.runs} runs, **measured under load** (other helpers' tests running on 2 noisy"
            " cores)\n\n| figure | median | target |\n|---|---|---|\n" + "\n".join(lines) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
