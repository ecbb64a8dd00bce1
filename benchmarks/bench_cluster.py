"""Two hosts against one (issue 21), measured with the shared step-rate SIPp harness.

    .venv/bin/python -m benchmarks.bench_cluster [--rates 50,100,200,300,400] [--duration 5]
        [--latency-rate 50] [--write]

Two `sipcore serve` hosts on 127.0.0.2 (A) and 127.0.0.3 (B), one worker each, sharing the machine's
Redis (location, account state; a fresh key prefix per run) with ``server.cluster`` set, on the SIPp
benchmark accounts (benchmarks/make_bench_config.py). Four measurements, one after the other:

- ``one host``: caller and callee on A (the harness registers the callee at A, calls A);
- ``cross-host``: the callee registered at A, every call entering B (the harness with --no-register,
  the callee registered beforehand from the UAS port): each call is handled by both hosts, B routing
  it through A's flow entry (transit);
- ``two hosts``: both at once, each host with its own callee and caller (the aggregate is the sum);
- ``latency``: a fixed low rate on one host, then cross-host: INVITE → 200 (SIPp rtd1) p50 / p99.

``--write`` appends the figures to benchmarks/results/cluster.md.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from benchmarks.machine import cpu_model, free_port, load_note
from benchmarks.make_bench_config import write_bench_config
from benchmarks.serve import Serve

ROOT = Path(__file__).resolve().parents[1]
HARNESS = Path("/work/shared/bench/bench.py")
SIPP_DIR = HARNESS.parent / "sipp"
RESULTS = ROOT / "benchmarks" / "results" / "cluster.md"
A, B = "127.0.0.2", "127.0.0.3"
# one callee per run (benchmark accounts), registered from that run's UAS port: a callee registered
# twice would be forked to the earlier run's UAS, gone by then
CALLEES = tuple(f"u{n}" for n in range(19990, 20000))


class Host(Serve):
    """`sipcore serve` for one host of the pair."""

    def __init__(self, work: Path, address: str, port: int, peers: list[str], prefix: str) -> None:
        super().__init__([], work / address)
        self.address, self.port, self.peers, self.prefix = address, port, peers, prefix

    def config(self) -> Path:
        self.work.mkdir(parents=True, exist_ok=True)
        path = write_bench_config(self.work / "bench.yaml")
        doc = yaml.safe_load(path.read_text())
        doc["server"].update(
            listen={"udp": [f"{self.address}:{self.port}"], "tcp": [f"{self.address}:{self.port}"]},
            advertised_address=f"{self.address}:{self.port}", local_addresses=[self.address],
            metrics=None, admin=None, state_dir=str(self.work / "state"),
            cluster={"advertise": f"{self.address}:{self.port}", "peers": self.peers},
        )  # fmt: skip
        doc["registrar"]["location"] = {"backend": "redis", "key_prefix": self.prefix}
        for customer in doc["customers"]:
            for account in customer["accounts"]:
                if account["username"] in CALLEES:
                    account["max_calls"] = 100000  # the callee answers every call of a step
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def arguments(self) -> list[str]:
        return ["--no-media", "--config", str(self.config())]

    @property
    def target(self) -> str:
        return f"{self.address}:{self.port}"


def register(host: Host, user: str, port: int, out: Path) -> None:
    """Register ``user`` at ``host`` from 127.0.0.1:``port`` (where the harness's UAS will answer)."""
    password = "pw" + user
    out.mkdir(parents=True, exist_ok=True)
    inf = out / f"{user}.csv"
    inf.write_text(f"SEQUENTIAL\n{user};[authentication username={user} password={password}];{password}\n")
    cmd = ["sipp", host.target, "-sf", str(SIPP_DIR / "register_auth.xml"), "-inf", str(inf), "-m", "1",
           "-i", "127.0.0.1", "-p", str(port), "-timeout", "10s", "-timeout_error", "-nostdin"]  # fmt: skip
    subprocess.run(cmd, cwd=out, check=True, timeout=20, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def harness(target: Host, pids: list[int], rates: str, duration: float, out: Path, label: str,
            registrar: Host, callee: str, refine: int = 2) -> subprocess.Popen[bytes]:  # fmt: skip
    """The harness calling ``callee`` through ``target``, the callee registered through ``registrar``."""
    uas_port = free_port()
    register(registrar, callee, uas_port, out.parent / f"reg-{out.name}")
    cmd = ["python3", str(HARNESS), "call", "--target", target.target, "--rates", rates, "--repeat", "1",
           "--refine", str(refine), "--duration", str(duration), "--uac-port", str(free_port()),
           "--uas-port", str(uas_port), "--out", str(out), "--label", label, "--settle-s", "3"]  # fmt: skip
    for pid in pids:
        cmd += ["--server-pid", str(pid)]
    cmd += ["--no-register", "--callee", callee]
    print("$", shlex.join(cmd), flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    proc.command = shlex.join(cmd)  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen[bytes], out: Path) -> dict[str, Any]:
    proc.wait(timeout=1800)
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    summary["command"] = proc.command  # type: ignore[attr-defined]
    summary["load"] = os.getloadavg()
    return summary


def best(summary: dict[str, Any]) -> float:
    return max((r["max_sustained"] or 0) for r in summary["reps"])


def latency(summary: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    steps = [s for r in summary["reps"] for s in r["steps"]]
    lat = (steps[0].get("lat_ms") or {}).get("1", {}) if steps else {}
    return lat.get("p50"), lat.get("p99"), steps[0].get("fail_pct") if steps else None


def _drop_keys(prefix: str) -> None:
    import redis

    client = redis.Redis()
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rates", default="50,100,200,300,400")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--latency-rate", type=int, default=50)
    parser.add_argument("--latency-duration", type=float, default=12.0)  # 500+ samples (-rtt_freq)
    parser.add_argument("--write", action="store_true", help=f"append to {RESULTS}")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    prefix = f"sipcore-bench-cluster-{secrets.token_hex(4)}:"
    results: dict[str, Any] = {}
    port_a, port_b = free_port(), free_port()
    peers = [f"{A}:{port_a}", f"{B}:{port_b}"]  # each on its own port: probed there (server.cluster)
    with Host(base, A, port_a, peers, prefix) as host_a, Host(base, B, port_b, peers, prefix) as host_b:
        assert host_a.proc is not None and host_b.proc is not None
        pids = [host_a.proc.pid, host_b.proc.pid]
        callees = iter(CALLEES)
        # latency at a low fixed rate: one host, then through both
        lat = (str(args.latency_rate), args.latency_duration)
        out = base / "lat-one"
        results["lat_one"] = finish(
            harness(host_a, pids, *lat, out, "one-host", host_a, next(callees), 0), out
        )
        out = base / "lat-cross"
        results["lat_cross"] = finish(
            harness(host_b, pids, *lat, out, "cross-host", host_a, next(callees), 0), out
        )
        # highest sustained rates
        out = base / "one"
        results["one"] = finish(harness(host_a, pids, args.rates, args.duration, out, "one-host", host_a,
                                        next(callees)), out)  # fmt: skip
        out = base / "cross"
        results["cross"] = finish(harness(host_b, pids, args.rates, args.duration, out, "cross-host", host_a,
                                          next(callees)), out)  # fmt: skip
        out_a, out_b = base / "two-a", base / "two-b"
        run_a = harness(host_a, pids, args.rates, args.duration, out_a, "two-hosts-A", host_a, next(callees))
        run_b = harness(host_b, pids, args.rates, args.duration, out_b, "two-hosts-B", host_b, next(callees))
        results["two_a"], results["two_b"] = finish(run_a, out_a), finish(run_b, out_b)
    _drop_keys(prefix)
    one_p50, one_p99, one_fail = latency(results["lat_one"])
    x_p50, x_p99, x_fail = latency(results["lat_cross"])
    lines = [
        f"### two hosts against one ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"- machine: {os.cpu_count()} CPUs, {cpu_model()}; {load_note()}; hosts 127.0.0.2 and 127.0.0.3, "
        "one worker each, Redis location store shared; SIPp on 127.0.0.1; server CPU summed over both hosts",
        "",
        "| run | highest sustained calls/s | load average after |",
        "|---|---:|---|",
        f"| one host (caller and callee on A) | {best(results['one']):g} | {results['one']['load'][0]:.1f} |",
        f"| cross-host (callee on A, calls enter B) | {best(results['cross']):g} | {results['cross']['load'][0]:.1f} |",
        f"| two hosts at once, each local (A + B) | {best(results['two_a']):g} + {best(results['two_b']):g} = "
        f"**{best(results['two_a']) + best(results['two_b']):g}** | {results['two_b']['load'][0]:.1f} |",
        "",
        f"Call setup (INVITE → 200 at the caller, SIPp rtd1) at {args.latency_rate} calls/s for "
        f"{args.latency_duration:g} s:",
        "",
        "| path | p50 ms | p99 ms | failed % |",
        "|---|---:|---:|---:|",
        f"| one host | {one_p50} | {one_p99} | {one_fail} |",
        f"| cross-host (B → A → phone) | {x_p50} | {x_p99} | {x_fail} |",
        "",
        "Commands:",
        "",
        *[f"- `{r['command']}`" for r in results.values()],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    (base / "results.json").write_text(json.dumps(results, default=str))
    if args.write:
        with RESULTS.open("a", encoding="utf-8") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
