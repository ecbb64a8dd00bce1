"""1 worker vs N workers on one UDP socket, measured with the shared step-rate harness.

    .venv/bin/python -m benchmarks.bench_workers [--workers 1,2] [--modes register,call]
        [--register-rates 1000,2000,3000,4000] [--call-rates 200,400,600,800] [--repeat 2] [--write]

For each mode, the server configurations alternate (1, 2, 1, 2 … with ``--rounds``) in one run, so
the other load on the shared machine weighs on both alike. Each round starts a fresh
`sipcore serve --workers N` (memory location store: replicated when N > 1) on the benchmark
configuration, waits for READY=1 (sent by the master once every worker is up), and runs
/work/shared/bench/bench.py against it with ``--server-pid`` = the master (the harness sums the CPU
of the whole process tree). ``--write`` appends the figures to benchmarks/results/workers.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.machine import cpu_model, free_port, load_note
from benchmarks.make_bench_config import write_bench_config
from benchmarks.serve import Serve

ROOT = Path(__file__).resolve().parents[1]
HARNESS = Path("/work/shared/bench/bench.py")
RESULTS = ROOT / "benchmarks" / "results" / "workers.md"


class Server(Serve):
    """`sipcore serve --workers N` in ``work``, on a free port."""

    def __init__(self, work: Path, workers: int) -> None:
        super().__init__([], work)
        self.workers = workers
        self.port = free_port()

    def arguments(self) -> list[str]:
        config = write_bench_config(self.work / "bench.yaml")  # its callee takes 100,000 calls at once
        addr = f"127.0.0.1:{self.port}"
        return ["--config", str(config), "--workers", str(self.workers), "--udp", addr, "--tcp", addr,
                "--metrics", "off"]  # fmt: skip


def run_harness(
    mode: str, workers: int, rates: str, repeat: int, duration: float, out: Path
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"bench-workers-{mode}-{workers}-"))
    with Server(work, workers) as server:
        assert server.proc is not None
        cmd = ["python3", str(HARNESS), mode, "--target", f"127.0.0.1:{server.port}",
               "--server-pid", str(server.proc.pid), "--rates", rates, "--repeat", str(repeat),
               "--duration", str(duration), "--uac-port", str(free_port()), "--uas-port", str(free_port()),
               "--out", str(out), "--label", f"sipcore-{workers}w"]  # fmt: skip
        if mode == "call":
            cmd += ["--settle-s", "5"]
        print("$", shlex.join(cmd), flush=True)
        subprocess.run(cmd, check=True, timeout=3600, stdout=subprocess.DEVNULL)
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    summary["command"] = shlex.join(cmd)
    summary["workers"] = workers
    summary["load"] = os.getloadavg()
    return summary


def rows(summary: dict[str, Any]) -> list[str]:
    """One table row per step: CPU per operation = server CPU seconds over the step / successes."""
    out = []
    for rep in summary["reps"]:
        for s in rep["steps"]:
            ok = s.get("successful") or 0
            cpu_s = (s.get("server_cpu_pct") or 0.0) / 100.0 * (s.get("wall_s") or 0.0)
            per = f"{cpu_s / ok * 1000:.2f}" if ok else "-"
            p95 = (s.get("lat_ms") or {}).get("1", {}).get("p95")
            out.append(
                f"| {summary['workers']} | {s['tag']} | {s['rate']} | {s.get('create_rate') or 0:.0f} | "
                f"{s.get('fail_pct')} | {'-' if p95 is None else f'{p95:.0f}'} | {s.get('server_cpu_pct') or 0:.0f} | "
                f"{per} | {'pass' if s.get('ok') else 'FAIL ' + str(s.get('note') or '')} |"
            )
    return out


def passing_cpu(summary: dict[str, Any]) -> list[float]:
    values = []
    for rep in summary["reps"]:
        for s in rep["steps"]:
            ok = s.get("successful") or 0
            if s.get("ok") and ok:
                values.append((s.get("server_cpu_pct") or 0.0) / 100.0 * (s.get("wall_s") or 0.0) / ok * 1000)
    return values


def report(mode: str, summaries: list[dict[str, Any]]) -> str:
    unit = "registration" if mode == "register" else "call"
    lines = [
        f"### {mode}: {' vs '.join(sorted({str(s['workers']) for s in summaries}))} workers "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"- machine: {os.cpu_count()} CPUs, {cpu_model()}; {load_note()}",
        "",
        f"| workers | round | highest sustained / s (per search) | median | server CPU ms / {unit} at passing steps | "
        "load average after |",
        "|---:|---:|---|---:|---|---|",
    ]
    for i, s in enumerate(summaries):
        maxes = [r["max_sustained"] or 0 for r in s["reps"]]
        cpu = passing_cpu(s)
        cpu_text = f"{min(cpu):.2f}–{max(cpu):.2f}" if cpu else "-"
        lines.append(
            f"| {s['workers']} | {i // 2 + 1} | {maxes} | **{statistics.median(maxes):g}** | {cpu_text} | "
            f"{s['load'][0]:.1f} / {s['load'][1]:.1f} |"
        )
    lines += ["", "Commands:", ""] + [f"- `{s['command']}`" for s in summaries]
    lines += ["", "<details><summary>every step</summary>", "",
              f"| workers | step | asked/s | created/s | failed % | rtd1 p95 ms | server CPU % | CPU ms / {unit} | verdict |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for s in summaries:
        lines += rows(s)
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--modes", default="register,call")
    parser.add_argument("--register-rates", default="1000,2000,3000,4000")
    parser.add_argument("--call-rates", default="200,400,600,800")
    parser.add_argument("--repeat", type=int, default=1, help="searches per server start (bench.py --repeat)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the worker counts")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=None, help="harness output folder (default: a temp dir)")
    parser.add_argument("--write", action="store_true", help=f"append to {RESULTS}")
    args = parser.parse_args(argv)
    base = args.out or Path(tempfile.mkdtemp(prefix="bench-workers-out-"))
    counts = [int(n) for n in args.workers.split(",")]
    sections = []
    for mode in args.modes.split(","):
        rates = args.register_rates if mode == "register" else args.call_rates
        summaries = []
        for round_ in range(args.rounds):
            for n in counts:
                out = base / f"{mode}-{n}w-r{round_}"
                summaries.append(run_harness(mode, n, rates, args.repeat, args.duration, out))
        sections.append(report(mode, summaries))
    text = "\n".join(sections)
    print(text)
    if args.write:
        with RESULTS.open("a", encoding="utf-8") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
