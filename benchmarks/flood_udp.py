"""One-source UDP floods against `sipcore serve` for docs/reliability.md (issue 20): while a flooder
sends at full speed from 127.0.0.X, a well-behaved phone on 127.0.0.Y registers (with digest) and
sends OPTIONS; we report the phone's success % and p99, the flooder's ban, and the server's RSS
growth. Loopback only, the guard's whitelist emptied (loopback is not exempt), bounded in time.

    python -m benchmarks.flood_udp --workers 1 2 --kinds options garbage invite --seconds 20
    python -m benchmarks.flood_udp --nft ...            # bans mirrored into an nftables set (root)
    python -m benchmarks.flood_udp --no-rate-limit ...  # the stateless answers alone (memory)
    git archive HEAD | tar -x -C /tmp/before && python -m benchmarks.flood_udp --tree /tmp/before ...

Flood kinds: ``options`` (OPTIONS to the server, a new branch and Call-ID each), ``garbage``
(random bytes), ``invite`` (INVITEs without credentials to a local user), ``register`` (REGISTERs
without credentials: each answered 401). The flooder is one or
more processes (``--flooders``) of this module (``flood`` subcommand) sending from one address.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from sipcore.digest import build_authorization
from sipcore.message import Response, parse
from sipcore.waiting import within
from tests.registrar_sip.configs import DOMAIN, PASSWORDS, write_config

ROOT = Path(__file__).resolve().parents[1]
FLOODER = "127.0.0.66"
PHONE = "127.0.0.77"
RETRANSMIT = (0.5, 1.0, 1.5)  # the phone's waits before each retransmission / giving up (3 s in all)


# ---- the flooder (a separate process) ---------------------------------------------------------------
def flood_messages(kind: str, host: str, port: int, count: int = 4096) -> list[bytes]:
    """``count`` messages to cycle through; for the SIP kinds each holds ``%08d`` twice (branch and
    Call-ID), filled with a running number at send time so that every request is a new one."""
    rnd = random.Random(7)
    out = []
    for i in range(count):
        branch, call = f"z9hG4bKfl{i}x%08d", f"fl{i}-%08d"
        if kind == "garbage":
            out.append(rnd.randbytes(rnd.randrange(40, 600)).replace(b"%", b"_"))
        elif kind == "options":
            out.append(
                f"OPTIONS sip:{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {FLOODER}:5099;branch={branch}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:x@{FLOODER}>;tag=t{i}\r\nTo: <sip:{host}:{port}>\r\n"
                f"Call-ID: {call}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n".encode()
            )
        elif kind == "register":
            out.append(
                f"REGISTER sip:{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {FLOODER}:5099;branch={branch}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:1003@{host}:{port}>;tag=t{i}\r\nTo: <sip:1003@{host}:{port}>\r\n"
                f"Call-ID: {call}\r\nCSeq: 1 REGISTER\r\nContact: <sip:1003@{FLOODER}:5099>\r\n"
                f"Content-Length: 0\r\n\r\n".encode()
            )
        else:
            out.append(
                f"INVITE sip:1002@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {FLOODER}:5099;branch={branch}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:1001@{DOMAIN}>;tag=t{i}\r\nTo: <sip:1002@{DOMAIN}>\r\n"
                f"Call-ID: {call}\r\nCSeq: 1 INVITE\r\nContact: <sip:1001@{FLOODER}:5099>\r\n"
                f"Content-Length: 0\r\n\r\n".encode()
            )
    return out


def start_flooders(
    kind: str, address: tuple[str, int], seconds: float, processes: int
) -> list[subprocess.Popen[str]]:
    """Flooder processes sharing one source address (SO_REUSEPORT is not needed: each binds its own port)."""
    procs = []
    for i in range(processes):
        code = (
            "import sys\nfrom benchmarks.flood_udp import flood_from\n"
            f"print(flood_from({kind!r}, {address[0]!r}, {address[1]}, {seconds}, {i}))"
        )
        procs.append(
            subprocess.Popen([sys.executable, "-c", code], cwd=str(ROOT), stdout=subprocess.PIPE, text=True)
        )
    return procs


def flood_from(kind: str, host: str, port: int, seconds: float, index: int) -> int:
    """Send as fast as this process can for ``seconds`` from the flooder's address; the count sent."""
    messages = flood_messages(kind, host, port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((FLOODER, 0))  # any port: several floods (tests, benchmarks) may run at once
    sendto, dest, n = sock.sendto, (host, port), len(messages)
    fill = kind != "garbage"
    sent = index << 27  # each flooder process its own numbers
    first = sent
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(1024):
            data = messages[sent % n]
            try:
                sendto(data % (sent, sent) if fill else data, dest)
            except OSError:
                pass
            sent += 1
    sock.close()
    return sent - first


def flooders_sent(procs: list[subprocess.Popen[str]]) -> int:
    total = 0
    for p in procs:
        out, _ = p.communicate(timeout=60)
        total += int(out.strip() or 0)
    return total


# ---- the good phone ---------------------------------------------------------------------------------
class _Phone(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[Response]] = {}

    def datagram_received(self, data: bytes, addr: object) -> None:
        try:
            resp = parse(data)
            branch = resp.top_via.branch  # type: ignore[union-attr]
        except Exception:
            return
        fut = self.waiting.get(branch or "")
        if fut is not None and not fut.done() and isinstance(resp, Response) and resp.status >= 200:
            fut.set_result(resp)


@dataclass
class PhoneStats:
    sent: int = 0
    answered: int = 0
    latencies: list[float] = field(default_factory=list)
    timeline: list[tuple[float, float | None]] = field(default_factory=list)  # (sent at, latency or None)

    def summary(self, since: float | None = None) -> dict[str, object]:
        items = [(t, lat) for t, lat in self.timeline if since is None or t >= since]
        done = sorted(lat for _, lat in items if lat is not None)
        p99 = done[min(len(done) - 1, int(len(done) * 0.99))] if done else None
        return {
            "requests": len(items),
            "answered": len(done),
            "success_pct": round(100.0 * len(done) / len(items), 1) if items else None,
            # answered without the phone retransmitting anything (every round trip's first datagram)
            "first_try_pct": round(100.0 * sum(1 for x in done if x < RETRANSMIT[0] - 0.05) / len(items), 1)
            if items
            else None,
            "p50_ms": round(done[len(done) // 2] * 1000, 1) if done else None,
            "p99_ms": round(p99 * 1000, 1) if p99 is not None else None,
        }


class GoodPhone:
    """REGISTER (answering the 401) and OPTIONS in turn from its own address, one at a time, each
    retransmitted over UDP like a phone (0.5 s, 1 s, then given up after 3 s)."""

    def __init__(self, server: tuple[str, int], source: str = PHONE, user: str = "1001") -> None:
        self.server = server
        self.source = source
        self.user = user
        self.stats = PhoneStats()
        self.call_id = secrets.token_hex(8) + "@" + source
        self.cseq = 0
        self._proto = _Phone()
        self._transport: asyncio.DatagramTransport | None = None
        self.port = 0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: self._proto, local_addr=(self.source, 0)
        )
        self.port = self._transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def _transact(self, build: object) -> Response | None:
        branch = "z9hG4bK" + secrets.token_hex(8)
        data = build(branch)  # type: ignore[operator]
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._proto.waiting[branch] = fut
        try:
            for wait in RETRANSMIT:
                assert self._transport is not None
                self._transport.sendto(data, self.server)
                try:
                    return await within(asyncio.shield(fut), wait)
                except TimeoutError:
                    continue
            return None
        finally:
            self._proto.waiting.pop(branch, None)

    def _options(self, branch: str) -> bytes:
        host, port = self.server
        return (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {self.source}:{self.port};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{self.user}@{DOMAIN}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: {secrets.token_hex(8)}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    def _register(self, auth: str | None) -> object:
        host, port = self.server
        self.cseq += 1
        cseq = self.cseq

        def build(branch: str) -> bytes:
            lines = [
                f"REGISTER sip:{host}:{port} SIP/2.0",
                f"Via: SIP/2.0/UDP {self.source}:{self.port};branch={branch};rport",
                "Max-Forwards: 70",
                f"From: <sip:{self.user}@{host}:{port}>;tag={secrets.token_hex(4)}",
                f"To: <sip:{self.user}@{host}:{port}>",
                f"Call-ID: {self.call_id}",
                f"CSeq: {cseq} REGISTER",
                f"Contact: <sip:{self.user}@{self.source}:{self.port}>",
                "Expires: 600",
            ]
            if auth:
                lines.append(f"Authorization: {auth}")
            return ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode()

        return build

    async def probe(self, register: bool) -> float | None:
        """One OPTIONS, or one registration (REGISTER, 401, REGISTER with credentials, 200)."""
        started = time.monotonic()
        if not register:
            resp = await self._transact(self._options)
            ok = resp is not None and resp.status == 200
        else:
            first = await self._transact(self._register(None))
            ok = False
            if first is not None and first.status == 401:
                host, port = self.server
                auth = build_authorization(
                    first.headers.get("www-authenticate") or "", username=self.user, password=PASSWORDS[self.user],
                    method="REGISTER", uri=f"sip:{host}:{port}", cnonce=secrets.token_hex(4),
                )  # fmt: skip
                final = await self._transact(self._register(auth))
                ok = final is not None and final.status == 200
        latency = time.monotonic() - started if ok else None
        self.stats.timeline.append((started, latency))
        return latency

    async def run(self, until: float, pace: float = 0.05) -> None:
        register = False
        while time.monotonic() < until:
            began = time.monotonic()
            await self.probe(register)
            register = not register
            await asyncio.sleep(max(0.0, pace - (time.monotonic() - began)))


# ---- the server -------------------------------------------------------------------------------------
def rss_kb(pid: int) -> int:
    """RSS of ``pid`` and its children (the workers), in KiB."""
    total = 0
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def guard_yaml(rate_limit: bool, nft_set: str | None, requests: int = 200, window: int = 2) -> str:
    parts = [
        "whitelist: []",
        f"rate_limit: {{enabled: {str(rate_limit).lower()}, requests: {requests}, window: {window}}}",
    ]
    if nft_set:
        parts.append(f'nft_set: "{nft_set}"')
    return "{" + ", ".join(parts) + "}"


@contextlib.asynccontextmanager
async def served(
    directory: Path, guard: str, workers: int, port: int | None = None, tree: Path = ROOT
) -> AsyncIterator[tuple[tuple[str, int], int, Path]]:
    """``sipcore serve`` from ``tree`` (on ``port``, or a free one) until READY=1; yields (address,
    pid, log file)."""
    from tests.conftest import free_port

    port, metrics_port = port or free_port(), free_port()
    config = write_config(directory, port, guard=guard, metrics_port=metrics_port)
    name = f"sipcore-flood-{secrets.token_hex(6)}"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind("\0" + name)
    notify.setblocking(False)
    env = dict(os.environ, PYTHONPATH=str(tree), NOTIFY_SOCKET="@" + name)
    addr = f"127.0.0.1:{port}"
    log_path = directory / "server.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed below, the server writes to it
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--no-media", "--config", str(config),
        "--workers", str(workers), "--udp", addr, "--tcp", addr, "--metrics", f"127.0.0.1:{metrics_port}",
        cwd=str(tree), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log_file,
    )  # fmt: skip
    try:
        try:
            state = await within(asyncio.get_running_loop().sock_recv(notify, 64), 60)
        finally:
            notify.close()
        if state != b"READY=1":
            raise RuntimeError(f"server did not start: {state!r}")
        yield ("127.0.0.1", port), proc.pid, log_path
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await within(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log_file.close()


def log_events(path: Path, event: str) -> list[dict[str, object]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


@contextlib.contextmanager
def nft_table(port: int) -> object:
    """A table of our own with the set and drop rule docs/security.md gives, for ``port`` only."""
    name = f"sipcore_flood_{secrets.token_hex(3)}"
    script = (
        f"table inet {name} {{\n  set banned4 {{ type ipv4_addr; flags timeout; }}\n"
        "  chain pre { type filter hook prerouting priority -300; policy accept;\n"
        f"    ip saddr @banned4 udp dport {port} drop\n    ip saddr @banned4 tcp dport {port} drop\n  }}\n}}\n"
    )
    made = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=10)
    if made.returncode != 0:
        raise RuntimeError(f"nft: {made.stderr.strip()}")
    try:
        yield f"inet {name} banned4"
    finally:
        subprocess.run(["nft", "delete", "table", "inet", name], capture_output=True, timeout=10)


class Phones:
    """One phone per demo account, all on the phone address, probing concurrently (more samples)."""

    def __init__(self, server: tuple[str, int], count: int = 3) -> None:
        self.phones = [GoodPhone(server, PHONE, user) for user in list(PASSWORDS)[:count]]

    async def open(self) -> None:
        for phone in self.phones:
            await phone.open()

    def close(self) -> None:
        for phone in self.phones:
            phone.close()

    async def run(self, until: float) -> None:
        await asyncio.gather(*(phone.run(until) for phone in self.phones))

    def window(self, since: float, until: float = float("inf")) -> dict[str, object]:
        merged = [(t, lat) for p in self.phones for t, lat in p.stats.timeline if since <= t < until]
        return PhoneStats(timeline=merged).summary()


def _nft_elements(nft_set: str) -> list[str]:
    """The addresses in an nftables set now."""
    listed = subprocess.run(
        ["nft", "list", "set", *nft_set.split()], capture_output=True, text=True, timeout=10
    )
    return re.findall(r"(\d+\.\d+\.\d+\.\d+) timeout", listed.stdout)


async def scenario(
    kind: str, workers: int, seconds: float, *, rate_limit: bool = True, nft: bool = False, flooders: int = 1,
    directory: Path, phones: int = 3, settle: float = 2.0, tree: Path = ROOT,
) -> dict[str, object]:  # fmt: skip
    """One flood against a fresh server: the phones' figures before, during (whole and after the
    first second) and after (``settle`` seconds each side), the ban, the RSS."""
    from tests.conftest import free_port

    directory.mkdir(parents=True, exist_ok=True)
    port_hint = free_port()  # the nft rule needs the port before the config: reserve one for both
    with contextlib.ExitStack() as stack:
        nft_set = stack.enter_context(nft_table(port_hint)) if nft else None  # type: ignore[arg-type]
        # another tree (the code before this work) knows neither rate_limit nor nft_set
        guard = guard_yaml(rate_limit, nft_set) if tree == ROOT else "{whitelist: []}"
        async with served(directory, guard, workers, port_hint, tree) as (address, pid, log_path):
            group = Phones(address, phones)
            await group.open()
            try:
                warm = time.monotonic()
                await group.run(warm + settle)  # warm-up: the phones registered, answers steady
                rss_before = rss_kb(pid)
                start = time.monotonic()
                procs = start_flooders(kind, address, seconds, flooders)
                peak = rss_before
                series = []  # MB every 5 s: does it level off?
                runner = asyncio.get_running_loop().create_task(group.run(start + seconds))
                while not runner.done():
                    await asyncio.sleep(0.5)
                    now_kb = rss_kb(pid)
                    peak = max(peak, now_kb)
                    if time.monotonic() - start >= 5 * (len(series) + 1):
                        series.append(now_kb // 1024)
                await runner
                sent = flooders_sent(procs)
                elapsed = time.monotonic() - start
                rss_end = rss_kb(pid)
                after_start = time.monotonic()
                await group.run(after_start + settle)
                in_kernel = _nft_elements(nft_set) if nft_set else []
                rates = {e.get("source"): e.get("rate") for e in log_events(log_path, "rate_exceeded")}
                return {
                    "kind": kind, "workers": workers, "rate_limit": rate_limit, "nft": nft,
                    "seconds": round(elapsed, 1), "flood_sent": sent, "flood_rate_per_s": round(sent / elapsed),
                    "phone_before": group.window(warm, start),
                    "phone_during": group.window(start, start + seconds),
                    "phone_during_after_1s": group.window(start + 1.0, start + seconds),
                    "phone_after": group.window(after_start),
                    "bans": [
                        {"source": e.get("source"), "reason": e.get("reason"), "rate": rates.get(e.get("source"))}
                        for e in log_events(log_path, "source_banned")
                    ],
                    "nft_failed": len(log_events(log_path, "nft_ban_failed")),
                    "nft_elements": in_kernel,
                    "tracebacks": sum(1 for ln in log_path.read_text(errors="replace").splitlines() if "Traceback" in ln),
                    "rss_mb": {"before": rss_before // 1024, "peak": peak // 1024, "end": rss_end // 1024,
                               "growth_peak": (peak - rss_before) // 1024, "every_5s": series},
                }  # fmt: skip
            finally:
                group.close()


async def main_async(args: argparse.Namespace) -> list[dict[str, object]]:
    import tempfile

    results = []
    with tempfile.TemporaryDirectory(prefix="sipcore-flood-") as tmp:
        for workers in args.workers:
            for kind in args.kinds:
                res = await scenario(
                    kind, workers, args.seconds, rate_limit=not args.no_rate_limit, nft=args.nft,
                    flooders=args.flooders, directory=Path(tmp) / f"{kind}-{workers}", phones=args.phones,
                    tree=Path(args.tree).resolve(),
                )  # fmt: skip
                print(json.dumps(res), flush=True)
                results.append(res)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--kinds", nargs="+", default=["options", "garbage", "invite"])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--flooders", type=int, default=1, help="flooder processes (one source address)")
    parser.add_argument(
        "--phones", type=int, default=3, choices=(1, 2, 3), help="good phones (one per account)"
    )
    parser.add_argument("--tree", default=str(ROOT), help="serve another tree's code (e.g. git archive HEAD)")
    parser.add_argument("--nft", action="store_true", help="mirror bans into an nftables set (root)")
    parser.add_argument(
        "--no-rate-limit", action="store_true", help="rate limit off: stateless answers alone"
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
