"""SIPp OPTIONS over UDP against `sipcore serve`: the highest rate sustained for 20 s with 0 failures.

Run: .venv/bin/python -m benchmarks.bench_options [--rates 2000,4000,...] [--seconds 20] [--write]
Starts the server (example config, free port, metrics off) as a subprocess, then for each rate runs
SIPp (`tests/sipp/options.xml`, -m rate*seconds, bounded wall clock) and reads its final statistics:
a step passes with 0 failed calls and an achieved rate >= 95 % of the asked one. Server CPU is read
from /proc. Stops at the first failing step. Loopback only; every process started is stopped.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import free_port

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "tests" / "sipp" / "options.xml"
CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def step(port: int, rate: int, seconds: int, server_pid: int) -> dict[str, float]:
    calls = rate * seconds
    with tempfile.TemporaryDirectory() as tmp:
        stat = Path(tmp) / "stat.csv"
        cpu0, t0 = cpu_seconds(server_pid), time.monotonic()
        proc = subprocess.run(
            ["sipp", f"127.0.0.1:{port}", "-sf", str(SCENARIO), "-t", "u1", "-m", str(calls), "-r", str(rate),
             "-l", str(rate * 2), "-i", "127.0.0.1", "-nostdin", "-timeout", f"{seconds + 15}s", "-timeout_error",
             "-trace_stat", "-stf", str(stat), "-fd", "1", "-max_recv_loops", "10000", "-max_sched_loops", "10000"],
            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=seconds + 30, check=False,
        )  # fmt: skip
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(server_pid) - cpu0
        rows = list(csv.reader(io.StringIO(stat.read_text()), delimiter=";")) if stat.exists() else []
    ok = failed = 0
    retrans = 0
    if len(rows) >= 2:
        head, last = rows[0], rows[-1]
        ok = int(last[head.index("SuccessfulCall(C)")])
        failed = int(last[head.index("FailedCall(C)")])
        retrans = int(last[head.index("Retransmissions(C)")])
    return {
        "rate": rate, "ok": ok, "failed": failed, "retrans": retrans, "elapsed": elapsed,
        "achieved": ok / elapsed if elapsed else 0.0, "server_cpu_pct": 100 * cpu / elapsed if elapsed else 0.0,
        "rc": proc.returncode,
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="1000,2000,4000,6000,8000,10000,12000")
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as state:
        server = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--udp", f"127.0.0.1:{port}", "--tcp",
             f"127.0.0.1:{free_port()}", "--metrics", "off", "--log-format", "json"],
            cwd=state, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(3)
            results = []
            for rate in (int(r) for r in args.rates.split(",")):
                r = step(port, rate, args.seconds, server.pid)
                results.append(r)
                print(r, flush=True)
                if r["failed"] or r["achieved"] < 0.95 * rate:
                    break
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
    passed = [r for r in results if not r["failed"] and r["achieved"] >= 0.95 * r["rate"]]
    best = max((r["rate"] for r in passed), default=0)
    lines = [
        "## SIPp OPTIONS over UDP (one server process, SIPp on the same 2-core box)",
        "",
        f"- date {dt.date.today()}, {platform.machine()}, CPython {platform.python_version()}, uvloop; "
        f"command `.venv/bin/python -m benchmarks.bench_options --rates {args.rates} --seconds {args.seconds}`",
        f"- **highest rate sustained {args.seconds} s with 0 failures: {best:,}/s** (target 10,000/s)",
        "",
        "| asked/s | achieved/s | ok | failed | retransmissions | server CPU % |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['rate']:,} | {r['achieved']:,.0f} | {r['ok']:,} | {r['failed']:,} | {r['retrans']:,} | "
        f"{r['server_cpu_pct']:.0f} |"
        for r in results
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        (ROOT / "benchmarks" / "results" / "options.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
