"""Digest and guard throughput on the pure core (no sockets): challenges/s, verifications/s.

Run: .venv/bin/python -m benchmarks.bench_digest [--rounds 5] [--n 20000] [--write]
Each figure is the median of ``--rounds`` runs; ``--write`` appends a dated block to
benchmarks/results/digest.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from registrar.guard import Guard, GuardConfig
from sipcore.digest import Challenger, Credentials, build_authorization, compute_ha1, parse_authorization

REALM = "pbx.example.com"
SECRET = "bench-secret-bench-secret"
NOW = 1_700_000_000.0
ACCOUNTS = {
    "alice": Credentials(password="alice-pw"),
    "bob": Credentials(
        ha1_md5=compute_ha1("bob", REALM, "bob-pw", "MD5"),
        ha1_sha256=compute_ha1("bob", REALM, "bob-pw", "SHA-256"),
    ),
}


def _rate(run: Callable[[], int]) -> float:
    start = time.perf_counter()
    n = run()
    return n / (time.perf_counter() - start)


def bench_challenge(n: int) -> Callable[[], int]:
    ch = Challenger(REALM, SECRET)

    def run() -> int:
        for i in range(n):
            ch.challenge(NOW + i)
        return n

    return run


def bench_verify(n: int, which: int, user: str, password: str, expect_ok: bool = True) -> Callable[[], int]:
    ch = Challenger(REALM, SECRET, nonce_counters=None)
    value = ch.challenge(NOW)[which]
    headers = [
        build_authorization(
            value, username=user, password=password, method="REGISTER", uri="sip:" + REALM, nc=i
        )
        for i in range(1, n + 1)
    ]
    lookup = ACCOUNTS.get

    def run() -> int:
        fresh = Challenger(REALM, SECRET)  # fresh nc table, same secret: the nonce verifies
        verify = fresh.verify
        for h in headers:
            if verify(h, "REGISTER", lookup, NOW + 1, request_uri="sip:" + REALM).ok is not expect_ok:
                raise AssertionError("benchmark header did not verify")
        return n

    return run


def bench_parse(n: int) -> Callable[[], int]:
    ch = Challenger(REALM, SECRET)
    h = build_authorization(
        ch.challenge(NOW)[0], username="alice", password="x", method="REGISTER", uri="sip:" + REALM
    )

    def run() -> int:
        for _ in range(n):
            parse_authorization(h)
        return n

    return run


def bench_guard(n: int) -> Callable[[], int]:
    def run() -> int:
        g = Guard(GuardConfig(ip_threshold=5))
        for i in range(n):
            ip = f"100.64.{(i >> 8) & 255}.{i & 255}"
            g.is_banned(ip, NOW + i)
            g.record_failure(ip, "alice", NOW + i)
        return n

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    cases = {
        "challenge (2 header values, 1 nonce) /s": bench_challenge(args.n),
        "verify SHA-256, password account /s": bench_verify(args.n, 0, "alice", "alice-pw"),
        "verify SHA-256, stored-HA1 account /s": bench_verify(args.n, 0, "bob", "bob-pw"),
        "verify MD5, password account /s": bench_verify(args.n, 1, "alice", "alice-pw"),
        "verify SHA-256, known user, wrong password /s": bench_verify(
            args.n, 0, "alice", "x", expect_ok=False
        ),
        "verify SHA-256, unknown user /s": bench_verify(args.n, 0, "mallory", "x", expect_ok=False),
        "parse_authorization /s": bench_parse(args.n),
        "guard is_banned + record_failure /s": bench_guard(args.n),
    }
    lines = []
    for name, run in cases.items():
        rates = [_rate(run) for _ in range(args.rounds)]
        lines.append(f"| {name} | {statistics.median(rates):,.0f} | {min(rates):,.0f}–{max(rates):,.0f} |")
        print(lines[-1], flush=True)
    if args.write:
        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            platform.processor(),
        )
        block = [
            f"## {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
            "",
            f"- machine: {os.cpu_count()} CPUs (`nproc`), {cpu}; Python {platform.python_version()}",
            f"- command: `.venv/bin/python -m benchmarks.bench_digest {' '.join(sys.argv[1:])}`",
            f"- median of {args.rounds} runs of {args.n:,} operations each; measured under load "
            "(other helpers' test suites running on the same 2 cores)",
            "",
            "| operation | median | min–max |",
            "|---|---:|---:|",
            *lines,
            "",
        ]
        out = Path(__file__).parent / "results" / "digest.md"
        with out.open("a", encoding="utf-8") as fh:
            fh.write("\n".join(block) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
