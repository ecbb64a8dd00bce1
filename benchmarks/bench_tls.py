"""SIP over TLS: REGISTER with digest over one reused TLS connection beside the same over TCP and UDP,
and TLS handshakes per second, against `sipcore serve` (10,000 benchmark accounts).

    .venv/bin/python -m benchmarks.bench_tls [--rate 1000] [--seconds 10] [--workers 1] [--handshake-seconds 5]
        [--clients 1] [--transports udp,tcp,tls]

REGISTER -> 401 -> REGISTER (digest) -> 200 per account, driven by SIPp at a fixed rate. Debian's SIPp
has no TLS (no ``-t l1``): over TLS, SIPp speaks TCP (``-t t1``, one connection) to a local ``socat``
that carries it over one TLS connection to the server (the client side's TLS CPU is socat's, reported
apart). Figures: registrations completed per second, failures, and the server's CPU per registration
(its processes' user+system time over the run / registrations), the one to compare between transports.

Handshakes: ``openssl s_time -new`` opens full TLS handshakes (TLS 1.3, ECDHE P-256 certificate) back
to back for ``--handshake-seconds``; the server's CPU per handshake bounds what one core can take.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_register import ServeProcess
from benchmarks.machine import cpu_model, free_port, load_note
from benchmarks.make_bench_config import FIRST, write_bench_config
from server.tls_context import ensure_self_signed

SCENARIO = Path(__file__).resolve().parents[1] / "tests" / "proxy_sip" / "register_auth.xml"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its children (the workers), now."""
    total = 0.0
    pids = [pid]
    try:
        pids += [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def users_csv(path: Path, count: int) -> Path:
    lines = ["SEQUENTIAL"] + [
        f"u{n};[authentication username=u{n} password=pwu{n}];" for n in range(FIRST, FIRST + count)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def scenario(work: Path, transport: str, server: str) -> Path:
    text = SCENARIO.read_text(encoding="iso-8859-1")
    if transport == "tls":
        text = text.replace("SIP/2.0/[transport]", "SIP/2.0/TLS").replace(
            "transport=[transport]", "transport=tls"
        )
        text = text.replace("[remote_ip]:[remote_port]", server)
    out = work / f"register_{transport}.xml"
    out.write_text(text, encoding="iso-8859-1")
    return out


def run_sipp(work: Path, transport: str, target: str, server: str, rate: int, seconds: float, users: Path,
             server_pid: int) -> dict[str, float]:  # fmt: skip
    """One fixed-rate run; returns completed/s, failures and server CPU ms per registration."""
    calls = int(rate * seconds)
    stats = work / f"stat_{transport}.csv"
    cmd = ["sipp", target, "-sf", str(scenario(work, transport, server)), "-inf", str(users), "-r", str(rate),
           "-m", str(calls), "-i", "127.0.0.1", "-p", str(free_port()), "-auth_uri", server, "-nostdin",
           "-timeout", f"{int(seconds * 3 + 30)}s", "-trace_stat", "-stf", str(stats), "-fd", "1",
           "-max_socket", "10"]  # fmt: skip
    if transport != "udp":
        cmd += ["-t", "t1"]
    cpu0, t0 = cpu_seconds(server_pid), time.monotonic()
    subprocess.run(
        cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=seconds * 3 + 60
    )
    wall, cpu = time.monotonic() - t0, cpu_seconds(server_pid) - cpu0
    rows = [r.split(";") for r in stats.read_text().splitlines() if r.strip()]
    head, last = rows[0], rows[-1]
    ok = int(last[head.index("SuccessfulCall(C)")])
    failed = int(last[head.index("FailedCall(C)")])
    return {"rate": rate, "ok": ok, "failed": failed, "per_s": ok / wall, "wall": wall,
            "cpu_ms": cpu / ok * 1000 if ok else float("nan")}  # fmt: skip


def handshakes(port: int, seconds: int, server_pid: int, clients: int = 1) -> dict[str, float]:
    """``clients`` openssl s_time processes at once, each opening full handshakes back to back."""
    cpu0 = cpu_seconds(server_pid)
    procs = [subprocess.Popen(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(seconds)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(clients)]  # fmt: skip
    outs = [proc.communicate(timeout=seconds + 30)[0] for proc in procs]
    cpu = cpu_seconds(server_pid) - cpu0
    count, per_s = 0, 0.0
    for out in outs:
        m = re.search(r"(\d+) connections in ([\d.]+) real seconds", out)
        if m is None:
            raise RuntimeError(f"openssl s_time said: {out[-500:]}")
        count += int(m.group(1))
        per_s += int(m.group(1)) / float(m.group(2))
    return {"count": count, "per_s": per_s, "cpu_ms": cpu / count * 1000 if count else float("nan")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=1000, help="REGISTER attempts per second (SIPp -r)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--handshake-seconds", type=int, default=5)
    ap.add_argument("--transports", default="udp,tcp,tls")
    ap.add_argument("--clients", type=int, default=1, help="openssl s_time processes at once")
    args = ap.parse_args()
    if shutil.which("socat") is None or shutil.which("sipp") is None:
        print("needs sipp and socat", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    ensure_self_signed(work / "tls.crt", work / "tls.key")
    config = write_bench_config(work / "bench.yaml", 10_000)
    tls_port = free_port()
    text = config.read_text().replace(
        "  advertised_address:",
        f"  workers: {args.workers}\n  tls: {{listen: ['127.0.0.1:{tls_port}'], cert_file: {work / 'tls.crt'}, "
        f"key_file: {work / 'tls.key'}}}\n  advertised_address:",
        1,
    )
    config.write_text(text)
    users = users_csv(work / "users.csv", 10_000)
    port = free_port()
    print(f"# {cpu_model()}, {os.cpu_count()} CPU; {load_note()}; workers {args.workers}; {work}")
    with ServeProcess(config, port) as server:
        assert server.proc is not None
        pid = server.proc.pid
        for transport in args.transports.split(","):
            if transport == "tls":
                tunnel = free_port()
                socat = subprocess.Popen(
                    ["socat", f"TCP-LISTEN:{tunnel},bind=127.0.0.1,reuseaddr,fork",
                     f"OPENSSL:127.0.0.1:{tls_port},verify=0"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(0.3)
                try:
                    r = run_sipp(work, "tls", f"127.0.0.1:{tunnel}", f"127.0.0.1:{tls_port}", args.rate, args.seconds,
                                 users, pid)  # fmt: skip
                finally:
                    socat.kill()
                    socat.wait()
            else:
                r = run_sipp(work, transport, f"127.0.0.1:{port}", f"127.0.0.1:{port}", args.rate, args.seconds,
                             users, pid)  # fmt: skip
            print(f"REGISTER+digest {transport.upper():4} asked {r['rate']}/s: {r['per_s']:.0f}/s completed "
                  f"({r['ok']} ok, {r['failed']} failed, {r['wall']:.1f} s), server CPU {r['cpu_ms']:.3f} ms/registration",
                  flush=True)  # fmt: skip
        h = handshakes(tls_port, args.handshake_seconds, pid, args.clients)
        print(f"TLS handshakes (openssl s_time -new x{args.clients}, {args.handshake_seconds} s): {h['per_s']:.0f}/s "
              f"({h['count']}), server CPU {h['cpu_ms']:.3f} ms/handshake", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
