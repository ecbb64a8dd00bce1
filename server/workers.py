"""Several server processes on the same sockets, one owner per dialog (Kamailio's model).

The master binds the UDP and TCP listening sockets once, makes one hand-off inbox per worker
(`server.worker_channel`), then forks ``server.workers`` workers. Every worker reads the same
inherited sockets — the kernel hands each datagram (or connection) to one reader — and sends on them,
so replies leave from the address the phones talk to. A message belongs to one worker
(`sipcore.ownership`: Call-ID, or the To user for REGISTER); the worker that read it hands it, with
its Flow, to the owner, which handles it exactly as if it had read it. Writes on a TCP connection
held by another worker are handed to that worker (connection ids carry the worker index).

Location: with the memory backend each worker keeps a replica (`registrar.location.replicated`),
written by the AOR's owner and published to the others; with Redis they share the database.
Per-worker state: digest nc counters, brute-force guard counters and bans, prepaid balances, CDR
spools; only worker 0 serves /metrics. The master reports READY=1 once every worker is up, forwards
SIGTERM/SIGINT/SIGHUP, and stops them all if one dies (the others cannot serve its share).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import structlog
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily

from registrar.location.replicated import ReplicatedLocationStore
from server.notify import sd_notify
from server.worker_channel import (
    DELIVER,
    LOCATION,
    WRITE,
    Channel,
    ChannelError,
    decode_frame,
    encode_location,
    encode_message,
    make_inboxes,
)
from sipcore.flow import Flow
from sipcore.ownership import conn_prefix, owner_of, worker_of_conn
from sipcore.transport import bind_tcp, bind_udp

log = structlog.get_logger("sipcore.workers")

_KIND = {DELIVER: "message", WRITE: "tcp_write", LOCATION: "location"}

_current: Worker | None = None


def current_worker() -> Worker | None:
    """This process's worker context, or None in a single-process server."""
    return _current


class Worker:
    """One worker's routing: owner of each message, hand-offs in and out, the location replica."""

    def __init__(self, index: int, count: int, node_id: str, channel: Channel) -> None:
        self.index = index
        self.count = count
        self.node_id = node_id  # shared by every worker: TCP flow ids mean the same thing everywhere
        self.channel = channel
        self.location: ReplicatedLocationStore | None = None
        self._sip: Any = None
        self._local: Any = None
        # Plain counters on the hot path, read by `HandoffCollector` when /metrics is scraped.
        self.out_count = dict.fromkeys(_KIND, 0)
        self.in_count = dict.fromkeys(_KIND, 0)

    def attach(self, sip: Any, listeners: dict[tuple[str, str], socket.socket]) -> None:
        """Plug into the SIP server before it starts: inherited sockets, connection ids, routing."""
        transports = sip.transports
        transports.inherited = dict(listeners)
        # Every worker reads every UDP socket, one woken per datagram (SharedUdpReader,
        # EPOLLEXCLUSIVE): whoever is free reads; the reader hands each message to its owner.
        # (One reader per socket left the other worker idle when phones use one address, and
        # plain shared waiting woke every worker for each datagram: +30 % CPU per message.)
        transports.shared_udp = {text for kind, text in listeners if kind == "udp"}
        transports.conn_prefix = conn_prefix(self.index)
        transports.remote_writer = self.remote_write
        self._local = sip.on_message
        transports.handler = self.route
        self._sip = sip
        self.channel.on_frame = self.on_frame

    def location_store(self, state_path: str | Path | None) -> ReplicatedLocationStore:
        self.location = ReplicatedLocationStore(state_path, self.index, self._publish)
        return self.location

    # -- out --
    def route(self, data: bytes, flow: Flow) -> None:
        """Transport callback: handle what we own, hand the rest to its owner. Never raises."""
        if self._sip.take_stateless(data, flow):
            return  # changes no state (a challenge, its ACK): answered here, no owner needed
        try:
            owner = owner_of(data, self.count)
        except Exception:  # bytes we cannot scan: handle here (the parser answers or drops them)
            owner = None
        if owner is None or owner == self.index:
            self._local(data, flow)
            return
        try:
            frame = encode_message(DELIVER, data, flow)
        except ChannelError:
            self._local(data, flow)
            return
        self.out_count[DELIVER] += 1
        self.channel.send(owner, frame)

    def remote_write(self, data: bytes, flow: Flow) -> bool:
        """A write on a TCP connection another worker holds: hand it over (False if none does)."""
        holder = worker_of_conn(flow.conn_id)
        if holder is None or holder == self.index or holder >= self.count:
            return False
        try:
            frame = encode_message(WRITE, data, flow)
        except ChannelError:
            return False
        self.out_count[WRITE] += 1
        return self.channel.send(holder, frame)

    def _publish(self, payload: bytes) -> None:
        self.out_count[LOCATION] += 1
        self.channel.broadcast(encode_location(payload))

    # -- in --
    def on_frame(self, frame: bytes) -> None:
        try:
            kind, flow, data = decode_frame(frame)
        except ChannelError:
            log.warning("worker_frame_dropped", size=len(frame))
            return
        self.in_count[kind] += 1
        if kind == DELIVER:
            self._local(data, flow)
        elif kind == WRITE:
            assert flow is not None
            self._sip.transports.send_flow(data, flow)
        elif self.location is not None:
            self.location.receive(data)


class HandoffCollector:
    """This worker's hand-off counters as Prometheus metrics (only worker 0 serves /metrics)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def collect(self) -> Any:
        w = self.worker
        handoffs = CounterMetricFamily(
            "sipcore_worker_handoffs",
            "Frames passed between worker processes (worker 0's view), by direction and kind",
            labels=["direction", "kind"],
        )
        for direction, counts in (("out", w.out_count), ("in", w.in_count)):
            for kind, name in _KIND.items():
                handoffs.add_metric([direction, name], counts[kind])
        yield handoffs
        dropped = CounterMetricFamily(
            "sipcore_worker_handoffs_dropped", "Frames dropped: destination buffer full or unreadable"
        )
        dropped.add_metric([], w.channel.dropped)
        yield dropped
        backlog = GaugeMetricFamily("sipcore_worker_handoff_backlog", "Frames waiting for a full destination")
        backlog.add_metric([], w.channel.backlog)
        yield backlog


# ---- the master --------------------------------------------------------------------------------------
def bind_listeners(sip: Any) -> dict[tuple[str, str], socket.socket]:
    """Bind every listening socket once, in the master; the workers inherit them."""
    out: dict[tuple[str, str], socket.socket] = {}
    try:
        for text in sip.udp:
            out[("udp", text)] = bind_udp(text)
        for text in sip.tcp:
            out[("tcp", text)] = bind_tcp(text)
    except BaseException:
        for sock in out.values():
            sock.close()
        raise
    return out


def run_workers(loaded: Any) -> int:
    """Fork ``loaded.settings.workers`` workers on shared sockets; return when they have all ended."""
    settings = loaded.settings
    count = settings.workers
    try:
        listeners = bind_listeners(settings.sip)
    except OSError as exc:
        print(f"cannot listen: {exc}", file=sys.stderr)
        return 1
    inboxes = make_inboxes(count)
    node_id = f"{socket.gethostname()}/{os.getpid()}"
    ready_r, ready_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    children: list[int] = []
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            status = 1
            try:
                status = _worker_process(index, count, node_id, loaded, listeners, inboxes, ready_w)
            except BaseException:
                log.exception("worker_failed", worker=index)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        children.append(pid)
    os.close(ready_w)
    for sock in listeners.values():
        sock.close()
    for pair in inboxes:
        for sock in pair:
            sock.close()
    return _supervise(children, ready_r)


def _supervise(children: list[int], ready_r: int) -> int:
    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT) and not stopping:
            stopping = True
            sd_notify("STOPPING=1")
        _signal_all(alive, signum)

    alive = set(children)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    ready = 0
    while ready < len(children):  # each worker writes one byte once started; EOF when all closed
        chunk = os.read(ready_r, 64)
        if not chunk:
            break
        ready += len(chunk)
    os.close(ready_r)
    if ready == len(children) and not stopping:
        sd_notify("READY=1")
        log.info("workers_started", pids=children)
    status = 0
    while alive:
        pid, code = os.wait()
        alive.discard(pid)
        if os.WIFSIGNALED(code) and stopping and os.WTERMSIG(code) in (signal.SIGTERM, signal.SIGINT):
            continue  # asked to stop before its own handlers were installed: a clean stop
        exit_code = os.waitstatus_to_exitcode(code)
        if not stopping:  # a worker ended on its own: the others cannot serve the messages it owns
            log.error("worker_exited", pid=pid, status=exit_code)
            stopping = True
            sd_notify("STOPPING=1")
            _signal_all(alive, signal.SIGTERM)
            exit_code = exit_code or 1
        status = status or exit_code
    sys.stdout.flush()
    return 1 if status < 0 else status


def _signal_all(pids: set[int], signum: int) -> None:
    for pid in list(pids):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


# ---- one worker --------------------------------------------------------------------------------------
def _worker_process(
    index: int,
    count: int,
    node_id: str,
    loaded: Any,
    listeners: dict[tuple[str, str], socket.socket],
    inboxes: list[tuple[socket.socket, socket.socket]],
    ready_w: int,
) -> int:
    global _current
    os.environ["SIPCORE_WORKER"] = str(index)  # per-worker CDR spool (server/billing.py)
    os.environ.pop("NOTIFY_SOCKET", None)  # readiness is the master's to report, once all are up
    for j, (read_end, write_end) in enumerate(inboxes):
        (write_end if j == index else read_end).close()
    channel = Channel(inboxes[index][0], {j: pair[1] for j, pair in enumerate(inboxes) if j != index})
    if index > 0:
        loaded.settings.sip.metrics_address = None  # one metrics endpoint: worker 0's
    worker = _current = Worker(index, count, node_id, channel)
    if index == 0:
        REGISTRY.register(HandoffCollector(worker))
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    from server.commands.serve import _serve

    def started(_app: Any) -> None:
        channel.start()
        os.write(ready_w, b".")
        os.close(ready_w)

    try:
        return asyncio.run(
            _serve(loaded, prepare=lambda app: worker.attach(app.sip, listeners), started=started)
        )
    finally:
        channel.close()
