"""The process: builds every part from the configuration, starts them, reloads, stops.

Floor 3 wiring only: the parts themselves (SIP core, registrar, routing, rating, CDR) know nothing of
each other; this module connects them. In a worker process (`server.workers`) the worker context is
given to `Application` and passed on explicitly to what depends on it (registrar node id and location
replica, account-state replica, CDR spool); a single-process server has none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import hashlib
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from server.http import HttpEndpoint
from server.notify import sd_notify
from server.reload_status import ProcessStatus, ReloadResult, remove_pid, write_pid, write_status
from server.sip_server import ServerSettings, SipHandlers, SipServer
from sipcore.transport import TransportLimits

if TYPE_CHECKING:
    from server.account_state import AccountStateService
    from server.worker import Worker

log = structlog.get_logger("sipcore.app")


@dataclass(frozen=True)
class AppSettings:
    sip: ServerSettings = field(default_factory=ServerSettings)
    workers: int = 1
    udp_steering: bool = True  # with workers: the kernel steers datagrams by Call-ID (server/workers.py)
    log_format: str = "auto"
    log_level: str = "info"
    state_dir: str = "var"
    location_backend: str = "memory"
    admin_address: str | None = None  # the admin API (server.admin); None: none


@dataclass(frozen=True)
class LoadedConfig:
    path: str | None
    config: Any  # config.schema.Config
    settings: AppSettings


def load_application_config(path: str | None) -> LoadedConfig:
    """Load and validate the YAML (the embedded example when path is None); raises ConfigError."""
    from config.loader import load_config
    from server.tls_context import secure_settings

    cfg = load_config(path) if path else load_config(None)
    srv = cfg.server
    # The server's own hosts and the customers' SIP domains, as the configuration resolved them
    # (default_domain is one of the customer domains); the realm is answered for as well.
    domains: set[str] = set(cfg.local_hosts) | set(cfg.domains)
    if cfg.registrar.realm:
        domains.add(str(cfg.registrar.realm))
    sip = ServerSettings(
        udp=[str(a) for a in srv.listen.udp],
        tcp=[str(a) for a in srv.listen.tcp],
        advertised_address=str(srv.advertised_address) if srv.advertised_address else None,
        local_domains={d.lower() for d in domains},
        limits=TransportLimits(
            max_message_size=srv.limits.max_message_size,
            max_tcp_per_source=srv.limits.max_tcp_connections_per_ip,
            tcp_idle_timeout=float(srv.limits.tcp_idle_timeout),
            max_tcp_connections=srv.limits.max_tcp_connections,
            tcp_reserved_fds=srv.limits.tcp_reserved_descriptors,
            tcp_message_timeout=float(srv.limits.tcp_message_timeout),
            tcp_min_byte_rate=srv.limits.tcp_min_byte_rate,
            udp_receive_buffer=srv.limits.udp_receive_buffer,
        ),
        metrics_address=str(srv.metrics) if srv.metrics else None,
        secure=secure_settings(srv, str(path) if path else None),
        max_server_transactions=srv.limits.max_server_transactions,
    )
    settings = AppSettings(
        sip=sip,
        workers=srv.workers,
        udp_steering=srv.udp_steering,
        log_format=srv.log.format,
        log_level=srv.log.level,
        state_dir=str(srv.state_dir),
        location_backend=cfg.registrar.location.backend,
        admin_address=str(srv.admin.listen) if srv.admin else None,
    )
    return LoadedConfig(str(path) if path else None, cfg, settings)


GC_YOUNG_INTERVAL = 0.25  # seconds between collections of the objects born since the last one
GC_FULL_INTERVAL = 3600.0  # seconds between full collections (see settle_heap)
BYE_GRACE = 2.0  # seconds the drain waits for the answers to its BYEs (a lost one is retransmitted)
PEERS_GRACE = 3.0  # seconds past its own deadline a drained worker waits for the others (worker.py)


def config_digest(loaded: LoadedConfig) -> str:
    """SHA-256 of the YAML and the rate files a configuration was read from (the workers of one
    server compare it: every one must have applied the same files)."""
    from config.loader import default_config_path
    from config.semantics import resolve

    path = Path(loaded.path) if loaded.path else default_config_path()
    digest = hashlib.sha256()
    files = [path]
    cfg = loaded.config
    if cfg is not None:
        files += [resolve(path.resolve().parent, rel) for rel in cfg.rating.rate_tables.values()]
    for file in files:
        try:
            digest.update(file.read_bytes())
        except OSError:
            digest.update(b"\0missing\0")
    return digest.hexdigest()[:16]


def settle_heap() -> None:
    """Take the cyclic garbage collector off the message path.

    Every request and call is freed by reference counting (no reference cycles: measured 0 cyclic
    objects per call, see docs/architecture.md), so automatic collections would only re-traverse the
    live heap — the configuration (hundreds of thousands of objects) and every transaction alive
    for its 32 s linger — which profiling showed stalls the proxy (p95 call setup in seconds).
    The start-up heap is frozen and automatic collection disabled; ``collect_periodically`` is the
    safety net for cycles from rare paths (errors).
    """
    gc.collect()
    gc.freeze()
    gc.disable()


async def collect_periodically(young: float = GC_YOUNG_INTERVAL, full: float = GC_FULL_INTERVAL) -> None:
    """Collect in two generations, so no pause walks the whole live heap.

    Every ``young`` seconds (a quarter second) the objects born since the last pass are collected
    (generations 0 and 1) and what survives moves to the old generation: the pause follows what a
    quarter second of traffic leaves alive. Every ``full`` seconds (an hour) the old generation is
    collected too: it holds what lives long (registrations, calls, transactions lingering 32 s), so
    that pause grows with the load, hence the long interval. Before, one full collection every 5
    minutes paused the event loop 1.1 s at 150 calls/s (docs/architecture.md). The frozen start-up
    heap is never walked. What each pass frees is counted: a rising count means a new cycle source.
    """
    from server import metrics

    last_full = time.monotonic()
    while True:
        await asyncio.sleep(young)
        now = time.monotonic()
        generation, kind = (2, "full") if now - last_full >= full else (1, "young")
        if generation == 2:
            last_full = now
        started = time.perf_counter()
        found = gc.collect(generation)
        metrics.GC_PAUSE.labels(kind).observe(time.perf_counter() - started)
        metrics.GC_COLLECTED.labels(kind).inc(found)


class Application:
    def __init__(self, loaded: LoadedConfig, worker: Worker | None = None) -> None:
        self.loaded = loaded
        self.worker = worker
        self.journal = _call_journal(loaded, worker)  # answered calls across a crash (server.call_journal)
        self._journal_lock: int | None = None  # one server per state directory (single process)
        self.sip = SipServer(
            loaded.settings.sip, self._handlers if loaded.config is not None else None, worker,
            barrier=self.journal.sync if self.journal is not None else None,
        )  # fmt: skip
        self.http: HttpEndpoint | None = None
        self.registrar: Any = None
        self.accounts: AccountStateService | None = None
        self.proxy: Any = None
        self.flood_gate: Any = None  # server.flood_gate.FloodGate: bans and the request-rate limit
        self.billing: Any = None
        self._collector: asyncio.Task[None] | None = None
        self.metrics_address: tuple[str, int] | None = None
        self.admin: Any = None  # server.admin_http.AdminHttp, where the admin API listens
        self.admin_address: tuple[str, int] | None = None
        self.started_at = time.time()
        self.reloads = 0
        self._reload_lock = asyncio.Lock()
        self._pid_file: Path | None = None

    async def start(self) -> None:
        Path(self.loaded.settings.state_dir).mkdir(parents=True, exist_ok=True)
        cfg, worker = self.loaded.config, self.worker
        if self.journal is not None and worker is None:  # with workers the master did it before forking
            from server.call_journal import recover_journals
            from server.journal_lock import lock_journals

            self._journal_lock = lock_journals(self.journal.path.parent)
            await asyncio.to_thread(recover_journals, self.journal.path.parent, 1)
        if cfg is not None:
            from server.account_state_factory import build_account_state
            from server.billing import build_billing

            self.accounts = build_account_state(cfg, worker)
            await self.accounts.start()
            self.billing = build_billing(cfg, worker.index if worker is not None else None, self.accounts)
            await self.billing.start()
        await self.sip.start()  # binds, then builds the registrar and the proxy (_handlers)
        if self.registrar is not None:
            await self.registrar.start()
        addr = self.loaded.settings.sip.metrics_address
        if addr:
            from sipcore.transport import split_hostport

            host, port = split_hostport(addr, 9090)
            worker = self.worker
            self.http = HttpEndpoint(self.sip.health, lambda: worker.admin if worker is not None else None)
            self.metrics_address = await self.http.start(host, port)
            log.info("metrics_listening", address=f"{self.metrics_address[0]}:{self.metrics_address[1]}")
        if cfg is not None:
            await self._start_admin(cfg)
        settle_heap()
        self._collector = asyncio.get_running_loop().create_task(collect_periodically())
        if worker is None:  # with workers the master writes it (server.workers)
            self._pid_file = write_pid(self.loaded.settings.state_dir, os.getpid())
        self._write_status(None)
        sd_notify("READY=1")

    async def _start_admin(self, cfg: Any) -> None:
        """The admin API (server.admin): every worker answers the others' questions; one process
        (worker 0, or the only one) listens. A port already taken is logged, not fatal: SIP goes on."""
        from server.admin import AdminApi, LocalAdmin
        from server.admin_http import AdminHttp, admin_guard, read_token

        local = LocalAdmin(self)
        peers = self.worker.admin_peers(local.handle) if self.worker is not None else None
        addr = self.loaded.settings.admin_address
        if not addr or (self.worker is not None and self.worker.index != 0):
            return
        from sipcore.transport import split_hostport

        host, port = split_hostport(addr, 9091)
        token = read_token(cfg)
        admin_guard(host, token)
        self.admin = AdminHttp(AdminApi(self, local, peers), token)
        try:
            self.admin_address = await self.admin.start(host, port)
        except OSError as exc:
            log.error("admin_listen_failed", address=addr, error=str(exc))
            self.admin = None
            return
        log.info("admin_listening", address=f"{self.admin_address[0]}:{self.admin_address[1]}",
                 token=token is not None)  # fmt: skip

    def _handlers(self, sip: SipServer) -> SipHandlers:
        """The registrar and the proxy, built once the SIP server has bound its sockets (the proxy's
        Via and Record-Route addresses are the bound ones), as the server's handlers."""
        from server.flood_gate import FloodGate, build_mirror, build_pike
        from server.proxy_service import build_proxy_service
        from server.registrar_service import build_registrar_service

        cfg, worker = self.loaded.config, self.worker
        assert self.accounts is not None and self.billing is not None

        def is_trunk(ip: str) -> bool:  # a trunk's network (the proxy is built next)
            return self.proxy is not None and self.proxy.controller.trunk_for_source(ip) is not None

        registrar = self.registrar = build_registrar_service(cfg, sip, worker, is_trunk)
        from server.metrics import timed

        proxy = self.proxy = build_proxy_service(cfg, sip, registrar, self.accounts,
                                                 authorise=timed(self.billing.authorise, "authorise"),
                                                 call_ended_sinks=(timed(self.billing.on_call_ended, "settle"),),
                                                 worker=worker, journal=self.journal,
                                                 reserve=self.billing.reserve)  # fmt: skip
        proxy.recover()  # before any message is read: the calls a crash left open are dialogs again
        guard_cfg = cfg.registrar.guard
        gate = self.flood_gate = FloodGate(
            lambda: registrar.registrar.guard,
            build_pike(guard_cfg.rate_limit) if guard_cfg.enabled else None,
            lambda ip, port: proxy.controller.trunk_for_source(ip, port) is not None,
            registrar.on_ban,
            build_mirror(guard_cfg) if guard_cfg.enabled else None,
        )
        return SipHandlers(
            register=registrar.on_register,
            register_lane=registrar.on_register_bytes,
            proxy=proxy.on_request,
            stateless_invite=proxy.controller.is_stateless_invite,
            invite_lane=proxy.on_invite_bytes,
            tu_event=proxy.on_tu_event,
            send_request=proxy.send_request,
            connection_closed=registrar.on_connection_closed,
            drop_source=registrar.drop_source,
            admit=gate.admit,
            screen=registrar.screen_request,
            timers=proxy,
        )

    async def reload(self) -> ReloadResult:
        """Re-read the YAML and apply what can change live: accounts, routing, trunks, rate tables
        and packages (for new calls: calls in progress keep what they started with), registrar and
        guard settings, limits. Registrations and calls in progress survive. What the file changes
        that needs a restart (listen addresses, workers, backends, state_dir…) is kept as it runs
        and reported. A bad file is refused whole (every error reported) and the running
        configuration kept. The result is logged and written to this process's status file
        (server.reload_status) for `sipcore reload`."""
        from server import metrics

        async with self._reload_lock:  # one at a time: each result is the file as one reload read it
            result = await self._reload()
            self.reloads += 1
            metrics.CONFIG_RELOADS.labels(result.status).inc()
            if result.ok:
                metrics.CONFIG_RELOAD_LAST_SUCCESS.set(time.time())
            if not result.ok:
                log.error("config_reload_refused", path=self.loaded.path, errors=list(result.errors))
            else:
                if result.needs_restart:
                    log.warning("config_reload_needs_restart", path=self.loaded.path,
                                keys=list(result.needs_restart))  # fmt: skip
                log.info("config_reloaded", path=self.loaded.path, changed=list(result.changed))
            try:
                self._write_status(result)
            except OSError as exc:
                log.error("reload_status_not_written", error=str(exc))
            return result

    async def _reload(self) -> ReloadResult:
        from config.diff import config_diff
        from config.loader import ConfigError

        try:
            new = load_application_config(self.loaded.path)
        except ConfigError as exc:
            refused = LoadedConfig(self.loaded.path, None, self.loaded.settings)
            return ReloadResult("refused", tuple(str(p) for p in exc.problems), digest=config_digest(refused))
        except Exception as exc:
            return ReloadResult("refused", (repr(exc),))
        digest = config_digest(new)
        if self.loaded.config is None or new.config is None:
            return ReloadResult("applied", digest=digest)
        diff = config_diff(self.loaded.config, new.config)
        try:
            old_cfg = self._apply(new)
        except Exception as exc:
            log.exception("config_reload_failed")
            return ReloadResult("refused", (repr(exc),), digest=digest)
        self.loaded = LoadedConfig(self.loaded.path, new.config, self.loaded.settings)
        settle_heap()
        if self.billing is not None and old_cfg is not None:
            try:  # balances of new or edited customers; a failure is retried as at start (logged)
                await self.billing.reseed(old_cfg)
            except Exception:
                log.exception("reload_balances_not_seeded")
        return ReloadResult("applied", changed=diff.changed, needs_restart=diff.needs_restart, digest=digest)

    def _apply(self, new: LoadedConfig) -> Any:
        """Build every view of the new configuration first, then swap them in one step (no await in
        between, so no message sees half of each); returns the configuration replaced. Calls in
        progress keep their plans and are settled by the rater they were authorised with."""
        if self.registrar is None or new.config is None:
            return None
        from server.flood_gate import build_mirror, build_pike
        from server.proxy_service import call_settings
        from server.registrar_service import build_registrar

        cfg = new.config
        registrar = build_registrar(
            cfg, self.sip, self.registrar.registrar, share_guard=self.registrar.shares_guard
        )
        calls = call_settings(cfg, self.sip, registrar.challenger.realm)
        if self.proxy is not None:  # server.cluster needs a restart: the registrar keeps its route too
            old = self.proxy.controller.settings  # and the peers probed are the ones started with
            links = (*(k for k in calls.links if not k.peer), *(k for k in old.links if k.peer))
            calls = dataclasses.replace(calls, cluster=old.cluster, links=links)
        rater = self.billing.rater_for(cfg) if self.billing is not None else None
        limits = new.settings.sip.limits
        # -- swap --
        self.registrar.registrar = registrar
        if self.proxy is not None:
            from server.tls_context import tls_peers_of

            self.proxy.update(calls, tls_peers_of(cfg))
        self.sip.secure.use_context(new.settings.sip.secure.context)  # a renewed certificate
        if self.flood_gate is not None:
            g = cfg.registrar.guard
            self.flood_gate.update(build_pike(g.rate_limit) if g.enabled else None,
                                   build_mirror(g) if g.enabled else None)  # fmt: skip
        self.sip.set_local_domains(new.settings.sip.local_domains)
        self.sip.transports.set_limits(limits)
        self.sip.transactions.max_server = new.settings.sip.max_server_transactions
        if self.billing is not None and rater is not None:
            return self.billing.update(cfg, rater, time.time())
        return None

    def _write_status(self, result: ReloadResult | None) -> None:
        worker = self.worker
        write_status(
            self.loaded.settings.state_dir,
            ProcessStatus(
                server_pid=worker.server_pid if worker is not None else os.getpid(),
                worker=worker.index if worker is not None else None,
                workers=worker.count if worker is not None else 1,
                seq=self.reloads,
                status=result.status if result is not None else "started",
                result=result.as_dict() if result is not None else {},
            ),
        )

    async def drain(self, hurry: asyncio.Event | None = None) -> None:
        """SIGTERM: stop taking new calls (503 with Retry-After), let calls in progress end by
        themselves for ``server.drain_timeout`` seconds, then end the rest (BYE both parties, by
        ``system``) so that every call gets its CDR; REGISTER and in-dialog requests are served all
        along. ``hurry`` (a second SIGINT) ends the wait at once. With workers each drains its own
        calls, then waits for the others (so that what it owns is still served while they drain)."""
        sd_notify("STOPPING=1")
        proxy, worker = self.proxy, self.worker
        loop = asyncio.get_running_loop()
        timeout = float(self.loaded.config.server.drain_timeout) if self.loaded.config is not None else 0.0
        deadline = loop.time() + timeout
        if proxy is not None:
            proxy.start_draining(max(1, math.ceil(timeout)))
            log.info("draining", calls=len(proxy.calls), timeout=timeout)
            while proxy.calls and loop.time() < deadline and not (hurry is not None and hurry.is_set()):
                await asyncio.sleep(0.05)
            ended = proxy.end_all() if proxy.calls else 0
            answered = await proxy.wait_byes(BYE_GRACE)
            log.info("drained", ended_by_server=ended, byes_answered=answered)
        if worker is not None:
            worker.announce_drained()
            everyone = await worker.others_drained(
                max(deadline, loop.time()) + BYE_GRACE + PEERS_GRACE - loop.time()
            )
            log.info("workers_drained", all=everyone, drained=sorted(worker.drained))

    async def close(self) -> None:
        sd_notify("STOPPING=1")
        if self._collector is not None:
            self._collector.cancel()
        if self.http is not None:
            await self.http.close()
        if self.admin is not None:
            await self.admin.close()
        await self.sip.close()
        if self.proxy is not None:
            await self.proxy.close()
        if self.billing is not None:
            await self.billing.close()
        if self.accounts is not None:
            await self.accounts.close()
        if self.registrar is not None:
            await self.registrar.close()
        if self.journal is not None:  # last: the CDRs settled above have marked their calls done
            self.journal.close()
        if self._journal_lock is not None:
            os.close(self._journal_lock)
        if self._pid_file is not None:
            remove_pid(self._pid_file, os.getpid())


def _call_journal(loaded: LoadedConfig, worker: Worker | None) -> Any:
    """This process's call journal (``proxy.call_journal``), not opened yet; None when it is off."""
    cfg = loaded.config
    if cfg is None or not cfg.proxy.call_journal.enabled:
        return None
    from server.call_journal import CallJournal, journal_dir, journal_path

    path = journal_path(journal_dir(loaded.settings.state_dir), worker.index if worker is not None else 0)
    return CallJournal(path, fsync=cfg.proxy.call_journal.fsync)


async def run_application(
    loaded: LoadedConfig,
    worker: Worker | None = None,
    started: Callable[[Application], object] | None = None,
    reloaded: Callable[[], object] | None = None,
) -> int:
    """Run the application until SIGTERM/SIGINT, then drain it (`Application.drain`; a second
    SIGINT hurries the drain) and stop (SIGHUP reloads). A worker (server/workers.py) is
    given to the application (its sockets and message routing go to the SIP server as it is built);
    ``started`` runs once it serves (hand-offs, readiness); ``reloaded`` runs on each SIGHUP (the
    media child reloads too)."""
    stop = asyncio.Event()
    hurry = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stopping(signum: int) -> None:
        # systemd may signal every process of the unit as well as the master's forward: a repeated
        # SIGTERM is the same request; a second Ctrl-C (SIGINT) means "now".
        if stop.is_set() and signum == signal.SIGINT:
            hurry.set()
        stop.set()

    # Before start: READY=1 leaves from start(), and a SIGTERM right after it must drain, not kill.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping, sig)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the reload handler is set: not a fatal signal
    app = Application(loaded, worker)
    await app.start()
    if started is not None:
        started(app)

    reloads: set[asyncio.Task[ReloadResult]] = set()

    def hangup() -> None:
        task = loop.create_task(app.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)
        if reloaded is not None:
            reloaded()

    loop.add_signal_handler(signal.SIGHUP, hangup)
    await stop.wait()
    log.info("shutting_down")
    await app.drain(hurry)
    await app.close()
    return 0
