"""Concurrent G.711 streams the media service sustains on one core (issue 16), over real UDP.

    .venv/bin/python -m benchmarks.bench_media_streams --mode voicemail --streams 100,200,300,400 --duration 20
    .venv/bin/python -m benchmarks.bench_media_streams --mode voicemail,conference --write

The media service (``server.media_service.MediaService``) runs alone in a child process (uvloop, pinned
to one CPU when the machine has two or more), so the CPU it reports is its own: process CPU time
over the measured window, sent back through a pipe with its counters (frames sent by its 20 ms
clock, frames sent more than 20 ms late, the worst lateness).

The parent is the load generator (asyncio + uvloop, pinned to the other CPU): one RTP socket per
stream, calls set up over SIP at ``--setup-rate`` per second, as the proxy would (INVITE
``sip:voicemail-<box>@`` or ``sip:conference-<room>@`` with a P-Asserted-Identity and a PCMU offer,
200, ACK; in voicemail mode a SIP INFO ``Signal=#`` skips the greeting, so after the 400 ms beep every
call is recording). From the first answer on, each stream sends one 20 ms PCMU frame (a tone,
precomputed) every 20 ms on an absolute schedule; after ``--warmup`` seconds the window of
``--duration`` seconds is measured: service CPU, late frames, and the packets each stream received
back against the 50/s the service must send. Then BYE every call and wait for the 200s.

A step passes with < 1 % of the service's frames late and >= 99 % of the expected packets received;
stepping stops after the first step that fails (``--all``: run every step; ``--repeat N``: N runs
per count, most must pass). The generator reports its own late sends and CPU, so a step it could not
drive is visible as such; the other processes' CPU on the service's CPU (/proc/stat) and the
service's involuntary context switches show when the machine, not the service, made frames late.
``--realtime 10`` (SCHED_RR) or ``--priority -10`` (nice) put both processes ahead of other work.
``--py-spy DIR`` records the service during each window (collapsed stacks).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing as mp
import os
import platform
import re
import resource
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.machine import cpu_model, load_note
from sipcore.waiting import within

FRAME = 0.02
FPS = 50
ROOM_SIZE = 10
LATE_AFTER = 0.02  # the service's definition: more than one frame period after the due time
RTP_HEADER = struct.Struct("!BBHII")
HOST = "127.0.0.1"
DEFAULT_OUT = Path(__file__).parent / "results" / "media_streams.md"


# --------------------------------------------------------------------------------------------------
# The service, in its own process
# --------------------------------------------------------------------------------------------------


def service_main(conn: Any, cfg: dict[str, Any]) -> None:
    """Child process: build the service from ``cfg`` (plain values), answer the parent's commands."""
    if cfg["cpu"] is not None:
        os.sched_setaffinity(0, {cfg["cpu"]})
    if cfg["priority"]:
        os.setpriority(os.PRIO_PROCESS, 0, cfg["priority"])
    if cfg["realtime"]:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(cfg["realtime"]))
    from server.logs import configure_logging

    configure_logging("json", "warning")  # the per-call info lines would be the only output
    coro = _serve(conn, cfg)
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


async def _serve(conn: Any, cfg: dict[str, Any]) -> None:
    from zoneinfo import ZoneInfo

    from media.mailbox import MailboxStore
    from media.prompts import PromptSet
    from server.media_service import MediaService
    from server.media_settings import MailboxOwner, MediaSettings

    owners = {
        f"bench-{i:04d}": MailboxOwner(
            box=f"bench-{i:04d}",
            account_id=f"bench/{i:04d}",
            customer_id="bench",
            extension=f"{5000 + i}",
            aor=f"sip:{5000 + i}@bench.test",
            pin=None,
            email=None,
            voicemail=True,
        )
        for i in range(cfg["mailboxes"])
    }
    state = Path(cfg["state_dir"])
    settings = MediaSettings(
        sip_host=HOST,
        sip_port=0,
        proxy=(HOST, cfg["proxy_port"]),
        trusted=frozenset({HOST}),
        rtp_address=HOST,
        rtp_ports=tuple(cfg["rtp_ports"]),
        rtp_timeout=120.0,
        state_dir=state,
        prompts=None,
        max_messages=1000,
        max_message_seconds=cfg["max_message_seconds"],
        min_message_seconds=1.0,
        silence_seconds=60.0,
        max_greeting_seconds=60.0,
        timezone=ZoneInfo("UTC"),
        mwi_refresh=3600.0,
        max_participants=20,
        smtp=None,
        owners=owners,
    )
    store = MailboxStore(
        state / "voicemail", max_messages=1000, max_message_seconds=cfg["max_message_seconds"]
    )
    service = MediaService(settings, PromptSet.default(), store)

    ticks = {"n": 0, "busy": 0.0, "max": 0.0}
    plain_tick = service._tick

    def timed_tick(now: float, lateness: float) -> None:  # how much of each 20 ms the clock's work takes
        t0 = time.perf_counter()
        plain_tick(now, lateness)
        spent = time.perf_counter() - t0
        ticks["n"] += 1
        ticks["busy"] += spent
        if spent > ticks["max"]:
            ticks["max"] = spent

    service._tick = timed_tick  # type: ignore[method-assign]

    ends = {"n": 0, "busy": 0.0, "max": 0.0}
    plain_end = service._end

    def timed_end(session: Any, reason: str, *, send_bye: bool) -> None:  # a hang-up closes the WAV (fsync)
        t0 = time.perf_counter()
        plain_end(session, reason, send_bye=send_bye)
        spent = time.perf_counter() - t0
        ends["n"] += 1
        ends["busy"] += spent
        ends["max"] = max(ends["max"], spent)

    service._end = timed_end  # type: ignore[method-assign]

    collections = {"n": 0, "busy": 0.0, "max": 0.0, "started": 0.0}

    def on_gc(phase: str, info: dict[str, int]) -> None:  # the cyclic collector's pauses
        if phase == "start":
            collections["started"] = time.perf_counter()
            return
        spent = time.perf_counter() - collections["started"]
        collections["n"] += 1
        collections["busy"] += spent
        collections["max"] = max(collections["max"], spent)

    gc.callbacks.append(on_gc)
    await service.start()
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()

    def snapshot() -> dict[str, Any]:
        c = service.counters
        return {
            "wall": time.perf_counter(),
            "cpu": time.process_time(),
            "frames": c.frames,
            "late": c.late_frames,
            "max_lateness": c.max_lateness,
            "calls": c.calls,
            "deposits": c.deposits,
            "timeouts": c.timeouts,
            "sessions": len(service.sessions),
            "rooms": len(service.rooms),
            "ticks": ticks["n"],
            "tick_busy": ticks["busy"],
            "tick_max": ticks["max"],
            "ends": ends["n"],
            "end_busy": ends["busy"],
            "end_max": ends["max"],
            "preempted": resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw,
            "gcs": collections["n"],
            "gc_busy": collections["busy"],
            "gc_max": collections["max"],
        }

    def on_command() -> None:
        cmd = conn.recv()
        if cmd == "mark":  # the window starts: the worst lateness and tick are the window's own
            service.counters.max_lateness = 0.0
            ticks["max"] = collections["max"] = 0.0
            conn.send(snapshot())
        elif cmd == "snapshot":
            conn.send(snapshot())
        elif cmd == "stop" and not stopped.done():
            stopped.set_result(None)

    loop.add_reader(conn.fileno(), on_command)
    conn.send({"port": service.port, "pid": os.getpid()})
    await stopped
    loop.remove_reader(conn.fileno())
    await service.close()
    conn.send(snapshot())


# --------------------------------------------------------------------------------------------------
# The load generator
# --------------------------------------------------------------------------------------------------


class RtpLeg(asyncio.DatagramProtocol):
    """One stream's RTP socket: it sends the caller's frames and counts what the service sends back."""

    __slots__ = ("active", "received", "remote", "seq", "ssrc", "transport", "ts", "wave")

    def __init__(self, wave: int) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.received = 0
        self.remote: tuple[str, int] | None = None
        self.active = False
        self.seq = secrets.randbits(16)
        self.ts = secrets.randbits(32)
        self.ssrc = secrets.randbits(32)
        self.wave = wave

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
        self.received += 1

    def error_received(self, exc: Exception) -> None:
        pass


class SipSide(asyncio.DatagramProtocol):
    """The generator's SIP socket (it is also the 'proxy' the service sends MWI NOTIFYs to)."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self.port = 0
        self.requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
        from sipcore.message import Response, parse

        try:
            msg = parse(data)
        except Exception:
            return
        if isinstance(msg, Response):
            if msg.status < 200:
                return
            fut = self.waiting.pop((msg.call_id, msg.cseq[1]), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        self.requests += 1  # NOTIFY (message waiting) or a BYE from the service
        if msg.method != "ACK" and self.transport is not None:
            self.transport.sendto(msg.make_response(200, to_tag="gen").serialize(), addr)

    def expect(self, call_id: str, method: str) -> asyncio.Future[Any]:
        fut = asyncio.get_running_loop().create_future()
        self.waiting[(call_id, method)] = fut
        return fut

    def send(self, text: str, dest: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(text.replace("\n", "\r\n").encode(), dest)


@dataclass
class Call:
    index: int
    leg: RtpLeg
    rtp_port: int
    call_id: str = field(default_factory=lambda: secrets.token_hex(10))
    from_tag: str = field(default_factory=lambda: secrets.token_hex(4))
    to_header: str = ""
    target: str = ""
    cseq: int = 1
    status: int = 0
    bye_status: int = 0


def _body(text: str) -> tuple[str, int]:
    return text, len(text.replace("\n", "\r\n"))


class Generator:
    def __init__(
        self, mode: str, streams: int, service_port: int, sip: SipSide, legs: list[tuple[RtpLeg, int]]
    ):
        self.mode = mode
        self.service = (HOST, service_port)
        self.sip = sip
        self.calls = [Call(i, leg, port) for i, (leg, port) in enumerate(legs[:streams])]
        self.active: list[RtpLeg] = []
        self.sent = 0
        self.ticks = 0
        self.late_ticks = 0
        self.late_sends = 0
        self.max_lateness = 0.0
        self.max_send_loop = 0.0
        self.send_busy = 0.0
        self.failed: dict[str, int] = {}
        self.retransmissions = 0

    # ---- signalling ---------------------------------------------------------------------------
    def _ruri(self, call: Call) -> str:
        if self.mode == "voicemail":
            user = f"voicemail-bench-{call.index:04d}"
        else:
            user = f"conference-room{call.index // ROOM_SIZE:03d}"
        return f"sip:{user}@{HOST}:{self.service[1]}"

    def _via(self) -> str:
        return f"Via: SIP/2.0/UDP {HOST}:{self.sip.port};branch=z9hG4bK{secrets.token_hex(8)};rport\n"

    def _fail(self, what: str) -> None:
        self.failed[what] = self.failed.get(what, 0) + 1

    async def setup(self, call: Call, timeout: float = 16.0) -> None:
        ruri = self._ruri(call)
        caller = f"{6000 + call.index}"
        sdp, size = _body(
            f"v=0\no=gen {call.index} 1 IN IP4 {HOST}\ns=-\nc=IN IP4 {HOST}\nt=0 0\n"
            f"m=audio {call.rtp_port} RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\n"
            f"a=fmtp:101 0-16\na=ptime:20\na=sendrecv\n"
        )
        from_header = f"<sip:{caller}@bench.test>;tag={call.from_tag}"
        resp = await self.transaction(
            call,
            "INVITE",
            f"INVITE {ruri} SIP/2.0\n{self._via()}Max-Forwards: 70\nFrom: {from_header}\nTo: <{ruri}>\n"
            f"Call-ID: {call.call_id}\nCSeq: 1 INVITE\nContact: <sip:gen@{HOST}:{self.sip.port}>\n"
            f"P-Asserted-Identity: <sip:{caller}@bench.test>\nContent-Type: application/sdp\n"
            f"Content-Length: {size}\n\n{sdp}",
            timeout,
        )
        if resp is None:
            self._fail("INVITE timeout")
            return
        call.status = resp.status
        if resp.status != 200:
            self._fail(f"INVITE {resp.status}")
            return
        call.to_header = resp.headers.get("to") or ""
        contact = resp.headers.get("contact") or f"<{ruri}>"
        call.target = contact.strip().lstrip("<").split(">", 1)[0]
        m = re.search(rb"^m=audio (\d+)", resp.body, re.M)
        if m is None:
            self._fail("no m=audio in the answer")
            return
        call.leg.remote = (HOST, int(m.group(1)))
        self.sip.send(
            f"ACK {call.target} SIP/2.0\n{self._via()}Max-Forwards: 70\nFrom: {from_header}\n"
            f"To: {call.to_header}\nCall-ID: {call.call_id}\nCSeq: 1 ACK\nContent-Length: 0\n\n",
            self.service,
        )
        call.leg.active = True
        self.active.append(call.leg)
        if self.mode == "voicemail":  # '#' during the greeting: straight to the beep, then recording
            resp = await self.in_dialog(call, "INFO", "application/dtmf-relay", "Signal=#\nDuration=160\n")
            if resp is None or resp.status != 200:
                self._fail("INFO #")

    async def in_dialog(
        self, call: Call, method: str, ctype: str = "", text: str = "", timeout: float = 16.0
    ) -> Any:
        call.cseq += 1
        body, size = _body(text)
        ctype_line = f"Content-Type: {ctype}\n" if ctype else ""
        return await self.transaction(
            call,
            method,
            f"{method} {call.target} SIP/2.0\n{self._via()}Max-Forwards: 70\n"
            f"From: <sip:{6000 + call.index}@bench.test>;tag={call.from_tag}\nTo: {call.to_header}\n"
            f"Call-ID: {call.call_id}\nCSeq: {call.cseq} {method}\n{ctype_line}Content-Length: {size}\n\n{body}",
            timeout,
        )

    async def transaction(self, call: Call, method: str, text: str, timeout: float) -> Any:
        """Send a request and wait for its final response, resent as RFC 3261 §17.1 does over UDP
        (T1 = 0.5 s doubling, at most T2 = 4 s apart): the service's SIP socket is a normal UDP
        socket, a burst can overflow it."""
        fut = self.sip.expect(call.call_id, method)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        interval = 0.5
        while True:
            self.sip.send(text, self.service)
            wait = min(interval, give_up - loop.time())
            if wait <= 0:
                self.sip.waiting.pop((call.call_id, method), None)
                return None
            with contextlib.suppress(TimeoutError):
                return await within(asyncio.shield(fut), wait)
            self.retransmissions += 1
            interval = min(interval * 2, 4.0)

    async def bye(self, call: Call) -> None:
        call.leg.active = False
        resp = await self.in_dialog(call, "BYE")
        call.bye_status = resp.status if resp is not None else 0
        if call.bye_status != 200:
            self._fail(f"BYE {call.bye_status or 'timeout'}")

    async def paced(self, calls: list[Call], rate: float, action: Any) -> None:
        """Start ``action(call)`` for each call at ``rate`` per second (a batch every 10 ms)."""
        loop = asyncio.get_running_loop()
        tasks = []
        start = loop.time()
        for n, call in enumerate(calls):
            due = start + n / rate
            delay = due - loop.time()
            if delay > 0.01:
                await asyncio.sleep(delay)
            tasks.append(loop.create_task(action(call)))
        await asyncio.gather(*tasks)

    # ---- media --------------------------------------------------------------------------------
    async def send_frames(self, waves: list[list[bytes]], stop: asyncio.Event) -> None:
        """One frame per active stream every 20 ms on an absolute schedule (no catching up in bursts:
        a tick more than 200 ms late restarts the schedule, as the service's clock does)."""
        loop = asyncio.get_running_loop()
        pack = RTP_HEADER.pack
        due = loop.time()
        k = 0
        while not stop.is_set():
            due += FRAME
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            lateness = now - due
            if lateness > 0.2:
                due = now
            started = time.perf_counter()
            index = k % FPS
            k += 1
            count = 0
            for leg in self.active:
                if not leg.active:
                    continue
                transport = leg.transport
                if transport is None:
                    continue
                transport.sendto(
                    pack(0x80, 0, leg.seq, leg.ts, leg.ssrc) + waves[leg.wave][index], leg.remote
                )
                leg.seq = (leg.seq + 1) & 0xFFFF
                leg.ts = (leg.ts + 160) & 0xFFFFFFFF
                count += 1
            spent = time.perf_counter() - started
            self.send_busy += spent
            self.max_send_loop = max(self.max_send_loop, spent)
            self.ticks += 1
            self.sent += count
            self.max_lateness = max(self.max_lateness, lateness)
            if lateness > LATE_AFTER:
                self.late_ticks += 1
                self.late_sends += count


def cpu_times() -> dict[int, tuple[float, float]]:
    """Per CPU: (busy seconds, of which stolen by the hypervisor) since boot, from /proc/stat."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu") and line[3].isdigit():
                name, *values = line.split()
                user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in values[:8])
                out[int(name[3:])] = ((user + nice + system + irq + softirq + steal) / hz, steal / hz)
    return out


def tone_waves(count: int) -> list[list[bytes]]:
    """``count`` tones (different pitches: a room's ten callers do not add up into one clipped
    sine), each 50 PCMU payloads of 20 ms (integer Hz: one second loops seamlessly)."""
    from media import g711, tones

    out = []
    for i in range(count):
        codes = g711.ulaw_encode(tones.sine(300 + 170 * i, 1000, dbov=-24))
        out.append([codes[j * 160 : (j + 1) * 160] for j in range(FPS)])
    return out


# --------------------------------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------------------------------


@dataclass
class StepResult:
    mode: str
    streams: int
    set_up: int
    window: float
    cpu: float
    frames: int
    late: int
    max_lateness: float
    received: int
    expected: float
    min_stream_ratio: float
    tick_mean_ms: float
    tick_max_ms: float
    gen_cpu: float
    gen_late_sends: int
    gen_sent: int
    gen_max_lateness: float
    gen_send_loop_ms: float
    others_machine: float  # CPU seconds the rest of the machine used in the window
    others_service_cpu: float | None  # ... on the service's own CPU (when pinned)
    steal: float
    preempted: int  # involuntary context switches of the service in the window
    gcs: int
    gc_busy: float
    gc_max: float
    hangups: int
    hangup_mean_ms: float
    hangup_max_ms: float
    failures: dict[str, int]
    retransmissions: int
    byes_ok: int
    deposits: int
    timeouts: int

    @property
    def cpu_pct(self) -> float:
        return 100.0 * self.cpu / self.window

    @property
    def us_per_frame(self) -> float:
        return 1e6 * self.cpu / self.frames if self.frames else float("nan")

    @property
    def late_pct(self) -> float:
        return 100.0 * self.late / self.frames if self.frames else 100.0

    @property
    def received_pct(self) -> float:
        return 100.0 * self.received / self.expected if self.expected else 0.0

    @property
    def passed(self) -> bool:
        return (
            self.set_up == self.streams
            and self.late_pct < 1.0
            and self.received_pct >= 99.0
            and self.min_stream_ratio >= 0.95
        )


def _ask(conn: Any, cmd: str, timeout: float = 30.0) -> Any:
    conn.send(cmd)
    if not conn.poll(timeout):
        raise RuntimeError(f"the service did not answer {cmd!r} within {timeout} s")
    return conn.recv()


async def run_step(
    mode: str, streams: int, args: argparse.Namespace, pins: tuple[int | None, int | None]
) -> StepResult:
    loop = asyncio.get_running_loop()
    state_dir = tempfile.mkdtemp(prefix="bench-media-", dir=args.state_root)
    sip_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sip_sock.bind((HOST, 0))
    sip_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    cfg = {
        "cpu": pins[1],
        "priority": args.priority,
        "realtime": args.realtime,
        "state_dir": state_dir,
        "proxy_port": sip_sock.getsockname()[1],
        "rtp_ports": (args.rtp_base, args.rtp_base + 2 * streams + 200),
        "mailboxes": streams,
        "max_message_seconds": float(args.warmup + args.duration + 120),
    }
    ctx = mp.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe()
    proc = ctx.Process(target=service_main, args=(child_conn, cfg), daemon=True)
    proc.start()
    profiler: subprocess.Popen[bytes] | None = None
    legs: list[tuple[RtpLeg, int]] = []
    try:
        hello = await loop.run_in_executor(None, _wait_hello, parent_conn)
        _, sip = await loop.create_datagram_endpoint(SipSide, sock=sip_sock)
        sip.port = sip_sock.getsockname()[1]
        for i in range(streams):
            _, leg = await loop.create_datagram_endpoint(
                lambda i=i: RtpLeg(i % ROOM_SIZE), local_addr=(HOST, 0)
            )
            assert leg.transport is not None
            legs.append((leg, leg.transport.get_extra_info("sockname")[1]))
        gen = Generator(mode, streams, hello["port"], sip, legs)
        stop = asyncio.Event()
        sender = loop.create_task(gen.send_frames(tone_waves(ROOM_SIZE), stop))
        await gen.paced(gen.calls, args.setup_rate, gen.setup)
        set_up = sum(1 for c in gen.calls if c.status == 200)
        await asyncio.sleep(args.warmup)

        if args.py_spy and shutil.which(args.py_spy_bin):
            out = Path(args.py_spy) / f"media_{mode}_{streams}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            profiler = subprocess.Popen(
                [
                    args.py_spy_bin,
                    "record",
                    "--pid",
                    str(hello["pid"]),
                    "--duration",
                    str(int(args.duration)),
                    "--rate",
                    "200",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        first = await loop.run_in_executor(None, _ask, parent_conn, "mark")
        stat0 = cpu_times()
        t0 = loop.time()
        cpu0 = time.process_time()
        got0 = [c.leg.received for c in gen.calls]
        g0 = (gen.sent, gen.late_sends, gen.send_busy)
        gen.max_lateness = gen.max_send_loop = 0.0
        await asyncio.sleep(args.duration)
        last = await loop.run_in_executor(None, _ask, parent_conn, "snapshot")
        stat1 = cpu_times()
        t1 = loop.time()
        cpu1 = time.process_time()
        got1 = [c.leg.received for c in gen.calls]
        g1 = (gen.sent, gen.late_sends, gen.send_busy)
        gen_max_lateness, gen_send_loop = gen.max_lateness, gen.max_send_loop

        window = t1 - t0
        live = [i for i, c in enumerate(gen.calls) if c.status == 200]
        per_stream = [(got1[i] - got0[i]) / (window * FPS) for i in live]
        await gen.paced([c for c in gen.calls if c.status == 200], args.setup_rate, gen.bye)
        stop.set()
        await sender
        if profiler is not None:
            await loop.run_in_executor(None, profiler.wait)
        final = await loop.run_in_executor(None, _stop, parent_conn)
        svc_window = last["wall"] - first["wall"]
        ticks = last["ticks"] - first["ticks"]
        svc_cpu = last["cpu"] - first["cpu"]
        busy = {c: stat1[c][0] - stat0[c][0] for c in stat1 if c in stat0}
        others_machine = sum(busy.values()) - svc_cpu - (cpu1 - cpu0)
        others_svc = busy[pins[1]] - svc_cpu if pins[1] is not None and pins[1] in busy else None
        steal = sum(stat1[c][1] - stat0[c][1] for c in busy)
        ends = final["ends"] - last["ends"]
        return StepResult(
            mode=mode,
            streams=streams,
            set_up=set_up,
            window=svc_window,
            cpu=svc_cpu,
            frames=last["frames"] - first["frames"],
            late=last["late"] - first["late"],
            max_lateness=last["max_lateness"],
            received=sum(got1[i] - got0[i] for i in live),
            expected=len(live) * window * FPS,
            min_stream_ratio=min(per_stream) if per_stream else 0.0,
            tick_mean_ms=1e3 * (last["tick_busy"] - first["tick_busy"]) / ticks if ticks else 0.0,
            tick_max_ms=1e3 * last["tick_max"],
            gen_cpu=cpu1 - cpu0,
            gen_late_sends=g1[1] - g0[1],
            gen_sent=g1[0] - g0[0],
            gen_max_lateness=gen_max_lateness,
            gen_send_loop_ms=1e3 * gen_send_loop,
            others_machine=max(0.0, others_machine),
            others_service_cpu=None if others_svc is None else max(0.0, others_svc),
            steal=steal,
            preempted=last["preempted"] - first["preempted"],
            gcs=last["gcs"] - first["gcs"],
            gc_busy=last["gc_busy"] - first["gc_busy"],
            gc_max=last["gc_max"],
            hangups=ends,
            hangup_mean_ms=1e3 * (final["end_busy"] - last["end_busy"]) / ends if ends else 0.0,
            hangup_max_ms=1e3 * final["end_max"],
            failures=dict(gen.failed),
            retransmissions=gen.retransmissions,
            byes_ok=sum(1 for c in gen.calls if c.bye_status == 200),
            deposits=final["deposits"],
            timeouts=final["timeouts"],
        )
    finally:
        if profiler is not None and profiler.poll() is None:
            profiler.terminate()
        for leg, _ in legs:
            if leg.transport is not None:
                leg.transport.close()
        sip_sock.close()
        proc.join(timeout=30)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
        shutil.rmtree(state_dir, ignore_errors=True)


def _wait_hello(conn: Any) -> dict[str, Any]:
    if not conn.poll(60):
        raise RuntimeError("the media service did not start")
    return conn.recv()


def _stop(conn: Any) -> dict[str, Any]:
    conn.send("stop")
    if not conn.poll(60):
        raise RuntimeError("the media service did not stop")
    return conn.recv()


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------

TARGETS = {"voicemail": 300, "conference": 150}
WHAT = {
    "voicemail": "voicemail recordings (greeting skipped with '#', beep, then recording to WAV)",
    "conference": f"conference participants (rooms of {ROOM_SIZE}: each hears the mix of the other nine)",
}


def step_passed(runs: list[StepResult]) -> bool:
    """A count passes when most of its runs do (``--repeat``)."""
    return 2 * sum(r.passed for r in runs) > len(runs)


def report(
    mode: str,
    steps: list[list[StepResult]],
    skipped: list[int],
    args: argparse.Namespace,
    started: str,
    pins: tuple[int | None, int | None],
) -> str:
    passed = [runs[0].streams for runs in steps if step_passed(runs)]
    best = max(passed) if passed else 0
    target = TARGETS[mode]
    machine = f"{os.cpu_count()} vCPU {cpu_model()}, Python {platform.python_version()}, " + (
        "uvloop" if _have_uvloop() else "asyncio"
    )
    if pins[1] is not None:
        machine += f"; service pinned to CPU {pins[1]}, generator to CPU {pins[0]}"
    if args.priority:
        machine += f"; both at nice {args.priority} (ahead of other work on the machine)"
    if args.realtime:
        machine += f"; both SCHED_RR priority {args.realtime} (other work on the machine cannot preempt them)"
    lines = [
        f"<!-- run:{section_key(mode, args)} -->",
        f"## {mode}: {WHAT[mode]}" + _scheduling(args),
        "",
        f"- command: `{_command()}`",
        f"- date: {started}; machine: {machine}",
        f"- window: {args.duration:g} s measured per run after {args.warmup:g} s of warm-up; calls set up at "
        f"{args.setup_rate:g}/s; a fresh service process per run"
        + (
            f"; {args.repeat} runs per count, a count passes when most of its runs do"
            if args.repeat > 1
            else ""
        ),
        f"- **highest count with < 1 % late and ≥ 99 % of packets received: {best}** (target ≥ {target}: "
        f"{'met' if best >= target else 'missed'})",
        "",
        "| streams | service CPU % of one core | CPU % per stream | µs CPU per stream-frame | late % | max lateness ms "
        "| clock's work per tick ms (mean / max) | received / expected | worst stream | other work on the service's CPU % "
        "| generator late sends | generator CPU % | pass |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for runs in steps:
        for r in runs:
            others = "—" if r.others_service_cpu is None else f"{100 * r.others_service_cpu / r.window:.0f}"
            setup = "" if r.set_up == r.streams else f" ({r.set_up} set up)"
            lines.append(
                f"| {r.streams}{setup} | {r.cpu_pct:.1f} | {r.cpu_pct / r.streams:.3f} | {r.us_per_frame:.1f} | "
                f"{r.late_pct:.2f} | {1e3 * r.max_lateness:.0f} | {r.tick_mean_ms:.1f} / {r.tick_max_ms:.0f} | "
                f"{r.received:,} / {r.expected:,.0f} ({r.received_pct:.1f} %) | {100 * r.min_stream_ratio:.1f} % | "
                f"{others} | {r.gen_late_sends:,} of {r.gen_sent:,} | {100 * r.gen_cpu / r.window:.0f} | "
                f"{'yes' if r.passed else 'no'} |"
            )
    for n in skipped:
        lines.append(f"| {n} | not run: a smaller count failed | | | | | | | | | | | |")
    notes = []
    for runs in steps:
        for r in runs:
            extra = [
                f"garbage collections in the window {r.gcs} ({1e3 * r.gc_busy:.0f} ms in all, longest "
                f"{1e3 * r.gc_max:.0f} ms)",
                f"service preempted {r.preempted:,} times; rest of the machine {100 * r.others_machine / r.window:.0f} % of a core, steal "
                f"{100 * r.steal / r.window:.1f} %",
                f"generator max lateness {1e3 * r.gen_max_lateness:.0f} ms, its send loop ≤ {r.gen_send_loop_ms:.1f} ms",
            ]
            if mode == "voicemail":
                extra.append(f"messages deposited {r.deposits}/{r.set_up}")
            extra.append(
                f"hang-ups answered {r.byes_ok}/{r.set_up}, the service's hang-up handling "
                f"{r.hangup_mean_ms:.2f} ms mean / {r.hangup_max_ms:.1f} ms max"
            )
            if r.retransmissions:
                extra.append(f"SIP requests resent {r.retransmissions}")
            if r.failures:
                extra.append("failures " + ", ".join(f"{k}: {v}" for k, v in sorted(r.failures.items())))
            if r.timeouts:
                extra.append(f"RTP timeouts {r.timeouts}")
            notes.append(f"- {r.streams}: " + "; ".join(extra))
    lines += ["", *notes, "", f"- {load_note()}", ""]
    return "\n".join(lines)


def _have_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _command() -> str:
    return " ".join([".venv/bin/python", "-m", "benchmarks.bench_media_streams", *sys.argv[1:]])


HEADER = """# Media service: concurrent G.711 streams on one core (issue 16)

The media service (`server/media_service.py`) in a process of its own, pinned to one CPU, driven over
real UDP on 127.0.0.1 by a load generator pinned to the other CPU (one RTP socket per stream, calls set
up over SIP as the proxy does, 20 ms PCMU frames on an absolute schedule). Written by
`benchmarks/bench_media_streams.py --write`; each section gives its command, date and machine.

- *late*: frames the service's 20 ms clock sent more than 20 ms after their due time (its own
  counter); *max lateness*: the worst tick in the window; *clock's work per tick*: the time one 20 ms
  tick of the service (every call's application, the mix, the sends) takes, mean and worst.
- *received*: packets the streams got back from the service against the 50/s it must send each;
  *worst stream*: the lowest single stream.
- A count passes with every call set up, < 1 % late, ≥ 99 % received (and no stream under 95 %).
- *service CPU*: the service process's own CPU time over the window (user + system, so its UDP
  system calls are in it); *µs per stream-frame*: that CPU divided by the frames it sent (each also
  means one frame received, decoded and handled).
- *other work on the service's CPU*: what other processes of this shared machine used on that CPU
  in the window (from /proc/stat), the main source of late frames below the CPU limit. Runs marked
  *SCHED_RR* (``--realtime 10``, as Asterisk's ``-p`` or FreeSWITCH's ``-rp``) put the service and
  the generator ahead of that other work: it still runs on their CPUs, but no longer preempts them
  (*preempted*: the service's involuntary context switches in the window).

"""


def _scheduling(args: argparse.Namespace) -> str:
    if args.realtime:
        return f" (service and generator SCHED_RR {args.realtime})"
    if args.priority:
        return f" (service and generator at nice {args.priority})"
    return " (normal scheduling, sharing the machine)"


def section_key(mode: str, args: argparse.Namespace) -> str:
    key = f"{mode}.rr{args.realtime}" if args.realtime else f"{mode}.nice{args.priority}"
    return key + (f".x{args.repeat}" if args.repeat > 1 else "")


def write_sections(path: Path, sections: dict[str, str]) -> None:
    """Replace (or add) each run's section in ``path`` (one per mode and nice value), keeping the others."""
    existing: dict[str, str] = {}
    if path.exists():
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"<!-- run:(\S+) -->\n(.*?)(?=<!-- run:|\Z)", text, re.S):
            existing[m.group(1)] = f"<!-- run:{m.group(1)} -->\n{m.group(2).rstrip()}\n"
    existing.update(sections)

    def order(key: str) -> tuple[int, int, int, str]:
        mode, _, rest = key.partition(".")
        sched, _, repeat = rest.partition(".")
        realtime = sched.startswith("rr")
        nice = 0 if realtime else int(sched[4:] or 0)
        return (list(TARGETS).index(mode) if mode in TARGETS else 9, 0 if realtime else 1, nice, repeat)

    path.write_text(
        HEADER + "\n".join(existing[k].rstrip() + "\n" for k in sorted(existing, key=order)), encoding="utf-8"
    )


async def amain(args: argparse.Namespace) -> int:
    pins: tuple[int | None, int | None] = (None, None)
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and len(cpus) >= 2:
        pins = (cpus[0], cpus[1])
        os.sched_setaffinity(0, {cpus[0]})
    if args.priority:
        os.setpriority(os.PRIO_PROCESS, 0, args.priority)
    if args.realtime:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(args.realtime))
    sections = {}
    for mode in args.mode:
        started = datetime.now(UTC).isoformat(timespec="seconds")
        steps: list[list[StepResult]] = []
        skipped: list[int] = []
        for n, streams in enumerate(args.streams):
            runs = []
            for _ in range(args.repeat):
                r = await run_step(mode, streams, args, pins)
                runs.append(r)
                others = (
                    ""
                    if r.others_service_cpu is None
                    else f", others on its CPU {100 * r.others_service_cpu / r.window:.0f} %, preempted {r.preempted}"
                )
                print(
                    f"{mode} {streams:>4}: set up {r.set_up}, service CPU {r.cpu_pct:5.1f} % ({r.us_per_frame:.1f} us/frame){others}, "
                    f"late {r.late_pct:.2f} % (max {1e3 * r.max_lateness:.0f} ms), tick {r.tick_mean_ms:.1f}/{r.tick_max_ms:.0f} ms, "
                    f"gc {r.gcs} ({1e3 * r.gc_busy:.0f} ms, max {1e3 * r.gc_max:.0f}), "
                    f"received {r.received_pct:.1f} % (worst {100 * r.min_stream_ratio:.1f} %), "
                    f"gen late {r.gen_late_sends}/{r.gen_sent} cpu {100 * r.gen_cpu / r.window:.0f} %, "
                    f"{'PASS' if r.passed else 'FAIL'} {r.failures or ''}",
                    flush=True,
                )
            steps.append(runs)
            if not step_passed(runs) and not args.all:
                skipped = args.streams[n + 1 :]
                break
        text = report(mode, steps, skipped, args, started, pins)
        sections[section_key(mode, args)] = text
        print(text, flush=True)
    if args.write:
        write_sections(Path(args.write), sections)
        print(f"wrote {args.write}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", default="voicemail", help="voicemail, conference, or both comma-separated")
    ap.add_argument("--streams", default="100,200,300,400", help="stream counts to step through")
    ap.add_argument("--duration", type=float, default=20.0, help="measured seconds per step")
    ap.add_argument(
        "--warmup", type=float, default=3.0, help="seconds between the last set-up and the window"
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs per count (a count passes when most do)")
    ap.add_argument(
        "--priority", type=int, default=0, help="nice value for service and generator (e.g. -10; needs root)"
    )
    ap.add_argument(
        "--realtime",
        type=int,
        default=0,
        metavar="PRIO",
        help="run service and generator SCHED_RR at PRIO (as Asterisk -p / FreeSWITCH -rp; needs root)",
    )
    ap.add_argument("--setup-rate", type=float, default=200.0, help="call set-ups per second")
    ap.add_argument("--rtp-base", type=int, default=42000, help="first port of the service's RTP range")
    ap.add_argument("--state-root", default=None, help="where the temporary mailboxes go (default: $TMPDIR)")
    ap.add_argument(
        "--no-pin", dest="pin", action="store_false", help="do not pin service and generator to CPUs"
    )
    ap.add_argument("--all", action="store_true", help="run every step even after one fails")
    ap.add_argument(
        "--py-spy", default=None, metavar="DIR", help="py-spy record the service in each window into DIR"
    )
    ap.add_argument("--py-spy-bin", default=str(Path(sys.executable).with_name("py-spy")))
    ap.add_argument(
        "--write",
        nargs="?",
        const=str(DEFAULT_OUT),
        default=None,
        help="write the report into this file (default benchmarks/results/media_streams.md), replacing "
        "the sections of the same mode and scheduling",
    )
    args = ap.parse_args()
    args.mode = [m.strip() for m in args.mode.split(",") if m.strip()]
    if any(m not in TARGETS for m in args.mode):
        ap.error("--mode: voicemail and/or conference")
    args.streams = [int(s) for s in args.streams.split(",")]
    try:
        import uvloop
    except ImportError:
        uvloop = None
    with contextlib.suppress(KeyboardInterrupt):
        return uvloop.run(amain(args)) if uvloop is not None else asyncio.run(amain(args))
    return 1


if __name__ == "__main__":
    sys.exit(main())
