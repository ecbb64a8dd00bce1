"""Call benchmark over the wire: SIPp caller -> `sipcore serve` (record-routing proxy) -> SIPp callee.

Two figures, because the machine is shared and noisy:
- **CPU per call** (robust under load): a fixed number of calls at a fixed rate, server CPU time read
  from /proc/PID/stat before and after; one call = INVITE/407/ACK/INVITE/100/180/200/ACK/BYE/200.
- **Highest sustained rate** (optional, ``--step``): /work/shared/bench/bench.py call (step-rate search
  with pass criteria: < 0.1 % failed, >= 95 % of the asked rate, p95 setup < 500 ms).

    .venv/bin/python -m benchmarks.bench_call [--rate 100] [--calls 3000] [--repeat 3] [--step] [--write]

Everything runs on 127.0.0.1 from free ports and a private temporary directory; every child has a
bounded lifetime and is stopped by its own PID.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import cpu_model, free_port, load_note
from benchmarks.make_bench_config import write_bench_config

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path("/work/shared/bench")
SIPP_DIR = BENCH / "sipp"
RESULTS = ROOT / "benchmarks" / "results" / "call.md"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (its own threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_server(
    work: Path, journal_fsync: str | None = None, metrics: str = "off"
) -> tuple[subprocess.Popen[bytes], int]:
    """`sipcore serve` on the bench config (callee may take many calls at once), in ``work``;
    ``journal_fsync``: the call journal's ``fsync`` mode (None: the default); ``metrics``: where
    its metrics listen (host:port, or off)."""
    config = write_bench_config(work / "bench.yaml")
    text = config.read_text()  # its callee takes 100,000 calls at once (the default 2 would be "busy")
    if journal_fsync is not None:
        text += f"proxy:\n  call_journal: {{fsync: {journal_fsync}}}\n"
    config.write_text(text)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "server.cli", "serve", "--config", str(config), "--udp", f"127.0.0.1:{port}",
           "--tcp", f"127.0.0.1:{port}", "--metrics", metrics]  # fmt: skip
    log = open(work / "serve.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {(work / 'serve.log').read_text()[-2000:]}")
        probe = subprocess.run(
            ["ss", "-lun", f"sport = :{port}"], capture_output=True, text=True, check=False
        )
        if f":{port}" in probe.stdout:
            return proc, port
        time.sleep(0.2)
    stop(proc)
    raise RuntimeError("server did not start within 30 s")


def sipp(args: list[str], cwd: Path, timeout: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sipp", *args, "-nostdin", "-timeout", f"{int(timeout)}s"], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def register_callee(target: str, work: Path, uas_port: int) -> None:
    """The SIPp callee (callee.csv) registers once from ``uas_port``, where its UAS will answer."""
    reg = sipp([target, "-sf", str(SIPP_DIR / "register_auth.xml"), "-inf", str(SIPP_DIR / "callee.csv"),
                "-i", "127.0.0.1", "-p", str(uas_port), "-m", "1"], work, 10)  # fmt: skip
    if reg.wait(20) != 0:
        raise RuntimeError("callee registration failed")


def measure_cpu(
    server: subprocess.Popen[bytes], port: int, work: Path, rate: int, calls: int
) -> dict[str, float]:
    """One fixed-rate run: server CPU ms per call, successes and failures (from SIPp's stat file)."""
    target = f"127.0.0.1:{port}"
    uas_port, uac_port = free_port(), free_port()
    register_callee(target, work, uas_port)
    limit = calls / rate + 60
    uas = sipp(["-sf", str(SIPP_DIR / "uas.xml"), "-i", "127.0.0.1", "-p", str(uas_port)], work, limit)
    stat = work / f"stat-{uac_port}.csv"
    try:
        time.sleep(0.5)
        before = cpu_seconds(server.pid)
        uac = sipp([target, "-sf", str(SIPP_DIR / "uac.xml"), "-inf", str(SIPP_DIR / "users.csv"), "-s", "callee",
                    "-i", "127.0.0.1", "-p", str(uac_port), "-r", str(rate), "-m", str(calls), "-d", "0",
                    "-timeout_error", "-trace_stat", "-stf", str(stat), "-default_behaviors", "all,-abortunexp",
                    "-buff_size", "4194304"], work, limit)  # fmt: skip
        try:
            uac.wait(limit + 15)
        except subprocess.TimeoutExpired:
            stop(uac, signal.SIGKILL)
        time.sleep(1.0)  # the last BYE/200 and timers settle
        used = cpu_seconds(server.pid) - before
    finally:
        stop(uas, signal.SIGKILL)
    rows = list(csv.reader(stat.open(), delimiter=";")) if stat.exists() else []
    ok = failed = 0
    if len(rows) >= 2:
        ok = int(rows[-1][rows[0].index("SuccessfulCall(C)")])
        failed = int(rows[-1][rows[0].index("FailedCall(C)")])
    return {"cpu_ms_per_call": 1000 * used / max(ok + failed, 1), "ok": ok, "failed": failed}


def _ms(value: object) -> str:
    return f"{value:.0f}" if isinstance(value, int | float) else "-"


def step_search(server: subprocess.Popen[bytes], port: int, out: Path, rates: str) -> str:
    """The shared harness's step-rate search; returns its verdict and a table of its steps."""
    cmd = ["python3", str(BENCH / "bench.py"), "call", "--target", f"127.0.0.1:{port}", "--server-pid",
           str(server.pid), "--rates", rates, "--settle-s", "5", "--uac-port", str(free_port()), "--uas-port",
           str(free_port()), "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    verdict = [line for line in done.stdout.splitlines() if line.startswith("# RESULT")]
    rows = ["| step | calls/s asked | ok | failed % | server CPU % | CPU ms/call | rtd1 p50 / p95 / p99 ms | verdict |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    summary = out / "summary.json"
    for rep in json.loads(summary.read_text())["reps"] if summary.exists() else []:
        for st in rep["steps"]:
            lat = st["lat_ms"].get("1", {})
            per_call = 10 * st["server_cpu_pct"] * st["wall_s"] / max(st["created"], 1)
            rows.append(
                f"| {st['tag']} | {st['rate']} | {st['successful']} | {st['fail_pct']} | {st['server_cpu_pct']} | "
                f"{per_call:.2f} | {' / '.join(_ms(lat.get(q)) for q in ('p50', 'p95', 'p99'))} | "
                f"{'PASS' if st['ok'] else 'FAIL ' + st['note']} |"
            )
    return "\n".join([f"`{shlex.join(cmd)}`", "", *rows, "", *verdict])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=int, default=100, help="calls/s of the CPU-per-call runs")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--step", action="store_true", help="also run bench.py's step-rate search")
    parser.add_argument("--rates", default="100,200,400,800,1000,1500")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-call"), help="bench.py's output folder")
    parser.add_argument(
        "--journal-fsync", choices=("reply", "background", "off"), help="proxy.call_journal.fsync"
    )
    parser.add_argument("--write", action="store_true", help=f"append the figures to {RESULTS}")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-call-") as tmp:
        work = Path(tmp)
        server, port = start_server(work, args.journal_fsync)
        try:
            runs = [measure_cpu(server, port, work, args.rate, args.calls) for _ in range(args.repeat)]
            steps = step_search(server, port, args.out, args.rates) if args.step else ""
        finally:
            stop(server)
            log = (work / "serve.log").read_text(errors="replace")
        if not any(r["ok"] for r in runs):
            print(f"no call succeeded; server log tail:\n{log[-3000:]}", file=sys.stderr)
            return 1
    cpu = statistics.median(r["cpu_ms_per_call"] for r in runs)
    per_run = ", ".join(f"{r['cpu_ms_per_call']:.2f}" for r in runs)
    outcomes = ", ".join(f"{r['ok']:.0f}/{r['failed']:.0f}" for r in runs)
    lines = [
        f"### {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC — `{shlex.join(sys.argv)}`",
        f"machine: {os.cpu_count()} CPUs, {cpu_model()}; {load_note()}",
        f"- server CPU per call at {args.rate} calls/s, {args.calls} calls x {args.repeat}: median "
        f"**{cpu:.2f} ms** (runs: {per_run}); ok/failed: {outcomes}",
        f"- CPU-bound ceiling on one core: ~{1000 / cpu:.0f} calls/s",
    ]
    if steps:
        lines += ["", steps]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
