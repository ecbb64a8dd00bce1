"""REGISTER throughput of `sipcore serve` over UDP with SIPp (REGISTER -> 401 -> digest -> 200).

    .venv/bin/python -m benchmarks.bench_register [--rates 250,500,1000,2000,4000,8000] [--repeat 3] [--write]
    .venv/bin/python -m benchmarks.bench_register --profile [--profile-rate 500] [--seconds 10] [--write]

Default mode: writes the 10,000-account benchmark config (benchmarks/make_bench_config.py), starts
`sipcore serve` on a free loopback port, runs the team's step-rate harness
(/work/shared/bench/bench.py register) against it and reads its summary.json: highest sustained
rate (median over ``--repeat`` searches) and server CPU per registration at each passing step.

``--profile``: runs the same server in this process under cProfile while SIPp registers at a fixed
rate, then prints where the CPU went (top functions by own time and by cumulative time).
``--write`` appends the figures to benchmarks/results/register.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import platform
import pstats
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.machine import free_port, load_note
from benchmarks.make_bench_config import write_bench_config
from benchmarks.serve import Serve
from sipcore.waiting import within

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "register.md"
HARNESS = Path("/work/shared/bench/bench.py")
SIPP_DIR = HARNESS.parent / "sipp"


def machine() -> str:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU ({model}), Python {platform.python_version()}"


# ---- the server as a process -------------------------------------------------------------------------
class ServeProcess(Serve):
    """`sipcore serve` on ``port`` with ``config`` (in the config's folder)."""

    def __init__(self, config: Path, port: int) -> None:
        addr = f"127.0.0.1:{port}"
        args = ["--config", str(config), "--udp", addr, "--tcp", addr, "--metrics", "off"]
        super().__init__(args, config.parent, timeout=30, stop_timeout=15)
        self.config, self.port = config, port


def step_rate(rates: str, repeat: int, duration: float, out: Path) -> dict[str, Any]:
    """Run the shared harness against a fresh server; returns its summary.json plus the command."""
    work = Path(tempfile.mkdtemp(prefix="bench-register-"))
    config = write_bench_config(work / "bench.yaml", 10_000)
    port, uac_port = free_port(), free_port()
    with ServeProcess(config, port) as server:
        assert server.proc is not None
        cmd = [sys.executable, str(HARNESS), "register", "--target", f"127.0.0.1:{port}",
               "--server-pid", str(server.proc.pid), "--rates", rates, "--repeat", str(repeat),
               "--duration", str(duration), "--uac-port", str(uac_port), "--out", str(out), "--label", "sipcore"]  # fmt: skip
        print("$", shlex.join(cmd), flush=True)
        subprocess.run(cmd, check=True, timeout=3600)
    summary = json.loads((out / "summary.json").read_text())
    summary["command"] = shlex.join(cmd)
    return summary


def step_rows(summary: dict[str, Any]) -> list[tuple[str, int, float, float, float, float, bool]]:
    """Per step: (tag, asked rate, created/s, rtd1 p95 ms, server CPU %, server CPU ms per registration,
    passed). CPU per registration = server CPU seconds over the step / successful registrations."""
    rows = []
    for rep in summary["reps"]:
        for s in rep["steps"]:
            ok = s.get("successful") or 0
            cpu_s = (s.get("server_cpu_pct") or 0.0) / 100.0 * (s.get("wall_s") or 0.0)
            per = cpu_s / ok * 1000 if ok else float("nan")
            p95 = (s.get("lat_ms") or {}).get("1", {}).get("p95") or float("nan")
            rows.append((s["tag"], s["rate"], s.get("create_rate") or 0.0, p95, s.get("server_cpu_pct") or 0.0,
                         per, bool(s.get("ok"))))  # fmt: skip
    return rows


# ---- in-process profile ------------------------------------------------------------------------------
async def _profiled_run(
    config: Path, port: int, rate: int, seconds: float
) -> tuple[str, str, dict[str, float]]:
    from server.app import Application, load_application_config

    loaded = load_application_config(str(config))
    loaded.settings.sip.udp = [f"127.0.0.1:{port}"]
    loaded.settings.sip.tcp = [f"127.0.0.1:{port}"]
    loaded.settings.sip.metrics_address = None
    app = Application(loaded)
    await app.start()
    calls = int(rate * seconds)
    cmd = ["sipp", f"127.0.0.1:{port}", "-sf", str(SIPP_DIR / "register_auth.xml"), "-inf", str(SIPP_DIR / "users.csv"),
           "-t", "u1", "-i", "127.0.0.1", "-p", str(free_port()), "-m", str(calls), "-r", str(rate),
           "-timeout", f"{int(seconds * 3 + 30)}s", "-timeout_error", "-nostdin", "-buff_size", "4194304"]  # fmt: skip
    # Wall-clock timer: time.thread_time costs a slow syscall per event here and collapses the server.
    profiler = cProfile.Profile()
    t0, c0 = time.perf_counter(), time.process_time()
    profiler.enable()
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=config.parent
    )
    try:
        await within(proc.wait(), seconds * 3 + 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        profiler.disable()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    await app.close()
    text = []
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).strip_dirs().sort_stats(key).print_stats(22)
        text.append(buf.getvalue())
    figures = {"calls": calls, "wall_s": wall, "cpu_s": cpu, "sipp_rc": float(proc.returncode or 0)}
    return text[0], text[1], figures


def profile(rate: int, seconds: float) -> tuple[str, dict[str, float]]:
    work = Path(tempfile.mkdtemp(prefix="bench-register-prof-"))
    config = write_bench_config(work / "bench.yaml", 10_000)
    by_own, by_cum, figures = asyncio.run(_profiled_run(config, free_port(), rate, seconds))
    return by_own + "\n" + by_cum, figures


# ---- output ------------------------------------------------------------------------------------------
def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def report_steps(summary: dict[str, Any]) -> str:
    maxes = [r["max_sustained"] or 0 for r in summary["reps"]]
    lines = [
        f"### Step-rate REGISTER+digest over UDP ({_stamp()})",
        "",
        f"- machine: {machine()}; {load_note()}",
        f"- command: `{summary['command']}`",
        f"- highest sustained rate per search: {maxes}; **median {statistics.median(maxes):g}/s** "
        "(target 9,000/s; Kamailio 18,000/s on this harness)",
        "",
        "| step | asked/s | created/s | rtd1 p95 ms | server CPU % | server CPU ms / registration | pass |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for tag, rate, created, p95, cpu, per, ok in step_rows(summary):
        lines.append(
            f"| {tag} | {rate} | {created:.0f} | {p95:.0f} | {cpu:.1f} | {per:.2f} | {'yes' if ok else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rates", default="250,500,1000,2000,4000,8000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=None, help="harness output folder (default: a temp dir)")
    parser.add_argument("--profile", action="store_true", help="cProfile the server in-process instead")
    parser.add_argument("--profile-rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--write", action="store_true", help="append to benchmarks/results/register.md")
    args = parser.parse_args(argv)
    if args.profile:
        text, f = profile(args.profile_rate, args.seconds)
        per_reg = f["cpu_s"] / f["calls"] * 1000
        section = (
            f"### cProfile of the server in-process ({_stamp()})\n\n"
            f"- machine: {machine()}; {load_note()}\n"
            f"- command: `.venv/bin/python -m benchmarks.bench_register --profile --profile-rate "
            f"{args.profile_rate} --seconds {args.seconds:g}`\n"
            f"- timer: wall clock (so `sendto` includes waking SIPp); plain asyncio loop, not uvloop\n"
            f"- {f['calls']:.0f} registrations at {args.profile_rate}/s: process CPU {f['cpu_s']:.2f} s over "
            f"{f['wall_s']:.1f} s wall = **{per_reg:.3f} ms CPU per registration under cProfile** "
            f"(sipp rc {f['sipp_rc']:.0f})\n\n```\n{text.strip()}\n```\n\n"
        )
    else:
        out = args.out or Path(tempfile.mkdtemp(prefix="bench-register-out-"))
        section = report_steps(step_rate(args.rates, args.repeat, args.duration, out))
    print(section)
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a", encoding="utf-8") as fh:
            fh.write(section + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
