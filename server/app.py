"""The process: builds every part from the configuration, starts them, reloads, stops.

Floor 3 wiring only: the parts themselves (SIP core, registrar, routing, rating, CDR) know nothing of
each other; this module connects them. In a worker process (`server.workers`) the worker context is
given to `Application` and passed on explicitly to what depends on it (registrar node id and location
replica, account-state replica, CDR spool); a single-process server has none.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from server.http import HttpEndpoint
from server.notify import sd_notify
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
    log_format: str = "auto"
    log_level: str = "info"
    state_dir: str = "var"
    location_backend: str = "memory"


@dataclass(frozen=True)
class LoadedConfig:
    path: str | None
    config: Any  # config.schema.Config
    settings: AppSettings


def _hp(value: Any) -> str:
    host, port = value.host, value.port
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def load_application_config(path: str | None) -> LoadedConfig:
    """Load and validate the YAML (the embedded example when path is None); raises ConfigError."""
    from config.loader import load_config

    cfg = load_config(path) if path else load_config(None)
    srv = cfg.server
    # The server's own hosts and the customers' SIP domains, as the configuration resolved them
    # (default_domain is one of the customer domains); the realm is answered for as well.
    domains: set[str] = set(cfg.local_hosts) | set(cfg.domains)
    if cfg.registrar.realm:
        domains.add(str(cfg.registrar.realm))
    sip = ServerSettings(
        udp=[_hp(a) for a in srv.listen.udp],
        tcp=[_hp(a) for a in srv.listen.tcp],
        advertised_address=str(srv.advertised_address) if srv.advertised_address else None,
        local_domains={d.lower() for d in domains},
        limits=TransportLimits(
            max_message_size=srv.limits.max_message_size,
            max_tcp_per_source=srv.limits.max_tcp_connections_per_ip,
            tcp_idle_timeout=float(srv.limits.tcp_idle_timeout),
        ),
        metrics_address=_hp(srv.metrics) if srv.metrics else None,
    )
    settings = AppSettings(
        sip=sip,
        workers=srv.workers,
        log_format=srv.log.format,
        log_level=srv.log.level,
        state_dir=str(srv.state_dir),
        location_backend=cfg.registrar.location.backend,
    )
    return LoadedConfig(str(path) if path else None, cfg, settings)


GC_INTERVAL = 300.0  # seconds between the periodic full collections (see settle_heap)


def settle_heap() -> None:
    """Take the cyclic garbage collector off the message path.

    Every request and call is freed by reference counting (no reference cycles: measured 0 cyclic
    objects per call, see docs/architecture.md), so automatic collections would only re-traverse the
    live heap — the configuration (hundreds of thousands of objects) and every transaction alive
    for its 32 s linger — which profiling showed stalls the proxy (p95 call setup in seconds).
    The start-up heap is frozen, automatic collection disabled, and ``collect_periodically`` runs a
    full collection every GC_INTERVAL seconds as a safety net for cycles from rare paths (errors),
    counting what it frees so a new cycle source shows up in the metrics.
    """
    gc.collect()
    gc.freeze()
    gc.disable()


async def collect_periodically(interval: float = GC_INTERVAL) -> None:
    from server import metrics

    while True:
        await asyncio.sleep(interval)
        started = time.perf_counter()
        found = gc.collect()
        metrics.GC_COLLECTED.inc(found)
        metrics.GC_PAUSE.observe(time.perf_counter() - started)


class Application:
    def __init__(self, loaded: LoadedConfig, worker: Worker | None = None) -> None:
        self.loaded = loaded
        self.worker = worker
        self.sip = SipServer(
            loaded.settings.sip, self._handlers if loaded.config is not None else None, worker
        )
        self.http: HttpEndpoint | None = None
        self.registrar: Any = None
        self.accounts: AccountStateService | None = None
        self.proxy: Any = None
        self.billing: Any = None
        self._collector: asyncio.Task[None] | None = None
        self.metrics_address: tuple[str, int] | None = None
        self.started_at = time.time()

    async def start(self) -> None:
        Path(self.loaded.settings.state_dir).mkdir(parents=True, exist_ok=True)
        cfg, worker = self.loaded.config, self.worker
        if cfg is not None:
            from server.account_state_factory import build_account_state
            from server.billing import build_billing

            self.accounts = build_account_state(cfg, worker)
            await self.accounts.start()
            self.billing = build_billing(cfg, worker.index if worker is not None else None)
            await self.billing.start()
        await self.sip.start()  # binds, then builds the registrar and the proxy (_handlers)
        if self.registrar is not None:
            await self.registrar.start()
        addr = self.loaded.settings.sip.metrics_address
        if addr:
            from sipcore.transport import split_hostport

            host, port = split_hostport(addr, 9090)
            self.http = HttpEndpoint(self.sip.health)
            self.metrics_address = await self.http.start(host, port)
            log.info("metrics_listening", address=f"{self.metrics_address[0]}:{self.metrics_address[1]}")
        settle_heap()
        self._collector = asyncio.get_running_loop().create_task(collect_periodically())
        sd_notify("READY=1")

    def _handlers(self, sip: SipServer) -> SipHandlers:
        """The registrar and the proxy, built once the SIP server has bound its sockets (the proxy's
        Via and Record-Route addresses are the bound ones), as the server's handlers."""
        from server.proxy_service import build_proxy_service
        from server.registrar_service import build_registrar_service

        cfg, worker = self.loaded.config, self.worker
        assert self.accounts is not None and self.billing is not None
        registrar = self.registrar = build_registrar_service(cfg, sip, worker)
        proxy = self.proxy = build_proxy_service(cfg, sip, registrar, self.accounts,
                                                 authorise=self.billing.authorise,
                                                 call_ended_sinks=(self.billing.on_call_ended,))  # fmt: skip
        return SipHandlers(
            register=registrar.on_register,
            register_lane=registrar.on_register_bytes,
            proxy=proxy.on_request,
            stateless_invite=proxy.controller.is_stateless_invite,
            tu_event=proxy.on_tu_event,
            send_request=proxy.send_request,
            connection_closed=registrar.on_connection_closed,
            drop_source=registrar.drop_source,
            timers=proxy,
        )

    async def reload(self) -> bool:
        """Re-read the YAML; on any error keep the running configuration and log every problem."""
        from server import metrics

        try:
            new = load_application_config(self.loaded.path)
        except Exception as exc:
            metrics.CONFIG_RELOADS.labels("refused").inc()
            log.error("config_reload_refused", path=self.loaded.path, errors=str(exc))
            return False
        try:
            self._apply(new)
        except Exception as exc:
            metrics.CONFIG_RELOADS.labels("refused").inc()
            log.error("config_reload_refused", path=self.loaded.path, errors=repr(exc))
            return False
        self.loaded = LoadedConfig(self.loaded.path, new.config, self.loaded.settings)
        settle_heap()
        metrics.CONFIG_RELOADS.labels("applied").inc()
        log.info("config_reloaded", path=self.loaded.path)
        return True

    def _apply(self, new: LoadedConfig) -> None:
        """Build every view of the new configuration first, then swap them in one step (no await in
        between, so no message sees half of each). Listening addresses, workers and the location
        backend are fixed for the life of the process; calls in progress keep their plans."""
        if self.registrar is None or new.config is None:
            return
        from server.proxy_service import call_settings
        from server.registrar_service import build_registrar

        cfg = new.config
        registrar = build_registrar(cfg, self.sip, self.registrar.registrar)
        calls = call_settings(cfg, self.sip, registrar.challenger.realm)
        local_domains = {d.lower() for d in new.settings.sip.local_domains}
        if new.settings.location_backend != self.loaded.settings.location_backend:
            log.warning("config_reload_partial", detail="location backend changes need a restart")
        # -- swap --
        self.registrar.registrar = registrar
        if self.proxy is not None:
            self.proxy.update(calls)
        self.sip.local_hosts |= local_domains

    async def close(self) -> None:
        sd_notify("STOPPING=1")
        if self._collector is not None:
            self._collector.cancel()
        if self.http is not None:
            await self.http.close()
        await self.sip.close()
        if self.proxy is not None:
            await self.proxy.close()
        if self.billing is not None:
            await self.billing.close()
        if self.accounts is not None:
            await self.accounts.close()
        if self.registrar is not None:
            await self.registrar.close()


async def run_application(
    loaded: LoadedConfig,
    worker: Worker | None = None,
    started: Callable[[Application], object] | None = None,
    reloaded: Callable[[], object] | None = None,
) -> int:
    """Run the application until SIGTERM/SIGINT (SIGHUP reloads). A worker (server/workers.py) is
    given to the application (its sockets and message routing go to the SIP server as it is built);
    ``started`` runs once it serves (hand-offs, readiness); ``reloaded`` runs on each SIGHUP (the
    media child reloads too)."""
    app = Application(loaded, worker)
    await app.start()
    if started is not None:
        started(app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    reloads: set[asyncio.Task[bool]] = set()

    def hangup() -> None:
        task = loop.create_task(app.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)
        if reloaded is not None:
            reloaded()

    loop.add_signal_handler(signal.SIGHUP, hangup)
    await stop.wait()
    log.info("shutting_down")
    await app.close()
    return 0
