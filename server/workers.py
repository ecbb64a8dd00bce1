"""Several server processes on the same sockets, one owner per dialog (Kamailio's model).

The master binds the UDP and TCP listening sockets once, makes one hand-off inbox per worker
(`server.worker_channel`), then forks ``server.workers`` workers. With ``server.udp_steering`` (the
default) each UDP address gets one SO_REUSEPORT socket per worker and the kernel delivers each
datagram to the worker owning its Call-ID (`sipcore.steering`); otherwise, and for TCP, every worker
reads the same inherited sockets — the kernel hands each datagram (or connection) to one reader.
Workers send on them, so replies leave from the address the phones talk to. A message belongs to
one worker (`sipcore.ownership`: Call-ID, or the To user for REGISTER); the worker that read it hands
it, with its Flow, to the owner, which handles it exactly as if it had read it. Writes on a TCP connection
held by another worker are handed to that worker (connection ids carry the worker index).

Location and account state (calls in progress, forwarding set by phone): with memory backends each
worker keeps a replica kept current through the worker channel (`server.worker.Worker`); with
Redis they share the database; the brute-force guard's counts and bans are made the whole server's
over the channel too (`server.guard_share`). Per-worker state: digest nc counters, prepaid balances,
CDR spools; worker 0 serves /metrics for all of them (it asks the others over the
channel and sums their figures: `server.http`, `server.metrics.merge_expositions`). The worker context is passed to
the application explicitly (`Application(loaded, worker)`). The master reports READY=1 once every
worker is up, forwards SIGTERM/SIGINT/SIGHUP, and stops them all if one dies (the others cannot
serve its share).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from dataclasses import replace
from typing import Any

import structlog
from prometheus_client.core import REGISTRY

from server.app import LoadedConfig, run_application
from server.media_child import MediaChild
from server.notify import sd_notify
from server.reload_status import remove_pid, write_pid
from server.worker import HandoffCollector, Worker
from server.worker_channel import Channel, make_inboxes
from sipcore.steering import bind_steered
from sipcore.transport import ListenError, bind_tcp, bind_udp

log = structlog.get_logger("sipcore.workers")


# ---- the master --------------------------------------------------------------------------------------
def bind_steered_udp(sip: Any, count: int) -> dict[str, list[socket.socket]]:
    """Per UDP address, one steered socket per worker (`sipcore.steering`); an address where the
    kernel takes no steering program is left out (bound shared by `bind_listeners`, logged)."""
    out: dict[str, list[socket.socket]] = {}
    try:
        for text in sip.udp:
            try:
                out[text], scanned = bind_steered(text, count, sip.limits.udp_receive_buffer)
            except ListenError:
                raise
            except OSError as exc:
                log.warning("udp_steering_unavailable", address=text, error=str(exc))
                continue
            log.info("udp_steering", address=text, workers=count, scanned_bytes=scanned)
    except BaseException:
        _close_steered(out)
        raise
    return out


def _close_steered(steered: dict[str, list[socket.socket]], keep: int | None = None) -> None:
    """Close the steered sockets (but worker ``keep``'s own)."""
    for socks in steered.values():
        for j, sock in enumerate(socks):
            if j != keep:
                sock.close()


def bind_listeners(sip: Any, steered: frozenset[str] = frozenset()) -> dict[tuple[str, str], socket.socket]:
    """Bind every listening socket once, in the master (but the ``steered`` UDP addresses); the
    workers inherit them."""
    out: dict[tuple[str, str], socket.socket] = {}
    try:
        for text in sip.udp:
            if text not in steered:
                out[("udp", text)] = bind_udp(text, receive_buffer=sip.limits.udp_receive_buffer)
        for text in sip.tcp:
            out[("tcp", text)] = bind_tcp(text)
        for kind in ("tls", "ws", "wss"):
            for text in getattr(sip.secure, kind):
                out[(kind, text)] = bind_tcp(text)
    except BaseException:
        for sock in out.values():
            sock.close()
        raise
    return out


def run_workers(loaded: LoadedConfig, media: MediaChild | None = None) -> int:
    """Fork ``loaded.settings.workers`` workers on shared sockets; return when they have all ended."""
    settings = loaded.settings
    count = settings.workers
    steered: dict[str, list[socket.socket]] = {}
    try:
        if settings.udp_steering and count > 1:
            steered = bind_steered_udp(settings.sip, count)
        try:
            listeners = bind_listeners(settings.sip, frozenset(steered))
        except BaseException:
            _close_steered(steered)
            raise
    except ListenError as exc:  # one line naming the transport and address, as in one process
        print(f"sipcore serve: {exc.strerror}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot listen: {exc}", file=sys.stderr)
        return 1
    cfg = loaded.config
    if cfg is not None and cfg.proxy.call_journal.enabled:  # before any worker serves: its calls
        from server.call_journal import journal_dir, recover_journals
        from server.journal_lock import JournalInUse, lock_journals

        try:
            lock_journals(journal_dir(settings.state_dir))  # held (and by the workers) until the end
        except JournalInUse as exc:
            print(f"sipcore serve: {exc}", file=sys.stderr)
            return 1
        recover_journals(journal_dir(settings.state_dir), count)
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
                own = {("udp", text): socks[index] for text, socks in steered.items()}
                _close_steered(steered, keep=index)  # the others' sockets: theirs alone to read
                status = _worker_process(
                    index, count, node_id, loaded, listeners | own, inboxes, ready_w, frozenset(steered)
                )
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
    _close_steered(steered)
    for pair in inboxes:
        for sock in pair:
            sock.close()
    if media is not None:  # started after the fork: the workers hold no handle on it
        media.start()
    pid_file = write_pid(settings.state_dir, os.getpid())  # for `sipcore reload`
    try:
        return _supervise(children, ready_r, media)
    finally:
        remove_pid(pid_file, os.getpid())
        if media is not None:
            media.stop()


def _supervise(children: list[int], ready_r: int, media: MediaChild | None = None) -> int:
    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT) and not stopping:
            stopping = True
            sd_notify("STOPPING=1")
            if media is not None:
                media.stopping = True
        _signal_all(alive, signum)
        if media is not None and signum == signal.SIGHUP:
            media.signal(signum)  # a stop reaches it after the workers' drain (run_workers' finally)

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
        if media is not None and pid == media.pid:
            if media.proc is not None:
                media.proc.returncode = os.waitstatus_to_exitcode(code)  # reaped here, not by Popen
            media.died(os.waitstatus_to_exitcode(code))
            continue
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
    loaded: LoadedConfig,
    listeners: dict[tuple[str, str], socket.socket],
    inboxes: list[tuple[socket.socket, socket.socket]],
    ready_w: int,
    steered: frozenset[str] = frozenset(),
) -> int:
    os.environ.pop("NOTIFY_SOCKET", None)  # readiness is the master's to report, once all are up
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload before this worker serves: nothing to reload
    for j, (read_end, write_end) in enumerate(inboxes):
        (write_end if j == index else read_end).close()
    channel = Channel(inboxes[index][0], {j: pair[1] for j, pair in enumerate(inboxes) if j != index})
    if index > 0:  # one metrics endpoint: worker 0's
        sip = replace(loaded.settings.sip, metrics_address=None)
        loaded = replace(loaded, settings=replace(loaded.settings, sip=sip))
    worker = Worker(index, count, node_id, channel, listeners, server_pid=os.getppid(), steered=steered)
    REGISTRY.register(HandoffCollector(worker))  # per worker in the merged /metrics (worker label)
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass

    def started(_app: Any) -> None:
        channel.start()
        os.write(ready_w, b".")
        os.close(ready_w)

    try:
        return asyncio.run(run_application(loaded, worker, started=started))
    finally:
        channel.close()
