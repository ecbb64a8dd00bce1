"""CPU per REGISTER and per call inside the server, without sockets or SIPp: the interpreter's share.

    .venv/bin/python -m benchmarks.bench_sip_cpu [--mode register|call|both] [--n 20000] [--repeat 5]
        [--profile] [--per-message] [--gap-ms MS] [--against REV] [--write]

The real `Application` (benchmark configuration: 10,000 accounts, the shared harness's users) is
started on loopback ports, then messages shaped like the harness's SIPp scenarios
(/work/shared/bench/sipp) are handed to `SipServer.on_message` one by one, as the UDP endpoint
would, and what the server sends is captured instead of written to the socket. Per registration:
REGISTER -> 401, REGISTER with digest -> 200. Per call: INVITE -> 407, ACK, INVITE with digest
-> relayed to the callee (whose 100/180/200 are fed back), ACK, BYE -> relayed, 200 fed back.

``--against REV`` measures before/after in one run: git revision REV (extracted with `git archive`
into a temporary directory) and the working tree, alternately, each run in a fresh process.

Why: on this VM a loopback `sendto` that wakes a sleeping SIPp costs 20–400 µs (vCPU wake-up), which
buries the interpreter's cost in the step-rate figures at moderate rates. This measures the
interpreter's part alone (CPU time of the process, write-behind threads included), in one process,
so before/after comparisons are stable; the step-rate harness stays the figure of record.

``--gap-ms MS`` (call mode) sleeps MS before handing each message, as a server below saturation idles
between datagrams: on these VMs the same messages then cost two to four times the CPU (RESULTS.md,
"CPU per call depends on the idle time between messages"), which is the distance between this
benchmark's figure and the one over the wire at moderate rates.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import io
import os
import platform
import pstats
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.machine import cpu_model, free_port, load_note
from benchmarks.make_bench_config import write_bench_config
from sipcore.flow import Flow

RESULTS = Path(__file__).parent / "results" / "sip_cpu.md"
UAC = ("127.0.0.1", 45061)  # where the "SIPp UAC" sends from
UAS = ("127.0.0.1", 45090)  # the registered callee


class Capture:
    """Stands for the UDP socket's transport: keeps what the server sends."""

    def __init__(self, local: tuple[str, int]) -> None:
        self.local = local
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, ...]) -> None:
        self.sent.append((data, (addr[0], addr[1])))

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.local if name == "sockname" else default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]+))')


def _challenge(resp: bytes, header: str) -> dict[str, str]:
    """The MD5 challenge of a 401/407 (SIPp answers the first one it supports: MD5)."""
    for line in resp.decode().split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == header and "MD5" in value.upper() and "SHA-256" not in value.upper():
            return {m[0].lower(): m[1] or m[2] for m in _PARAM.findall(value)}
    raise AssertionError(f"no MD5 {header} in {resp[:300]!r}")


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _authorization(ch: dict[str, str], user: str, password: str, method: str, uri: str) -> str:
    ha1 = _md5(f"{user}:{ch['realm']}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    cnonce, nc = "6b8b4567", "00000001"
    response = _md5(f"{ha1}:{ch['nonce']}:{nc}:{cnonce}:auth:{ha2}")
    opaque = f', opaque="{ch["opaque"]}"' if "opaque" in ch else ""
    return (
        f'Digest username="{user}",realm="{ch["realm"]}",cnonce="{cnonce}",nc={nc},qop=auth,'
        f'uri="{uri}",nonce="{ch["nonce"]}",response="{response}",algorithm=MD5{opaque}'
    )


def _status(data: bytes) -> int:
    return int(data[8:11])


def register_pair(
    host: str, port: int, i: int, user: str | None = None, source: tuple[str, int] = UAC
) -> tuple[bytes, Any]:
    """(first REGISTER, a function of the 401 giving the authenticated REGISTER), as SIPp sends them:
    user u1xxxx for ``i`` (password "pw" + user) unless ``user`` is given, from ``source``."""
    user = user or f"u{10000 + i % 10000}"
    uri = f"sip:{host}:{port}"

    def msg(cseq: int, auth: str) -> bytes:
        return (
            f"REGISTER {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {source[0]}:{source[1]};branch=z9hG4bK-{i}-{cseq}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{host}:{port}>;tag={os.getpid()}SIPpTag0{i}\r\n"
            f"To: <sip:{user}@{host}:{port}>\r\n"
            f"Call-ID: {i}-{os.getpid()}@127.0.0.1\r\n"
            f"CSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:{user}@{source[0]}:{source[1]};transport=UDP>\r\n"
            f"{auth}"
            "Expires: 3600\r\n"
            "User-Agent: sipp-bench\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    def second(challenge: bytes) -> bytes:
        ch = _challenge(challenge, "www-authenticate")
        return msg(2, f"Authorization: {_authorization(ch, user, 'pw' + user, 'REGISTER', uri)}\r\n")

    return msg(1, ""), second


async def run_registers(app: Any, cap: Capture, host: str, port: int, n: int, start: int) -> float:
    """n registrations; returns CPU seconds of the process for them (answers checked)."""
    on_message = app.sip.on_message
    flush = app.sip.transports.flush_udp  # datagrams leave once per loop iteration: send them now
    flow = Flow("udp", UAC, cap.local)
    pairs = [register_pair(host, port, start + i) for i in range(n)]
    driver = 0.0  # the client's own work (reading the challenge, computing the digest), taken out
    c0 = time.process_time()
    for k, (first, second) in enumerate(pairs):
        cap.sent.clear()
        on_message(first, flow)
        flush()
        d0 = time.perf_counter()
        challenge = cap.sent[-1][0]
        assert _status(challenge) == 401, challenge[:200]
        authed = second(challenge)
        driver += time.perf_counter() - d0
        cap.sent.clear()
        on_message(authed, flow)
        flush()
        assert _status(cap.sent[-1][0]) == 200, cap.sent[-1][0][:300]
        if k % 200 == 199:
            await asyncio.sleep(0)  # let timers and write-behind run as they would between datagrams
    return time.process_time() - c0 - driver


def _lines(data: bytes) -> list[str]:
    return data.decode().split("\r\n\r\n", 1)[0].split("\r\n")


def _copied(data: bytes, names: tuple[str, ...]) -> list[str]:
    """The header lines of ``data`` whose (long-form) name is one of ``names``, as SIPp's [last_X:]."""
    return [ln for ln in _lines(data)[1:] if ln.partition(":")[0].strip().lower() in names]


def _header(data: bytes, name: str) -> str:
    for ln in _lines(data)[1:]:
        key, _, value = ln.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    raise KeyError(name)


_SDP = "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"


class CallDriver:
    """The SIPp UAC and UAS of the call scenario (uac.xml / uas.xml), message by message."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def invite(self, i: int, cseq: int, auth: str = "") -> bytes:
        user, h, p = f"u{10000 + i % 10000}", self.host, self.port
        return (
            f"INVITE sip:callee@{h}:{p} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {UAC[0]}:{UAC[1]};branch=z9hG4bK-c{i}-{cseq}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{h}:{p}>;tag={i}SIPpTag00\r\n"
            f"To: <sip:callee@{h}:{p}>\r\n"
            f"Call-ID: call-{i}-{os.getpid()}@127.0.0.1\r\n"
            f"CSeq: {cseq} INVITE\r\n"
            f"Contact: <sip:{user}@{UAC[0]}:{UAC[1]};transport=UDP>\r\n"
            f"{auth}"
            "User-Agent: sipp-bench\r\n"
            "Content-Type: application/sdp\r\n"
            f"Content-Length: {len(_SDP)}\r\n\r\n{_SDP}"
        ).encode()

    def ack_407(self, i: int, resp: bytes) -> bytes:
        h, p = self.host, self.port
        return (
            f"ACK sip:callee@{h}:{p} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {UAC[0]}:{UAC[1]};branch=z9hG4bK-c{i}-1\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:u{10000 + i % 10000}@{h}:{p}>;tag={i}SIPpTag00\r\n"
            f"To: {_header(resp, 'to')}\r\n"
            f"Call-ID: call-{i}-{os.getpid()}@127.0.0.1\r\n"
            "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    def authed_invite(self, i: int, challenge: bytes) -> bytes:
        user = f"u{10000 + i % 10000}"
        ch = _challenge(challenge, "proxy-authenticate")
        uri = f"sip:callee@{self.host}:{self.port}"
        return self.invite(
            i, 2, f"Proxy-Authorization: {_authorization(ch, user, 'pw' + user, 'INVITE', uri)}\r\n"
        )

    @staticmethod
    def uas_answer(req: bytes, status: str, tag: str, body: str = "") -> bytes:
        """The callee's response to a request the proxy relayed to it."""
        head = _copied(req, ("via", "v", "record-route", "from", "f", "call-id", "i", "cseq"))
        to = _header(req, "to")
        if ";tag=" not in to:
            to += f";tag={tag}"
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        return (
            f"SIP/2.0 {status}\r\n" + "\r\n".join(head) + f"\r\nTo: {to}\r\n"
            f"Contact: <sip:callee@{UAS[0]}:{UAS[1]};transport=UDP>\r\n{ctype}"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode()

    def in_dialog(self, i: int, method: str, cseq: int, ok: bytes) -> bytes:
        """ACK or BYE from the caller, routed by the Record-Route of the 200 it received."""
        h, p = self.host, self.port
        routes = [ln.partition(":")[2].strip() for ln in _copied(ok, ("record-route",))]
        route = f"Route: {', '.join(reversed(routes))}\r\n" if routes else ""
        target = re.search(r"sips?:[^>\s]+", _header(ok, "contact"))
        assert target
        return (
            f"{method} {target.group(0)} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {UAC[0]}:{UAC[1]};branch=z9hG4bK-c{i}-{cseq}{method}\r\n"
            f"{route}Max-Forwards: 70\r\n"
            f"From: <sip:u{10000 + i % 10000}@{h}:{p}>;tag={i}SIPpTag00\r\n"
            f"To: {_header(ok, 'to')}\r\n"
            f"Call-ID: call-{i}-{os.getpid()}@127.0.0.1\r\n"
            f"CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        ).encode()


async def register_callee(app: Any, cap: Capture, host: str, port: int) -> None:
    """The UAS registers as ``callee`` from its own port, as bench.py does before the calls."""
    on_message, flush = app.sip.on_message, app.sip.transports.flush_udp
    flow = Flow("udp", UAS, cap.local)
    first, second = register_pair(host, port, 999_999, user="callee", source=UAS)
    cap.sent.clear()
    on_message(first, flow)
    flush()
    challenge = cap.sent[-1][0]
    cap.sent.clear()
    on_message(second(challenge), flow)
    flush()
    assert _status(cap.sent[-1][0]) == 200, cap.sent[-1][0][:300]


# The messages of one call as the server reads them, in order (``run_calls``' per-message figures).
CALL_MESSAGES = (
    "INVITE -> 407 (stateless)",
    "ACK of the 407 (absorbed)",
    "INVITE with credentials -> relayed",
    "180 relayed",
    "200 relayed (answered)",
    "ACK relayed",
    "BYE relayed",
    "200 of the BYE relayed (CDR)",
)


async def run_calls(
    app: Any,
    cap: Capture,
    host: str,
    port: int,
    n: int,
    start: int,
    per_message: list[float] | None = None,
    gap: float = 0.0,
) -> float:
    """n calls, every message checked; returns CPU seconds of the process for them. ``per_message``
    (one slot per CALL_MESSAGES entry) gets the main thread's CPU seconds spent handling each message
    of the call, summed over the n calls (what runs between messages, timers and write-behind tasks,
    is in no slot). ``gap``: seconds the main thread sleeps before each message (the CPU figures
    exclude the sleep itself; it only lets the process go idle)."""
    on_message, flush = app.sip.on_message, app.sip.transports.flush_udp
    uac, uas = Flow("udp", UAC, cap.local), Flow("udp", UAS, cap.local)
    drv = CallDriver(host, port)
    driver = 0.0
    step = 0

    def feed(data: bytes, flow: Flow) -> list[tuple[bytes, tuple[str, int]]]:
        nonlocal step
        cap.sent.clear()
        if gap:
            time.sleep(gap)
        t0 = time.thread_time() if per_message is not None else 0.0
        on_message(data, flow)
        flush()
        if per_message is not None:
            per_message[step % len(CALL_MESSAGES)] += time.thread_time() - t0
        step += 1
        return list(cap.sent)

    def last_to(sent: list[tuple[bytes, tuple[str, int]]], addr: tuple[str, int], what: str) -> bytes:
        for data, to in reversed(sent):
            if to == addr and data.startswith(what.encode()):
                return data
        raise AssertionError(f"no {what} to {addr}: {[d[:40] for d, _ in sent]}")

    invites = [drv.invite(start + k, 1) for k in range(n)]
    c0 = time.process_time()
    for k, first in enumerate(invites):
        i = start + k
        challenge = last_to(feed(first, uac), UAC, "SIP/2.0 407")
        d0 = time.perf_counter()
        ack, authed = drv.ack_407(i, challenge), drv.authed_invite(i, challenge)
        driver += time.perf_counter() - d0
        assert not feed(ack, uac)
        relayed = last_to(feed(authed, uac), UAS, "INVITE ")
        d0 = time.perf_counter()
        tag = f"{i}SIPpTag01"
        ringing, ok = (
            drv.uas_answer(relayed, "180 Ringing", tag),
            drv.uas_answer(relayed, "200 OK", tag, _SDP),
        )
        driver += time.perf_counter() - d0
        last_to(feed(ringing, uas), UAC, "SIP/2.0 180")
        ok_up = last_to(feed(ok, uas), UAC, "SIP/2.0 200")
        d0 = time.perf_counter()
        ack2, bye = drv.in_dialog(i, "ACK", 2, ok_up), drv.in_dialog(i, "BYE", 3, ok_up)
        driver += time.perf_counter() - d0
        last_to(feed(ack2, uac), UAS, "ACK ")
        bye_down = last_to(feed(bye, uac), UAS, "BYE ")
        d0 = time.perf_counter()
        bye_ok = drv.uas_answer(bye_down, "200 OK", tag)
        driver += time.perf_counter() - d0
        last_to(feed(bye_ok, uas), UAC, "SIP/2.0 200")
        if k % 50 == 49:
            await asyncio.sleep(0)  # let timers and write-behind run as they would between datagrams
    await asyncio.sleep(0.05)
    return time.process_time() - c0 - driver


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _started(work: Path) -> tuple[Any, Capture, str, int]:
    from server.app import Application, load_application_config
    from server.logs import configure_logging

    configure_logging("json", "info")  # as `sipcore serve` logs when stderr is not a terminal
    config = write_bench_config(work / "bench.yaml", 10_000)
    loaded = load_application_config(str(config))
    port = free_port()
    loaded.settings.sip.udp = [f"127.0.0.1:{port}"]
    loaded.settings.sip.tcp = [f"127.0.0.1:{port}"]
    loaded.settings.sip.metrics_address = None
    os.chdir(work)
    app = Application(loaded)
    await app.start()
    ep = app.sip.transports.udp[0]
    cap = Capture(ep.local)
    ep.transport.close()
    ep.transport = cap  # type: ignore[assignment]
    return app, cap, "127.0.0.1", port


async def measure(
    mode: str, n: int, repeat: int, profile: bool, per_message: bool = False, gap: float = 0.0
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        app, cap, host, port = await _started(Path(tmp))
        try:
            await run_registers(app, cap, host, port, 500, 50_000)  # warm-up
            prof = cProfile.Profile() if profile else None
            for r in range(repeat):
                if prof:
                    prof.enable()
                if mode in ("register", "both"):
                    rss0 = _rss_kib()
                    cpu = await run_registers(app, cap, host, port, n, r * n)
                    out.setdefault("register", []).append(cpu / n * 1e6)
                    out.setdefault("register RSS growth KiB/1000", []).append((_rss_kib() - rss0) / n * 1000)
                if mode in ("call", "both"):
                    if r == 0:
                        await register_callee(app, cap, host, port)
                        await run_calls(app, cap, host, port, 200, 900_000)  # warm-up
                    slots = [0.0] * len(CALL_MESSAGES) if per_message else None
                    cpu = await run_calls(app, cap, host, port, n, r * n, slots, gap)
                    out.setdefault("call", []).append(cpu / n * 1e6)
                    for name, seconds in zip(CALL_MESSAGES, slots or (), strict=False):
                        out.setdefault(f"call: {name}", []).append(seconds / n * 1e6)
                if prof:
                    prof.disable()
            if prof:
                buf = io.StringIO()
                pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime").print_stats(40)
                pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("cumulative").print_stats(40)
                print(buf.getvalue())
        finally:
            await app.close()
    return out


def against(args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """Alternate fresh processes on REV's tree and on the working tree; per side, per operation, the
    median of each process's runs."""
    root = Path(__file__).resolve().parent.parent
    sides: dict[str, dict[str, list[float]]] = {args.against: {}, "working tree": {}}
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(root), "archive", args.against], check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        (Path(tmp) / "benchmarks" / "bench_sip_cpu.py").write_bytes(Path(__file__).read_bytes())
        # REV's own C extensions (an archive holds no build; without them the editable install's
        # finder would hand REV the working tree's builds)
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tmp, check=True,
                       capture_output=True)  # fmt: skip
        for _ in range(args.rounds):
            for side, tree in ((args.against, tmp), ("working tree", str(root))):
                cmd = [sys.executable, "-m", "benchmarks.bench_sip_cpu", "--child", "--mode", args.mode,
                       "--n", str(args.n), "--repeat", str(args.repeat)]  # fmt: skip
                if args.per_message:
                    cmd.append("--per-message")
                if args.gap_ms:
                    cmd += ["--gap-ms", str(args.gap_ms)]
                out = subprocess.run(cmd, cwd=tree, env={**os.environ, "PYTHONPATH": tree}, check=True,
                                     capture_output=True, text=True).stdout  # fmt: skip
                for line in out.splitlines():
                    if line.startswith("CHILD "):
                        what, _, value = line[6:].rpartition(" ")
                        sides[side].setdefault(what, []).append(float(value))
    return sides


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--mode", default="register", choices=["register", "call", "both"])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--per-message", action="store_true", help="call mode: also the CPU of each message of the call"
    )
    ap.add_argument(
        "--gap-ms", type=float, default=0.0, metavar="MS",
        help="call mode: sleep MS before each message (the process idles between datagrams)",
    )  # fmt: skip
    ap.add_argument("--against", metavar="REV", help="compare with git revision REV, alternating processes")
    ap.add_argument("--rounds", type=int, default=3, help="with --against: processes per side")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--write", action="store_true", help=f"append to {RESULTS}")
    args = ap.parse_args(argv)
    if args.gap_ms < 0:  # before --against hands it to its children
        ap.error("--gap-ms must not be negative")
    if args.against:
        return report_against(args, against(args))
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    figures = asyncio.run(
        measure(args.mode, args.n, args.repeat, args.profile, args.per_message, args.gap_ms / 1000)
    )
    if args.child:
        for what, runs in figures.items():
            print("CHILD", what, statistics.median(runs))
        return 0
    lines = [
        f"### In-process CPU per operation ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"- machine: {os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()}; {load_note()}",
        f"- command: `.venv/bin/python -m benchmarks.bench_sip_cpu --mode {args.mode} --n {args.n} "
        f"--repeat {args.repeat}{' --per-message' if args.per_message else ''}"
        f"{f' --gap-ms {args.gap_ms:g}' if args.gap_ms else ''}`",
        "",
        "| operation | median µs CPU | runs |",
        "|---|---:|---|",
    ]
    for what, runs in figures.items():
        lines.append(
            f"| {what} | **{statistics.median(runs):.0f}** | {', '.join(f'{x:.0f}' for x in runs)} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        with RESULTS.open("a", encoding="utf-8") as fh:
            fh.write("\n" + text)
    return 0


def report_against(args: argparse.Namespace, sides: dict[str, dict[str, list[float]]]) -> int:
    base, new = sides[args.against], sides["working tree"]
    lines = [
        f"### In-process CPU per operation, {args.against} vs working tree ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"- machine: {os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()}; {load_note()}",
        f"- command: `.venv/bin/python -m benchmarks.bench_sip_cpu {shlex.join(sys.argv[1:])}`",
        "",
        f"| operation | {args.against} µs CPU (per process) | working tree µs CPU (per process) | ratio |",
        "|---|---|---|---:|",
    ]
    for what in base:
        b, n = statistics.median(base[what]), statistics.median(new.get(what, [float("nan")]))
        lines.append(
            f"| {what} | **{b:.0f}** ({', '.join(f'{x:.0f}' for x in base[what])}) | **{n:.0f}** "
            f"({', '.join(f'{x:.0f}' for x in new.get(what, []))}) | {n / b:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        with RESULTS.open("a", encoding="utf-8") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
