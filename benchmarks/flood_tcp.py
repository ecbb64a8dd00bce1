"""TCP exhaustion and slow-message figures for docs/reliability.md (issue 20): `sipcore serve` under a
descriptor limit (prlimit), a flooder holding as many connections as it can from many loopback
sources, and a good client measured meanwhile; or the close times of slowloris, trickle and silent
connections.

    python -m benchmarks.flood_tcp flood --nofile 2000 --workers 1 --sources 300 --style silent
    python -m benchmarks.flood_tcp flood --nofile 2000 --workers 2 --sources 300 --style keepalive
    python -m benchmarks.flood_tcp slow

``silent``: the flooder's connections send nothing (closed by the first-message deadline, then
opened again); ``keepalive``: they send an RFC 5626 ping every 5 s and are kept (the cap holds them).
Loopback only (127.0.0.0/8); bounded in time. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from sipcore.waiting import within

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def options(port: int, local_port: int) -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:{local_port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: {secrets.token_hex(8)}@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def read_head(reader: asyncio.StreamReader, timeout: float) -> bytes:
    return await within(reader.readuntil(b"\r\n\r\n"), timeout)


# ---- the server --------------------------------------------------------------------------------
def start_server(
    tmp: Path, port: int, metrics_port: int, workers: int, nofile: int | None, extra: str
) -> tuple:
    cfg = (ROOT / "config" / "example.yaml").read_text(encoding="utf-8")
    cfg = cfg.replace("  workers: 1\n", f"  workers: {workers}\n").replace(
        "    tcp_idle_timeout: 10m\n", "    tcp_idle_timeout: 10m\n" + extra
    )
    cfg = cfg.replace("log: {format: auto, level: info}", "log: {format: json, level: info}")
    path = tmp / "sipcore.yaml"
    path.write_text(cfg, encoding="utf-8")
    os.symlink(ROOT / "config" / "rates", tmp / "rates")  # the example's rate files, relative to it
    cmd = [sys.executable, "-m", "server.cli", "serve", "--no-media", "--config", str(path),
           "--udp", f"127.0.0.1:{port}", "--tcp", f"127.0.0.1:{port}", "--metrics", f"127.0.0.1:{metrics_port}",
           "--admin", "off", "--log-format", "json"]  # fmt: skip
    if nofile:
        cmd = ["prlimit", f"--nofile={nofile}", *cmd]
    log = open(tmp / "server.log", "wb")  # noqa: SIM115
    import subprocess

    proc = subprocess.Popen(cmd, cwd=tmp, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=log, stderr=log)
    return proc, tmp / "server.log"


async def wait_up(port: int, metrics_port: int, log: Path) -> None:
    for _ in range(300):
        with contextlib.suppress(OSError):
            _, w = await asyncio.open_connection("127.0.0.1", metrics_port)
            w.close()
            return
        await asyncio.sleep(0.1)
    raise SystemExit("server did not start: " + log.read_text(errors="replace")[-2000:])


async def http_get(port: int, path: str, timeout: float = 2.0) -> bytes | None:
    try:
        r, w = await within(asyncio.open_connection("127.0.0.1", port), timeout)
        w.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = await within(r.read(), timeout)
        w.close()
        return data if data.startswith(b"HTTP/1.1 200") else None
    except (OSError, TimeoutError):
        return None


def metric(text: str, name: str, label: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {") and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def fds_of(pid: int) -> int:
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            total = max(total, len(os.listdir(f"/proc/{p}/fd")))
    return total


# ---- the flooder (its own process) -------------------------------------------------------------
async def attack(port: int, sources: int, per_source: int, style: str, duration: float) -> None:
    stop = time.monotonic() + duration
    counts = {"connected": 0, "failed": 0, "closed_by_server": 0}

    async def slot(src: str) -> None:
        while time.monotonic() < stop:
            try:
                r, w = await within(asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0)), 5)
            except (OSError, TimeoutError):
                counts["failed"] += 1
                await asyncio.sleep(0.5)
                continue
            counts["connected"] += 1
            try:
                while time.monotonic() < stop:
                    if style == "keepalive":
                        w.write(b"\r\n\r\n")
                        pong = await within(r.read(2), 10)
                        if not pong:
                            counts["closed_by_server"] += 1
                            break
                        await asyncio.sleep(5)
                    else:
                        data = await within(r.read(4096), max(0.1, stop - time.monotonic()))
                        if not data:
                            counts["closed_by_server"] += 1
                            break
            except (OSError, TimeoutError):
                counts["closed_by_server"] += 1
            w.close()
            await asyncio.sleep(0.2)

    await asyncio.gather(*(slot(f"127.0.{2 + i // 250}.{2 + i % 250}") for i in range(sources)
                           for _ in range(per_source)))  # fmt: skip
    print(json.dumps(counts), flush=True)


# ---- the good client and the probes --------------------------------------------------------------
async def good_clients(port: int, metrics_port: int, duration: float, interval: float, conn: tuple) -> dict:
    res = {"persistent": [0, 0], "persistent_reconnects": [0, 0], "new_connection": [0, 0], "healthz": [0, 0],
           "metrics": [0, 0]}  # fmt: skip
    lat: list[float] = []
    r, w = conn  # opened before the flood
    stop = time.monotonic() + duration

    async def persistent() -> None:
        """One connection opened before the flood, as a registered phone keeps it; connected again
        only if the server closes it. An answer is matched by its Call-ID (a late one is not counted)."""
        nonlocal r, w
        while time.monotonic() < stop:
            res["persistent"][1] += 1
            t0 = time.monotonic()
            msg = options(port, w.get_extra_info("sockname")[1])
            call_id = msg.split(b"Call-ID: ", 1)[1].split(b"\r\n", 1)[0]
            try:
                w.write(msg)
                while True:
                    head = await read_head(r, max(0.01, t0 + 2.0 - time.monotonic()))
                    if call_id in head:
                        break
                if head.startswith(b"SIP/2.0 200"):
                    res["persistent"][0] += 1
                    lat.append(time.monotonic() - t0)
            except TimeoutError:
                pass
            except (OSError, asyncio.IncompleteReadError):
                res["persistent_reconnects"][1] += 1
                with contextlib.suppress(OSError, TimeoutError):
                    r, w = await within(asyncio.open_connection("127.0.0.1", port), 2)
            await asyncio.sleep(interval)

    async def fresh() -> None:
        while time.monotonic() < stop:
            res["new_connection"][1] += 1
            try:
                r2, w2 = await within(asyncio.open_connection("127.0.0.1", port), 2)
                w2.write(options(port, w2.get_extra_info("sockname")[1]))
                head = await read_head(r2, 2.0)
                w2.close()
                if head.startswith(b"SIP/2.0 200"):
                    res["new_connection"][0] += 1
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                pass
            await asyncio.sleep(interval)

    async def http(path: str, key: str) -> None:
        while time.monotonic() < stop:
            res[key][1] += 1
            if await http_get(metrics_port, path) is not None:
                res[key][0] += 1
            await asyncio.sleep(0.5)

    await asyncio.gather(persistent(), fresh(), http("/healthz", "healthz"), http("/metrics", "metrics"))
    w.close()
    out = {k: {"ok": v[0], "sent": v[1], "pct": round(100 * v[0] / max(1, v[1]), 1)} for k, v in res.items()}
    lat.sort()
    if lat:
        out["persistent"]["p99_ms"] = round(1000 * lat[int(0.99 * (len(lat) - 1))], 1)
    return out


async def flood(args: argparse.Namespace) -> dict:
    port, metrics_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        proc, log_path = start_server(tmp, port, metrics_port, args.workers, args.nofile, args.limits)
        try:
            await wait_up(port, metrics_port, log_path)
            await asyncio.sleep(1.0)
            conn = await asyncio.open_connection("127.0.0.1", port)
            conn[1].write(options(port, conn[1].get_extra_info("sockname")[1]))  # a phone registers at once
            await read_head(conn[0], 5)
            attacker = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "benchmarks.flood_tcp", "attack", "--port", str(port),
                "--sources", str(args.sources), "--per-source", str(args.per_source), "--style", args.style,
                "--duration", str(args.duration + args.ramp), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            await asyncio.sleep(args.ramp)
            fds = 0

            async def watch_fds() -> None:
                nonlocal fds
                while True:
                    fds = max(fds, fds_of(proc.pid))
                    await asyncio.sleep(1)

            watcher = asyncio.create_task(watch_fds())
            during = await good_clients(port, metrics_port, args.duration, args.interval, conn)
            text = (await http_get(metrics_port, "/metrics", 5) or b"").decode()
            watcher.cancel()
            out, _ = await within(attacker.communicate(), 60)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except Exception:
                proc.kill()
        log = log_path.read_text(encoding="utf-8", errors="replace")
    lines = log.splitlines()
    return {
        "workers": args.workers,
        "nofile": args.nofile,
        "sources": args.sources,
        "per_source": args.per_source,
        "style": args.style,
        "duration_s": args.duration,
        "good": during,
        "server": {
            "tcp_connections": metric(text, "sipcore_tcp_connections"),
            "cap": metric(text, "sipcore_tcp_connection_cap"),
            "refused_cap": metric(text, "sipcore_tcp_refused_total", 'reason="cap"'),
            "refused_per_source": metric(text, "sipcore_tcp_refused_total", 'reason="per_source"'),
            "closed": {
                r: metric(text, "sipcore_tcp_closed_total", f'reason="{r}"')
                for r in ("idle", "message_timeout", "too_slow")
            },
            "max_fds_per_process": fds,
            "refusal_log_lines": sum('"tcp_refused"' in x for x in lines),
            "emfile_lines": sum("Too many open files" in x or "out of system resource" in x for x in lines),
            "tracebacks": sum("Traceback" in x for x in lines),
        },
        "attacker": json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else None,
    }


async def slow(args: argparse.Namespace) -> dict:
    port, metrics_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as d:
        proc, log_path = start_server(Path(d), port, metrics_port, 1, None, args.limits)
        try:
            await wait_up(port, metrics_port, log_path)
            msg = options(port, 5999)

            async def run(kind: str) -> float:
                r, w = await asyncio.open_connection("127.0.0.1", port)
                t0 = time.monotonic()

                async def send() -> None:
                    with contextlib.suppress(OSError):
                        if kind == "slowloris":  # half the headers, then a header line every 2 s
                            w.write(msg[:100])
                            for i in range(100):
                                await asyncio.sleep(2)
                                w.write(f"X-{i}: y\r\n".encode())
                        elif kind == "slowloris_fast":  # header lines at ~200 B/s, never ending
                            w.write(msg[:100])
                            for i in range(1000):
                                await asyncio.sleep(0.25)
                                w.write(f"X-Pad-{i:04d}: {'y' * 36}\r\n".encode())
                        elif kind == "trickle":  # one byte every 3 s
                            for i in range(len(msg)):
                                w.write(msg[i : i + 1])
                                await asyncio.sleep(3)

                task = asyncio.create_task(send())
                with contextlib.suppress(OSError):
                    while await within(r.read(4096), 120):
                        pass
                task.cancel()
                w.close()
                return round(time.monotonic() - t0, 2)

            kinds = ("slowloris", "slowloris_fast", "trickle", "silent")
            times = await asyncio.gather(*(run(k) for k in kinds))
            text = (await http_get(metrics_port, "/metrics", 5) or b"").decode()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    out: dict = {f"{k}_closed_after_s": t for k, t in zip(kinds, times, strict=True)}
    out["closed"] = {
        r: metric(text, "sipcore_tcp_closed_total", f'reason="{r}"') for r in ("message_timeout", "too_slow")
    }
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["flood", "slow", "attack"])
    p.add_argument("--port", type=int)
    p.add_argument("--nofile", type=int, default=2000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--sources", type=int, default=300)
    p.add_argument("--per-source", type=int, default=64)
    p.add_argument("--style", choices=["silent", "keepalive"], default="silent")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--ramp", type=float, default=5.0)
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--limits", default="", help="YAML lines added under server.limits (4-space indent)")
    args = p.parse_args()
    if args.mode == "attack":
        asyncio.run(attack(args.port, args.sources, args.per_source, args.style, args.duration))
        return
    print(json.dumps(asyncio.run(flood(args) if args.mode == "flood" else slow(args)), indent=1))


if __name__ == "__main__":
    main()
