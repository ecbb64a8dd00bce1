"""Registrar at the edge: runs the pure Registrar's decisions against the location store, answers,
sweeps expired bindings, drops flows of closed TCP connections, and exports registrar metrics."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import Gauge

from calls.cluster_route import ClusterRoute
from registrar import lane
from registrar.guard import BanReason, Guard, GuardConfig, IpBanned, Verdict
from registrar.location import (
    LocationError,
    LocationStore,
    MemoryLocationStore,
    OverflowPolicy,
    RedisLocationStore,
    StaleCSeqError,
    TooManyContactsError,
)
from registrar.location.changes import RegisterChanges
from registrar.location.fallback import FallbackLocationStore
from registrar.location.sentinel import SentinelClient, redis_client
from registrar.registrar import (
    UNDER_ATTACK,
    Account,
    Apply,
    Decision,
    Drop,
    ParsedRegister,
    Registrar,
    RegistrarSettings,
    Reply,
)
from sipcore import speedups
from sipcore.digest import Challenger, Credentials
from sipcore.flow import Flow
from sipcore.message import Request
from sipcore.uri import SipUri

from . import metrics
from .cluster import cluster_route
from .metrics import FastCounter
from .sip_server import SERVER_HEADER, SipServer

if TYPE_CHECKING:
    from .worker import Worker

log = structlog.get_logger("sipcore.registrar")

REGISTER_OUTCOMES = FastCounter("sipcore_register_total", "REGISTER requests by answer status", ["status"])
AUTH_FAILURES = FastCounter(
    "sipcore_auth_failures_total", "Failed digest authentications, by reason", ["reason"]
)
NONCE_STALE = FastCounter(
    "sipcore_nonce_stale_total", "Authorizations with an expired nonce (answered stale=true)"
)
BANS = FastCounter("sipcore_bans_total", "Sources banned by the brute-force guard, by reason", ["reason"])
BANS_RECEIVED = FastCounter(
    "sipcore_bans_received_total",
    "Bans another host of the platform decided, installed here (server/guard_redis.py), by reason",
    ["reason"],
)
BANS_ACTIVE = Gauge("sipcore_bans_active", "Sources currently banned")
DROPPED_REGISTER = FastCounter(
    "sipcore_register_dropped_total", "REGISTERs dropped silently, by reason", ["reason"]
)
AORS = Gauge("sipcore_registered_aors", "Addresses of record with at least one binding")
CONTACTS = Gauge("sipcore_registered_contacts", "Registered contacts (bindings)")


for _reason in BanReason:  # every series present from the start (dashboards, alert rules)
    BANS.labels(_reason.value)
    BANS_RECEIVED.labels(_reason.value)
_OUTCOMES: dict[int, Any] = {}  # status -> REGISTER_OUTCOMES cell
_REGISTER_CELL = metrics.REGISTER_SECONDS.labels()
Answer = Callable[..., None]  # (status, reason, headers): answers the request being decided
# the platform's end of the guard (server/guard_redis.py), built with the registrar's current guard and
# the report of the bans other hosts decide: (guard, report) -> RedisGuardShare
PlatformGuard = Callable[[Callable[[], Guard | None], Callable[[IpBanned, str, str], None]], Any]


def _through_here(cluster: ClusterRoute, d: Apply, changes: RegisterChanges) -> Apply:
    """The bindings are stored with our route entry on top of the REGISTER's Path (the 200 still
    echoes the request's Path alone): another host reaches the phone through us, over its flow."""
    f = changes.flow
    lhost, _, lport = f.local_address.rpartition(":")
    conn = f.connection_id.rsplit("/", 1)[-1] if f.connection_id else None
    flow = Flow(f.transport, (f.source_ip, f.source_port), (lhost, int(lport or 0)), conn)
    return replace(d, changes=replace(changes, path=(cluster.entry(flow), *changes.path)))


def node_id() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


class RegistrarService:
    def __init__(
        self,
        sip: SipServer,
        registrar: Registrar,
        store: LocationStore,
        sweep_interval: float = 1.0,
        worker: Worker | None = None,
        cluster: ClusterRoute | None = None,
        platform_guard: PlatformGuard | None = None,
    ) -> None:
        """``platform_guard``: several hosts sharing Redis make the guard the platform's."""
        self.sip = sip
        self.registrar = registrar
        # several hosts (server.cluster): each binding stored with a route entry through this host
        self.cluster = cluster
        # several workers: one guard for the whole server (server/guard_share.py)
        self.guard_share = (
            worker.guard_share(lambda: self.registrar.guard, self._report_ban)
            if worker is not None and worker.count > 1
            else None
        )
        # several hosts: one guard for the whole platform, through Redis (server/guard_redis.py)
        self.guard_platform = (
            platform_guard(lambda: self.registrar.guard, self._report_received)
            if platform_guard is not None
            else None
        )
        # the guard must queue its events: other workers or other hosts take them
        self.shares_guard = self.guard_share is not None or self.guard_platform is not None
        self.store = store
        self.sweep_interval = sweep_interval
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._stale_seen = 0
        # answers of the lane's requests kept for their retransmissions (timer J, as a transaction)
        self._answers = lane.AnswerCache(sip.transactions.config.timeout)

    async def start(self) -> None:
        restored = await self.store.open(time.time())
        log.info("location_restored", bindings=restored)
        if self.guard_platform is not None:  # the bans in force on the platform, before serving
            await self.guard_platform.start()
        log.info("c_extensions", loaded=speedups.LOADED)  # none: the Python code alone (slower)
        metrics.set_build_info()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def drop_source(self, ip: str) -> bool:
        """A source the brute-force guard banned: the SIP server drops its messages unread."""
        guard = self.registrar.guard
        return guard is not None and guard.is_banned(ip, time.time())

    def screen_request(self, req: Request, flow: Flow) -> bool:
        """Any method but REGISTER (the SIP server's ``screen`` hook): a scanner's User-Agent is
        dropped and its source banned as on REGISTER; True when dropped."""
        return self.screen_source(flow.remote[0], req.headers.get("user-agent"), req.method)

    def screen_source(self, ip: str, user_agent: str | None, method: str) -> bool:
        """`screen_request` of what the INVITE lane read (registrar/invite_lane.py): True when dropped."""
        drop = self.registrar.screen(ip, user_agent, time.time())
        if drop is None:
            return False
        metrics.DROPPED.labels("scanner" if drop.why == Verdict.DROP_SCANNER.value else "banned").inc()
        if drop.ban is not None:
            self.on_ban(drop.ban, method)
        return True

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._tasks):
            await asyncio.wait([task], timeout=2)
        if self.guard_platform is not None:
            await self.guard_platform.close()
        await self.store.close()

    # -- REGISTER --
    def on_register(self, req: Request, flow: Flow) -> None:
        """The general path: a REGISTER the SIP core parsed and validated, in a server transaction."""
        now = time.time()
        started = time.perf_counter()

        def answer(status: int, reason: str | None, headers: Any = ()) -> None:
            self.sip.reply(req, flow, status, reason, headers)
            _REGISTER_CELL.observe(time.perf_counter() - started)

        self._carry_out(
            self.registrar.decide(ParsedRegister(req), flow, now), answer, now, source=flow.remote[0]
        )

    def on_register_bytes(self, data: bytes, flow: Flow) -> bool:
        """The REGISTER lane (registrar/lane.py): True when it took the request (answered, dropped
        or absorbed as a retransmission), False to leave it to the general path."""
        req = lane.read(data, flow.remote)
        if req is None:
            return False
        sip = self.sip
        if not sip.is_local_host(req.ruri_host, req.ruri_port):
            return False
        metrics.count_request("REGISTER")
        reliable = flow.reliable
        cache = self._answers
        if not reliable:
            mono = sip.now()
            kept = cache.get(req.key, mono)
            if kept is not False:  # a retransmission: the kept answer again, or dropped while pending
                sip.transactions.stats["retransmissions_absorbed"] += 1
                if kept is not None:
                    sip.send_answer(kept, int(kept[8:11]), flow, req.destination)
                return True
        now = time.time()
        started = time.perf_counter()

        def answer(status: int, reason: str | None, headers: Any = ()) -> None:
            data = lane.render(req, status, reason, headers, SERVER_HEADER)
            if not reliable:
                cache.keep(req.key, data, sip.now())
            sip.send_answer(data, status, flow, req.destination)
            _REGISTER_CELL.observe(time.perf_counter() - started)

        pending = None if reliable else lambda: cache.pending(req.key, sip.now())
        self._carry_out(self.registrar.decide(req, flow, now), answer, now, pending, flow.remote[0])
        return True

    def _carry_out(
        self, decision: Decision, answer: Answer, now: float, pending: Callable[[], None] | None = None,
        source: str = "",
    ) -> None:  # fmt: skip
        """Count, answer and apply one decision, whichever path read the request. ``pending``: told
        when the answer has to wait for the store (the lane then absorbs retransmissions)."""
        self.share_guard()  # the failure or login just counted, to the other workers and hosts
        if self.registrar.stale_nonces != self._stale_seen:
            self._count_stale()
        if isinstance(decision, Drop):
            DROPPED_REGISTER.labels(decision.why).inc()
            self.on_drop(decision, source, "REGISTER")
            return
        if isinstance(decision, Reply):
            auth = decision.auth
            if auth is not None and auth.is_failure:
                self.auth_failed(source, auth.username or "", auth.reason.value, "REGISTER")
            if decision.ban is not None:
                self.on_ban(decision.ban, "REGISTER")
            self._answer(answer, decision.status, decision.reason, decision.headers)
            return
        store, d = self.store, decision
        if self.cluster is not None and d.changes is not None:
            d = _through_here(self.cluster, d, d.changes)
        try:  # at once when the store holds the registry here (memory, replicas)
            if d.changes is None:
                found = store.lookup_cached(d.aor, now)
                bindings = tuple(found) if found is not None else None
            else:
                result = store.apply_now(d.aor, d.changes, now, d.max_contacts, d.policy)
                bindings = result.bindings if result is not None else None
        except LocationError as exc:
            self._location_error(answer, exc)
            return
        if bindings is not None:
            self._answer(answer, 200, None, self.registrar.success_headers(bindings, now, d.path))
            return
        if pending is not None:
            pending()
        task = asyncio.get_running_loop().create_task(self._apply_async(d, answer, now))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply_async(self, d: Apply, answer: Answer, now: float) -> None:
        try:
            if d.changes is None:
                bindings = tuple(await self.store.get(d.aor, now))
            else:
                bindings = (await self.store.apply(d.aor, d.changes, now, d.max_contacts, d.policy)).bindings
        except LocationError as exc:
            self._location_error(answer, exc)
            return
        except Exception:
            log.exception("location_store_failed", aor=d.aor)
            self._answer(answer, 500, "Location service unavailable", (("Retry-After", "5"),))
            return
        self._answer(answer, 200, None, self.registrar.success_headers(bindings, now, d.path))

    def _location_error(self, answer: Answer, exc: LocationError) -> None:
        if isinstance(exc, StaleCSeqError):
            self._answer(answer, 500, "CSeq out of order for this Call-ID", (("Retry-After", "1"),))
        elif isinstance(exc, TooManyContactsError):
            self._answer(answer, 403, "Too many contacts for this address of record")
        else:
            self._answer(answer, 500, str(exc)[:100] or "Location service error")

    @staticmethod
    def _answer(answer: Answer, status: int, reason: str | None, headers: Any = ()) -> None:
        cell = _OUTCOMES.get(status)
        if cell is None:
            cell = _OUTCOMES[status] = REGISTER_OUTCOMES.labels(str(status))
        cell.value += 1
        answer(status, reason, headers)

    def _count_stale(self) -> None:
        stale = self.registrar.stale_nonces
        if stale != self._stale_seen:
            NONCE_STALE.inc(stale - self._stale_seen)
            self._stale_seen = stale

    @staticmethod
    def auth_failed(source: str, user: str, reason: str, method: str) -> None:
        """One failed authentication (REGISTER here; INVITE, SUBSCRIBE… from the proxy): counted by
        reason, and one line for fail2ban / a SIEM (docs/operations.md)."""
        AUTH_FAILURES.labels(reason).inc()
        log.warning("auth_failed", source=source, user=user, reason=reason, method=method)

    def share_guard(self) -> None:
        """After an authentication (REGISTER here; INVITE, SUBSCRIBE from the proxy): what the guard
        counted, to the other workers and the other hosts."""
        if not self.shares_guard:
            return
        guard = self.registrar.guard
        events = guard.take_shared() if guard is not None else None
        if not events:
            return
        if self.guard_share is not None:
            self.guard_share.send(events)
        if self.guard_platform is not None:
            self.guard_platform.send(events)

    def on_drop(self, drop: Drop, source: str, method: str) -> None:
        """Log and count an authentication the guard dropped (REGISTER here, INVITE and SUBSCRIBE in
        the proxy): a fresh source's unchecked attempt is a failure; the failure that tipped a
        source over is logged; then its ban."""
        ban = drop.ban
        if drop.why == UNDER_ATTACK:
            self.auth_failed(source, (ban.username or "") if ban else "", UNDER_ATTACK, method)
        elif ban is not None and ban.reason is not BanReason.SCANNER:
            log.warning("auth_failed", source=source, user=ban.username or "", reason="banned", method=method)
        if ban is not None:
            self.on_ban(ban, method)

    def on_ban(self, ban: IpBanned, method: str) -> None:
        """The one entry for every ban the guard returns (failures, scanners, request rate…): made
        the whole server's and logged and counted once (with several workers, by the source's
        authority worker, `server.guard_share`); with several hosts sharing Redis, stored and
        published for the whole platform (`server.guard_redis`), behind the failures that led to it."""
        self.share_guard()
        if self.guard_share is not None:
            self.guard_share.announce(ban, method)
        else:
            self._report_ban(ban, method)
        if self.guard_platform is not None:
            self.guard_platform.announce(ban, method)

    @staticmethod
    def _report_ban(ban: IpBanned, method: str) -> None:
        BANS.labels(ban.reason.value).inc()
        # one line per ban, for fail2ban / a SIEM (docs/security.md gives the filter)
        log.warning("source_banned", source=ban.source, user=ban.username or "", method=method,
                    reason=ban.reason.value, until=round(ban.until))  # fmt: skip

    @staticmethod
    def _report_received(ban: IpBanned, method: str, origin: str) -> None:
        """A ban another host decided, new here: logged once per host (so each host's fail2ban sees
        it; ``origin`` tells it from this host's own), counted apart from ``sipcore_bans_total``."""
        BANS_RECEIVED.labels(ban.reason.value).inc()
        log.warning("source_banned", source=ban.source, user=ban.username or "", method=method,
                    reason=ban.reason.value, until=round(ban.until), origin=origin)  # fmt: skip

    def on_connection_closed(self, conn_id: str) -> None:
        key = f"{self.registrar.settings.node_id}/{conn_id}"
        if self.store.remove_flow_now(key) is None:
            task = asyncio.get_running_loop().create_task(self.store.remove_flow(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            now = time.time()
            try:
                await self.store.expire(now)
                AORS.set(await self.store.count_aors())
                CONTACTS.set(await self.store.count_contacts())
                guard = self.registrar.guard
                if guard is not None:
                    guard.expire(now)
                    BANS_ACTIVE.set(guard.stats(now).bans_active)
            except Exception:
                log.exception("registrar_sweep_failed")


# ---- construction from the configuration ------------------------------------------------------------
def build_registrar(
    cfg: Any, sip: SipServer, previous: Registrar | None = None, *, share_guard: bool = False
) -> Registrar:
    """The pure Registrar for a configuration. On a reload (``previous`` given) the brute-force
    guard keeps its counters and bans, and the challenger is kept while realm and secret are
    unchanged, so nonces already handed out stay valid. ``share_guard``: the guard queues its
    events for the other workers (`server.guard_share`)."""
    from config.bridge import registrar_view

    reg = cfg.registrar
    view: Mapping[tuple[str, str], Any] = registrar_view(cfg)
    realm = reg.realm or getattr(cfg, "default_domain", None) or "sipcore"
    accounts: dict[tuple[str, str], Account] = {}
    for (domain, username), c in view.items():
        creds = Credentials(password=c.password, ha1_md5=c.ha1 if c.realm == realm else None)
        accounts[(domain.lower(), username)] = Account(
            c.account_id, c.customer_id, domain.lower(), username, creds
        )
    customer_domains = {d for d, _ in accounts}
    default_domain = (getattr(cfg, "default_domain", None) or "").lower() or None

    def domain_of(uri: SipUri) -> str | None:
        host = uri.host.lower()
        if host in customer_domains:
            return host
        if sip.is_local_host(uri.host, uri.port):
            return default_domain
        return None

    settings = RegistrarSettings(
        realm=realm,
        min_expires=int(reg.expires.min),
        max_expires=int(reg.expires.max),
        default_expires=int(reg.expires.default),
        max_contacts=reg.max_contacts,
        policy=OverflowPolicy(reg.max_contacts_policy),
        jitter_percent=reg.expires_jitter_percent,
        node_id=previous.settings.node_id if previous else node_id(),
        md5_only_user_agents=tuple(a.lower() for a in reg.md5_only_user_agents),
    )
    g = reg.guard
    guard = None
    if g.enabled:
        guard_config = GuardConfig(
            window=float(g.window),
            ip_threshold=g.failure_threshold,
            user_threshold=g.user_failure_threshold,
            ban_time=float(g.ban_time),
            slow_window=float(g.slow_window),
            slow_threshold=g.slow_threshold,
            # the platform's other hosts relay calls in bulk: never banned or rate-limited
            whitelist=(*g.whitelist, *(c.networks if (c := cfg.server.cluster) is not None else ())),
            block_scanners=bool(g.refuse_user_agents),
            scanner_agents=tuple(g.refuse_user_agents) or ("friendly-scanner",),
        )
        guard = Guard(guard_config, share=share_guard)
        if previous is not None and previous.guard is not None:
            old_guard = previous.guard  # keep counters and bans across the reload
            for name in ("_sources", "_users", "_slow", "_bans", "_attacked", "_known", "_user_slow",
                         "failures_total", "bans_total", "scanners_total", "evictions_total"):  # fmt: skip
                setattr(guard, name, getattr(old_guard, name))
    # Many phones and SIPp read only the first challenge and know only MD5; RFC 8760 clients that
    # parse every challenge can still choose SHA-256. The order is configurable.
    algorithms = tuple(reg.digest_algorithms)
    secret: bytes | str | None = cfg.nonce_secret
    old = previous.challenger if previous is not None and previous.nonce_secret == secret else None
    if old is not None and old.realm == realm and tuple(a.name for a in old.algorithms) == algorithms:
        challenger = old
    else:
        if secret is None:
            log.warning("nonce_secret_random", hint="set registrar.nonce_secret for multi-process setups")
        challenger = Challenger(realm, secret or os.urandom(32), float(reg.nonce_lifetime), algorithms)
    return Registrar(settings, challenger, lambda d, u: accounts.get((d, u)), domain_of, guard,  # type: ignore[arg-type]
                     nonce_secret=secret)  # fmt: skip


def build_registrar_service(
    cfg: Any, sip: SipServer, worker: Worker | None = None, is_trunk: Callable[[str], bool] | None = None
) -> RegistrarService:
    """Build the registrar, guard and location store described by the YAML configuration; ``worker``
    is this process's worker context (None in a single-process server); ``is_trunk(address)``: a
    trunk's source, never banned here for another host's ban."""
    platform = platform_guard(cfg, worker, is_trunk)
    shared = (worker is not None and worker.count > 1) or platform is not None
    registrar = build_registrar(cfg, sip, share_guard=shared)
    if worker is not None:  # one node id for all workers: a TCP flow id names the same connection in each
        registrar.settings = replace(registrar.settings, node_id=worker.node_id)
    loc = cfg.registrar.location
    if loc.backend == "redis":
        store: LocationStore = build_redis_location(loc, worker)
    elif worker is not None:  # several workers without Redis: each keeps a replica
        store = worker.location_store(cfg.paths.location_state_file)
    else:
        store = MemoryLocationStore(cfg.paths.location_state_file)
    return RegistrarService(sip, registrar, store, worker=worker, cluster=cluster_route(cfg),
                            platform_guard=platform)  # fmt: skip


def platform_guard(
    cfg: Any, worker: Worker | None, is_trunk: Callable[[str], bool] | None = None
) -> PlatformGuard | None:
    """How this process's guard is made the platform's: through the Redis the hosts share, when
    there are several (``server.cluster``) and they share their location through Redis; None
    otherwise (one host: its guard, or its workers' shared one, is the whole story)."""
    loc, g = cfg.registrar.location, cfg.registrar.guard
    if cfg.server.cluster is None or loc.backend != "redis" or not g.enabled:
        return None
    from server.guard_redis import RedisGuardShare
    from server.guard_share import authority

    host = worker.node_id if worker is not None else node_id()  # one id for the host's workers

    def reports(source: str) -> bool:
        return worker is None or authority(source, worker.count) == worker.index

    def build(guard: Callable[[], Guard | None], report: Callable[[IpBanned, str, str], None]) -> Any:
        return RedisGuardShare.from_location(loc, host, guard, report, reports=reports, exempt=is_trunk)

    return build


def build_redis_location(loc: Any, worker: Worker | None) -> FallbackLocationStore:
    """The Redis location store (through Sentinel when ``sentinels`` are listed) behind its local
    fallback (`registrar.location.fallback`); several workers share their writes over the channel."""
    client = redis_client(loc.url, tuple(loc.sentinels), loc.sentinel_master, timeout=float(loc.timeout))
    redis = RedisLocationStore(client, prefix=loc.key_prefix.rstrip(":") + ":loc", owns_client=True)
    reconnect = epoch = None
    if isinstance(client, SentinelClient):  # rediscover the master when probing; replay after a switch
        sentinel = client
        reconnect, epoch = sentinel.reconnect, lambda: sentinel.switches
    if worker is None:
        return FallbackLocationStore(redis, timeout=float(loc.timeout), retry_interval=float(loc.retry_interval),
                                     on_reconnect=reconnect, master_epoch=epoch)  # fmt: skip
    return worker.fallback_location_store(
        redis, float(loc.timeout), float(loc.retry_interval), reconnect, epoch
    )
