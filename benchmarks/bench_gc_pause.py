"""Does the cyclic collector stall call setup? Calls at a fixed rate through `sipcore serve` for a
few minutes, with the collector's pauses (`sipcore_gc_pause_seconds{kind}`) and call setup times.

    .venv/bin/python -m benchmarks.bench_gc_pause [--rate 150] [--seconds 330] [--census 3000] [--write]

The server collects on its own schedule (server.app.collect_periodically): a young pass every
0.25 s, a full pass every hour. Before (through 3752ed3) it ran one full collection every 5
minutes, walking every transaction in its 32 s linger; run this against such a revision (a
worktree) with ``--seconds 330`` to see that pause. ``--census N`` also runs N calls in process and
reports the time the server's young passes took during them (per call), then the GC-tracked
objects left and how long a full pass takes over them.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import os
import re
import shlex
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.bench_call import SIPP_DIR, register_callee, sipp, start_server, stop
from benchmarks.machine import cpu_model, free_port, load_note

RESULTS = Path(__file__).parent / "results" / "gc_pause.md"
# kind-labelled since the young passes; the revisions before had one unlabelled, 5-minute full pass
_SAMPLE = re.compile(
    r'^sipcore_gc_pause_seconds_(count|sum|bucket)\{?(?:kind="(\w+)",?)?(?:le="([^"]+)")?\}? (\S+)$', re.M
)


def _percentiles(rtt_csv: Path) -> dict[str, float]:
    """Call setup (SIPp response time 1: INVITE to 200) percentiles in ms, from -trace_rtt."""
    times = sorted(
        float(row.split(";")[1])
        for row in rtt_csv.read_text().splitlines()[1:]
        if row.count(";") >= 2 and row.split(";")[2].strip() == "1"
    )
    if not times:
        return {}
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]  # noqa: E731
    return {"calls": len(times), "p50": pick(0.5), "p99": pick(0.99), "p999": pick(0.999), "max": times[-1]}


def wire(rate: int, seconds: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-gc-") as tmp:
        work = Path(tmp)
        metrics_port = free_port()
        server, port = start_server(work, metrics=f"127.0.0.1:{metrics_port}")
        try:
            target, uas_port, uac_port = f"127.0.0.1:{port}", free_port(), free_port()
            register_callee(target, work, uas_port)
            uas = sipp(
                ["-sf", str(SIPP_DIR / "uas.xml"), "-i", "127.0.0.1", "-p", str(uas_port)], work, seconds + 60
            )
            try:
                time.sleep(0.5)
                uac = sipp([target, "-sf", str(SIPP_DIR / "uac.xml"), "-inf", str(SIPP_DIR / "users.csv"), "-s",
                            "callee", "-i", "127.0.0.1", "-p", str(uac_port), "-r", str(rate), "-m",
                            str(rate * seconds), "-d", "0", "-trace_rtt", "-rtt_freq", "1", "-default_behaviors",
                            "all,-abortunexp", "-buff_size", "4194304"], work, seconds + 60)  # fmt: skip
                try:
                    uac.wait(seconds + 75)
                except Exception:
                    stop(uac, signal.SIGKILL)
                text = (
                    urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
                    .read()
                    .decode()
                )
            finally:
                stop(uas, signal.SIGKILL)
            rtt = next(work.glob("uac_*_rtt.csv"), None)
            setup = _percentiles(rtt) if rtt is not None else {}
        finally:
            stop(server)
    pauses: dict[str, dict[str, float]] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    for what, kind, le, value in _SAMPLE.findall(text):
        kind = kind or "full"
        if what == "bucket":
            buckets.setdefault(kind, []).append((float(le), float(value)))
        else:
            pauses.setdefault(kind, {})[what] = float(value)
    for kind, p in pauses.items():  # the longest pause lies at or under the first bucket holding all
        p["max_le"] = min(
            (le for le, n in buckets.get(kind, []) if n >= p.get("count", 0)), default=float("inf")
        )
    return {"setup": setup, "pauses": pauses}


async def _census(calls: int) -> dict[str, float]:
    from benchmarks.bench_sip_cpu import _started, register_callee, run_calls

    young: list[float] = []  # each young pass's duration
    began = 0.0

    def timed(phase: str, info: dict[str, int]) -> None:
        nonlocal began
        if info["generation"] < 2:
            if phase == "start":
                began = time.perf_counter()
            else:
                young.append(time.perf_counter() - began)

    with tempfile.TemporaryDirectory() as tmp:
        app, cap, host, port = await _started(Path(tmp))
        try:
            await register_callee(app, cap, host, port)
            gc.callbacks.append(timed)
            try:
                await run_calls(app, cap, host, port, calls, 0)  # the server's young passes run meanwhile
            finally:
                gc.callbacks.remove(timed)
            gc.collect(1)  # as the next young pass would: what is left is the old generation
            tracked = len(gc.get_objects())
            started = time.perf_counter()
            gc.collect(2)
            full = time.perf_counter() - started
        finally:
            await app.close()
    return {
        "per_call": tracked / calls, "full_ms": full * 1000, "tracked": tracked,
        "young_passes": len(young), "young_us_per_call": sum(young) / calls * 1e6,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rate", type=int, default=150)
    ap.add_argument("--seconds", type=int, default=330)
    ap.add_argument("--census", type=int, default=0, help="also count in process after N calls")
    ap.add_argument("--write", action="store_true", help=f"append the figures to {RESULTS}")
    args = ap.parse_args(argv)
    lines = [
        f"### {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC (start) — `{shlex.join(sys.argv)}`",
        f"machine: {os.cpu_count()} CPUs, {cpu_model()}",
    ]
    if args.census:
        c = asyncio.run(_census(args.census))
        lines.append(
            f"- in process, {args.census} calls: {c['young_passes']:.0f} young passes meanwhile, "
            f"{c['young_us_per_call']:.1f} µs per call; after them {c['tracked']:.0f} GC-tracked objects "
            f"left ({c['per_call']:.0f} per call); a full pass over them {c['full_ms']:.1f} ms"
        )
    if args.seconds:
        result = wire(args.rate, args.seconds)
        s = result["setup"]
        lines.append(
            f"- {args.rate} calls/s for {args.seconds} s: setup p50 / p99 / p99.9 / max "
            + " / ".join(f"{s.get(q, float('nan')):.0f}" for q in ("p50", "p99", "p999", "max"))  # type: ignore[union-attr]
            + f" ms over {s.get('calls', 0):.0f} calls"  # type: ignore[union-attr]
        )
        for kind, p in sorted(result["pauses"].items()):  # type: ignore[union-attr]
            n = p.get("count", 0)
            mean = 1000 * p.get("sum", 0) / n if n else 0
            lines.append(
                f"- {kind} collections: {n:.0f}, mean pause {mean:.1f} ms, longest ≤ {1000 * p['max_le']:.1f} ms"
            )
    lines.append(f"- {load_note()}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
