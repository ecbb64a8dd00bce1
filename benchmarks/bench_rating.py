"""Rater hot path and table load, with no I/O: `python -m benchmarks.bench_rating [--repeat N]`.

Hot path = authorise + rate one finished call (HARD prepaid customer, so max duration is computed),
100,000-prefix table, a realistic package (markup fixed + percent, 30/6 pulse, pro+ included
categories, free minutes, overrides and a free zone). Table load = parse a 100,000-row CSV and
build the Rater (per-package compilation included).

`--against REV` measures before/after in one run: the `rating/` package of git revision REV
(extracted with `git archive` into a temporary directory) and the working tree's, alternately, each
in a fresh process on the same workload, so both sides see the same machine load.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from benchmarks.machine import cpu_model, load_note
from rating.model import (
    AccountBilling,
    BalanceMode,
    CallToRate,
    CustomerBilling,
    Direction,
    Package,
    Pulse,
    RateRow,
    RateTable,
    RatingSetup,
)
from rating.rate_files import read_rate_file, write_rate_file
from rating.rater import Rater

CATEGORIES = ("fixed", "mobile", "international", "premium", "special")


def synthetic_table(n: int = 100_000, seed: int = 7) -> RateTable:
    """n distinct prefixes of 3-9 digits with costs of up to 6 decimals (deterministic)."""
    rnd = random.Random(seed)
    seen: set[str] = set()
    rows: list[RateRow] = []
    while len(rows) < n:
        prefix = "+" + str(rnd.randint(1, 9)) + "".join(rnd.choices("0123456789", k=rnd.randint(2, 8)))
        if prefix in seen:
            continue
        seen.add(prefix)
        cost = Decimal(rnd.randint(100, 500_000)).scaleb(-6)
        rows.append(RateRow(prefix, f"dest {prefix}", rnd.choice(CATEGORIES), cost))
    return RateTable("bench", tuple(rows))


def bench_setup(table: RateTable) -> RatingSetup:
    package = Package(
        "pro+",
        table.name,
        markup_fixed=Decimal("0.0025"),
        markup_percent=Decimal("20"),
        pulse=Pulse(30, 6),
        overrides={"+4420": Decimal("0.015"), "+3361": Decimal("0.05")},
        free_country_codes=frozenset({"+352"}),
        free_cost_threshold=Decimal("0.0005"),
        included_categories=frozenset({"fixed", "mobile"}),
        free_minutes=100,
    )
    customer = CustomerBilling("c1", "REF-1", balance_mode=BalanceMode.HARD)
    return RatingSetup(
        rate_tables={table.name: table},
        packages={package.name: package},
        customers={customer.id: customer},
        accounts={"a1": AccountBilling("a1", "c1", "pro+")},
    )


def sample_calls(table: RateTable, n: int, seed: int = 11, mix: str = "uniform") -> list[CallToRate]:
    """n calls to random numbers under the table's prefixes.

    uniform: every prefix equally likely (worst case: the whole 100k table is touched at random,
    so most lookups miss the CPU caches). zipf: the k-th most popular prefix is called with
    weight 1/k, the skew of real traffic where a few hundred destinations carry most calls.
    """
    rnd = random.Random(seed)
    start = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    rows = table.rows
    if mix == "zipf":
        weights = [1 / k for k in range(1, len(rows) + 1)]
        chosen = rnd.choices(rows, weights=weights, k=n)
    else:
        chosen = [rnd.choice(rows) for _ in range(n)]
    calls = []
    for row in chosen:
        prefix = row.prefix
        number = prefix + "".join(rnd.choices("0123456789", k=max(0, 12 - len(prefix))))
        calls.append(CallToRate(Direction.OUTBOUND, "a1", number, start, duration=rnd.randint(0, 600)))
    return calls


def hot_path(rater: Rater, calls: list[CallToRate], rounds: int) -> tuple[float, float]:
    """(calls per CPU second, calls per wall second) for authorise + rate (balance 50.00, 3 free min).

    CPU time (time.process_time) is the figure to compare with the one-core target on a shared
    machine: it excludes the time this process waits while other jobs hold both cores.
    """
    authorise, rate = rater.authorise, rater.rate
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        for call in calls:
            auth = authorise(call, 50_000_000, 0, 3)
            rate(call, 3, auth.route)
    n = rounds * len(calls)
    return n / (time.process_time() - c0), n / (time.perf_counter() - w0)


def calibration() -> float:
    """CPU ns of a fixed reference loop (function call + dict probe + small tuple), to compare machines."""
    table = {str(i): i for i in range(1000)}
    keys = list(table) * 100

    def step(key: str) -> tuple[int, str]:
        return (table.get(key, 0), key)

    c0 = time.process_time()
    for key in keys:
        step(key)
    return (time.process_time() - c0) / len(keys) * 1e9


def load_time(csv_path: Path) -> tuple[float, float]:
    """(CPU s, wall s) to parse a rate CSV and build the Rater."""
    c0, w0 = time.process_time(), time.perf_counter()
    table = read_rate_file(csv_path)
    Rater(bench_setup(table))
    return time.process_time() - c0, time.perf_counter() - w0


def child(args: argparse.Namespace) -> None:
    """One side of --against: print the hot-path calls/CPU-s for both mixes (one line each)."""
    import rating

    print("rating", Path(rating.__file__).parent, file=sys.stderr)
    table = synthetic_table()
    rater = Rater(bench_setup(table))
    for mix in ("uniform", "zipf"):
        print(mix, hot_path(rater, sample_calls(table, args.calls, mix=mix), args.rounds)[0])


def against(args: argparse.Namespace) -> None:
    """Alternate fresh processes running REV's rating/ and the working tree's, then compare medians."""
    root = Path(__file__).resolve().parent.parent
    runs: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(root), "archive", args.against, "rating"], check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        # python -m puts the working directory first on sys.path: run each side from its rating/'s parent
        sides = {"before": (tmp, f"{tmp}{os.pathsep}{root}"), "after": (root, str(root))}
        for _ in range(args.repeat):
            for side, (cwd, path) in sides.items():
                cmd = [sys.executable, "-m", "benchmarks.bench_rating", "--child", "--calls", str(args.calls),
                       "--rounds", str(args.rounds)]  # fmt: skip
                out = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": path}, cwd=cwd, check=True,
                                     capture_output=True, text=True).stdout  # fmt: skip
                for line in out.splitlines():
                    mix, rate = line.split()
                    runs[side].setdefault(mix, []).append(float(rate))
    med = statistics.median
    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()}")
    for mix in ("uniform", "zipf"):
        before, after = runs["before"][mix], runs["after"][mix]
        print(f"hot path authorise+rate, {mix}: {args.against} median {med(before):,.0f} calls/CPU-s "
              f"(runs {', '.join(f'{x:,.0f}' for x in before)}); working tree median {med(after):,.0f} "
              f"(runs {', '.join(f'{x:,.0f}' for x in after)}); ratio {med(after) / med(before):.2f}")  # fmt: skip
    print(load_note())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--against", metavar="REV", help="compare the hot path with git revision REV's rating/")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.against:
        return against(args)
    table = synthetic_table()
    rater = Rater(bench_setup(table))
    speeds = {}
    for mix in ("uniform", "zipf"):
        calls = sample_calls(table, args.calls, mix=mix)
        speeds[mix] = [hot_path(rater, calls, args.rounds) for _ in range(args.repeat)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.csv"
        write_rate_file(table, path)
        loads = [load_time(path) for _ in range(args.repeat)]
    med = statistics.median
    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()}")
    print(
        f"calibration loop: {med([calibration() for _ in range(5)]):.0f} CPU-ns per step (lower = faster machine)"
    )
    for mix, runs in speeds.items():
        cpu, wall = [r[0] for r in runs], [r[1] for r in runs]
        detail = ", ".join(f"{x:,.0f}" for x in cpu)
        print(f"hot path authorise+rate, {mix} destinations: median {med(cpu):,.0f} calls/CPU-s, "
              f"{med(wall):,.0f} calls/wall-s (CPU runs: {detail})")  # fmt: skip
    cpu_l, wall_l = [r[0] for r in loads], [r[1] for r in loads]
    detail = ", ".join(f"{x:.3f}" for x in cpu_l)
    print(f"load 100,000-prefix CSV + build Rater: median {med(cpu_l):.3f} CPU-s, "
          f"{med(wall_l):.3f} wall-s (CPU runs: {detail})")  # fmt: skip
    print(load_note())


if __name__ == "__main__":
    main()
