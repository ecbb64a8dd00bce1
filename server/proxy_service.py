"""The call controller's adapter: performs what ``calls.CallController`` asks and feeds back what
happened.

Requests go out through the SIP server's transaction layer (each client transaction keyed by the
controller's branch or relay), contact lookups read the location store (synchronously when it can
vouch for its answer, else awaited off the message path), host names resolve through the event
loop's resolver (cached), account state and forwarding go to the shared ``AccountState``, finished
calls to the CDR sinks with wall-clock times, and metrics are counted from the actions. The calls'
deadlines are served by the SIP server's one timer (with the transactions'): re-armed after each
batch. Answered calls go into the call journal (``server.call_journal``) until their CDR is durable,
and come back from it as dialogs after a crash (``recover``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import structlog
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge

from calls.actions import (
    Action,
    Admit,
    CallAnswered,
    ChangeForwarding,
    CountCall,
    EndCall,
    ForwardResponse,
    LookupContacts,
    NotifyAnswered,
    PeerSilent,
    Reply,
    ResolveHost,
    Respond,
    SendRequest,
    SendStateless,
    Tally,
    Transit,
    TrunkFailover,
)
from calls.call_ended import CallEnded
from calls.cluster_route import ClusterRoute
from calls.controller import AuthAnswer, Authenticated, CallController, CallSettings, Trunk
from calls.model import Branch, Contact, Destination, NotifyCopy, Relay
from calls.path_route import first_hop
from calls.trunk_monitor import (
    MonitorAction,
    Probe,
    Registering,
    Registration,
    RegistrationState,
    TrunkLink,
    TrunkMonitor,
    TrunkState,
)
from registrar import invite_lane
from registrar.invite_auth import Caller, InviteView, ParsedInvite, authenticate_invite
from registrar.lane import render
from registrar.registrar import Reply as RegistrarReply
from routing import Authorisation, AuthoriseRequest, CallState, allow_all
from routing.refusals import Refusal, RefusalCause
from routing.toll_fraud import Admission, stale_rate_key
from sipcore.flow import Flow
from sipcore.message import Request
from sipcore.ownership import owner_of_call_id
from sipcore.proxy import Hop
from sipcore.transaction import (
    ClientTransaction,
    ResponseReceived,
    Transaction,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from sipcore.transport import ip_family_v6, split_hostport
from sipcore.waiting import Background

from . import metrics
from .account_state import AccountState
from .call_journal import CallJournal, Recovered
from .cluster import cluster_route, flow_key, peer_links
from .metrics import FastCounter
from .sip_server import SERVER_HEADER, SipServer

log = structlog.get_logger("sipcore.proxy")
MAX_SETUP_TIMED = 65_536  # calls whose setup latency is being timed (beyond: the oldest forgotten)

CALLS_ACTIVE = Gauge("sipcore_calls_active", "Calls being set up or in progress")
CALLS_TOTAL = FastCounter("sipcore_calls_total", "Finished calls by disposition", ["disposition"])
CUTOFFS = PromCounter("sipcore_call_cutoffs_total", "Calls ended by the proxy, by reason", ["reason"])
MWI_COPIES = PromCounter(
    "sipcore_mwi_notify_copies_total",
    "Unsolicited message-waiting NOTIFY copies sent to registered contacts, by their fate",
    ["result"],  # delivered (2xx), refused (the phone's error answer), unreachable (no answer, not sent)
)
TRUNK_UP = Gauge(
    "sipcore_trunk_up", "1 while a probed trunk is in rotation, 0 while its probes fail", ["trunk"]
)
TRUNK_TRANSITIONS = PromCounter(
    "sipcore_trunk_transitions_total",
    "Probed trunks taken out of rotation (down) or back (up)",
    ["trunk", "state"],
)
PEER_UP = Gauge(
    "sipcore_peer_up",
    "Workers of this host that count another host of the platform (server.cluster) up: its probes "
    "answer. 0: down, no call is routed through it",
    ["peer"],
)
PEER_TRANSITIONS = PromCounter(
    "sipcore_peer_transitions_total",
    "Other hosts of the platform found dead (down: probes unanswered, or a call's INVITE) or back (up)",
    ["peer", "state"],
)
TRANSIT = FastCounter(
    "sipcore_transit_requests_total",
    "Other hosts' requests relayed to phones whose flow this host holds (server.cluster), by method",
    ["method"],
)
_TRANSIT_METHODS = frozenset(
    {"INVITE", "NOTIFY", "MESSAGE", "OPTIONS", "SUBSCRIBE", "INFO", "UPDATE", "REFER"}
)
TRUNK_FAILOVERS = PromCounter(
    "sipcore_trunk_failovers_total",
    "Calls moved from a trunk to the next of their set, by the status that trunk gave (408: no answer)",
    ["trunk", "status"],
)
TRUNK_REGISTRATIONS = PromCounter(
    "sipcore_trunk_registrations_total", "Outbound registrations to carriers, by result", ["trunk", "result"]
)
CALLS_FINISHED = FastCounter(
    "sipcore_calls_finished_total",
    "Calls attempted (every one ends here), by direction, disposition and SIP status (the cause)",
    ["direction", "disposition", "status"],
)
CALL_ANSWERED_SECONDS = FastCounter(
    "sipcore_call_answered_seconds_total",
    "Answered seconds of finished calls, by direction (ACD)",
    ["direction"],
)
TRUNK_CALLS = FastCounter(
    "sipcore_trunk_calls_total", "Calls whose last attempt went through a trunk, by disposition",
    ["trunk", "disposition"],
)  # fmt: skip
CALLS_REFUSED = FastCounter(
    "sipcore_calls_refused_total",
    "Calls refused before ringing anything, by reason (call_limit, call_rate, destination_blocked, "
    "premium_blocked, daily_cap_reached, account_daily_cap_reached, balance_exhausted, ...)",
    ["reason"],
)
TRUNK_ANSWERED_SECONDS = FastCounter(
    "sipcore_trunk_answered_seconds_total", "Answered seconds of the calls through a trunk (ACD)", ["trunk"]
)
_SETUP_RINGING = metrics.CALL_SETUP_SECONDS.labels("ringing")
_SETUP_ANSWER = metrics.CALL_SETUP_SECONDS.labels("answer")
DNS_TTL = 60.0  # seconds a resolved trunk / media / next-hop name is reused
DNS_NEGATIVE_TTL = 10.0
CDR_DURABLE_WAIT = 5.0  # seconds close() waits for the last calls' CDRs to be durable (the journal)


class ProxyService:
    def __init__(
        self,
        sip: SipServer,
        registrar: Any,  # server.registrar_service.RegistrarService (its registrar swaps on reload)
        settings: CallSettings,
        accounts: AccountState,
        authorise: Callable[[AuthoriseRequest], Authorisation] = allow_all,
        call_ended_sinks: Iterable[Callable[[CallEnded], Any]] = (),
        worker: tuple[int, int] = (0, 1),  # (index, count) of this process among the workers
        tls_peers: Mapping[tuple[str, int], Any] | None = None,  # server.tls_context.PeerTls per TLS trunk
        journal: CallJournal | None = None,  # answered calls kept across a crash (server.call_journal)
        # a leg's daily-cap hold checked platform-wide (server.billing.Billing.reserve; None: decided)
        reserve: Callable[[tuple[str, ...], int], Awaitable[Authorisation] | None] | None = None,
    ) -> None:
        self.sip = sip
        self._reserve = reserve
        self.journal = journal
        self._durable_waits: set[asyncio.Task[None]] = set()  # journaled calls whose CDR is on its way
        self._tls_peers = dict(tls_peers or {})
        self.registrar = registrar
        self.accounts = accounts
        self.controller = CallController(settings, self._authenticate, authorise, sip.is_local_host)
        # each sink may return an awaitable done once the call's CDR is durable (the journal waits)
        self.call_ended_sinks: list[Callable[[CallEnded], Any]] = list(call_ended_sinks)
        self.keys: dict[Transaction, Branch | Relay | NotifyCopy | Probe | Registering] = {}
        self._setup: dict[str, list[Any]] = {}  # Call-ID -> [INVITE read (perf_counter), 18x seen, logged]
        self.log_calls = False  # server.log.calls: call_started / call_ended at info (else debug)
        self._trunk_of: dict[str, str] = {}  # Call-ID -> trunk of its last INVITE out (per-trunk figures)
        self._worker = worker
        # probes (trunks and the platform's other hosts) in every worker, each keeping its own view (a
        # worker's silent call marks a peer down in it alone); carriers are registered by worker 0 only
        self.monitor = TrunkMonitor(self._hop_towards, self._new_id, register=worker[0] == 0)
        self._dns: dict[str, tuple[str | None, float]] = {}
        self._dns_waiting: dict[str, list[ResolveHost | SendRequest]] = {}  # by name being resolved
        self._tasks = Background()  # lookups, gated actions, TLS sends, heartbeats
        self._timers_seen = 0
        self._rate_tallies: set[str] = set()  # this process's call-rate window tallies (pruned)
        self._rate_pruned = 0.0
        self._byes: set[ClientTransaction] | None = None  # the drain's BYEs not answered yet (end_all)
        controller = self.controller
        CALLS_ACTIVE.set_function(lambda: len(controller.calls))
        try:  # once the SIP server has its handlers (it builds us first): probes and registrations
            asyncio.get_running_loop().call_soon(self._update_monitor)
        except RuntimeError:
            pass  # no loop (a test building the service alone): no probes

    def _update_monitor(self) -> None:
        links = self.controller.settings.links
        self._perform_monitor(self.monitor.update(links, self.sip.now()))
        for link in links:
            if link.peer:  # present from the start: this worker's view of each probed host
                PEER_UP.labels(link.name).set(1 if self.monitor.is_up(link.name) else 0)

    def _hop_towards(self, dest: Destination) -> Hop:
        hops = self.controller.settings.hops
        return hops.get(dest.transport.upper()) or next(iter(hops.values()))

    def _new_id(self) -> str:
        """A Call-ID (or tag) whose answers come back to this worker (sipcore.ownership)."""
        index, count = self._worker
        while True:
            cid = os.urandom(12).hex()
            if owner_of_call_id(cid, count) == index:
                return cid

    @property
    def calls(self) -> dict[str, Any]:
        return self.controller.calls

    def update(self, settings: CallSettings, tls_peers: Mapping[tuple[str, int], Any] | None = None) -> None:
        """Swap in a reloaded configuration; calls in progress keep the plans they started with."""
        self.controller.update(settings)
        if tls_peers is not None:
            self._tls_peers = dict(tls_peers)
        self._dns.clear()
        self._update_monitor()

    def hang_up(self, call_id: str) -> bool:
        """The operator ends a call this process holds (admin API); False when it holds none."""
        if call_id not in self.controller.calls:
            return False
        self._perform(self.controller.hang_up(call_id, self.sip.now()))
        return True

    # ---- events in ---------------------------------------------------------------------------------
    def on_request(self, req: Request, flow: Flow) -> None:
        accounts = self.accounts
        if req.method == "INVITE":  # what routing decides a new call on
            state = CallState(
                self._is_registered, accounts.calls_of, accounts.overrides(), accounts.tally, time.time()
            )
            # a new call: setup latency from here (first 18x, 2xx). Not for an INVITE answered
            # statelessly (no transaction: its 407 or refusal ends it, no call event would take the
            # entry back: a flood of them grew this table without end), and the table is bounded.
            if req.to_tag is None and "txn" in req._cache:
                setup = self._setup
                if len(setup) >= MAX_SETUP_TIMED:
                    del setup[next(iter(setup))]  # the oldest
                setup[req.call_id] = [time.perf_counter(), False, False]
            if req.to_tag is None and "proxy-authorization" in req.headers:
                # a call being placed: its limits decided by one worker of the host at a time
                with accounts.exclusive():
                    self._perform(self.controller.on_request(req, flow, self.sip.now(), state))
                return
        else:
            state = _NO_STATE
        self._perform(self.controller.on_request(req, flow, self.sip.now(), state))

    def on_tu_event(self, out: Any) -> None:
        controller, now = self.controller, self.sip.now()
        byes = self._byes
        if byes is not None and out.transaction in byes:  # one of the drain's BYEs: answered or gone
            if type(out) is not ResponseReceived or out.response.status >= 200:
                byes.discard(out.transaction)
            return
        if type(out) is ResponseReceived:
            txn = out.transaction
            if txn is None:
                key = None
            elif out.response.status >= 200:  # the last the TU hears of it: retransmissions are absorbed
                key = self.keys.pop(txn, None)  # (free now what it kept, not when it ends: Timer K/D)
            else:
                key = self.keys.get(txn)
            if type(key) is Probe or type(key) is Registering:
                self._perform_monitor(self.monitor.on_response(key, out.response, now))  # type: ignore[arg-type]
            elif key is not None:
                self._perform(controller.on_response(key, out.response, now))  # type: ignore[arg-type]
            elif out.transaction is None:
                self._perform(controller.on_stray_response(out.response))
        elif type(out) is TransactionTimedOut or type(out) is TransportFailed:
            key = self.keys.get(out.transaction)
            status = 408 if type(out) is TransactionTimedOut else 503
            if type(key) is Probe or type(key) is Registering:
                self._perform_monitor(self.monitor.on_failure(key, status, now))  # type: ignore[arg-type]
            elif key is not None:
                self._perform(controller.on_failure(key, status, now))  # type: ignore[arg-type]
        elif type(out) is TransactionTerminated:
            self.keys.pop(out.transaction, None)

    def on_invite_bytes(self, data: bytes, flow: Flow) -> bool:
        """The INVITE lane (registrar/invite_lane.py): True when it took the INVITE (answered, or
        dropped), False to leave it to the general path. Counted as the general path counts it."""
        if flow.transport == "ws" or flow.transport == "wss":
            return False  # their Via is stamped otherwise (sip_server._stamp)
        req = invite_lane.read(data, flow.remote)
        if req is None:
            return False
        ip = flow.remote[0]
        if not self.controller.may_challenge(req.call_id, flow.remote):
            return False
        metrics.count_request("INVITE")
        if self.registrar.screen_source(ip, req.user_agent, "INVITE"):
            return True
        outcome = self._check_credentials(req, ip)
        if type(outcome) is AuthAnswer:
            answer = render(req, outcome.status, outcome.reason, outcome.headers, SERVER_HEADER)
            self.sip.send_answer(answer, outcome.status, flow, req.destination)
        return True  # None: a banned source, dropped (without credentials nothing authenticates)

    def _authenticate(self, req: Request, ip: str, now: float) -> Authenticated | AuthAnswer | None:
        return self._check_credentials(ParsedInvite(req), ip)

    def _check_credentials(self, req: InviteView, ip: str) -> Authenticated | AuthAnswer | None:
        # nonces carry wall-clock time (any process verifies any other's): not the controller's clock
        registrar = self.registrar.registrar
        outcome = authenticate_invite(registrar, req, ip, time.time())
        self.registrar.share_guard()  # what the guard counted, to the other workers
        if isinstance(outcome, Caller):
            return Authenticated(outcome.domain, outcome.username)
        if isinstance(outcome, RegistrarReply):
            auth = outcome.auth
            if auth is not None and auth.is_failure:  # counted, one line each (docs/operations.md)
                self.registrar.auth_failed(ip, auth.username or "", auth.reason.value, req.method)
            return AuthAnswer(outcome.status, outcome.reason, outcome.headers)
        self.registrar.on_drop(outcome, ip, req.method)
        return None  # banned: dropped

    def _is_registered(self, account_id: str) -> bool:
        aor = self.controller.settings.aor_of.get(account_id)
        if aor is None:
            return False
        bindings = self.registrar.store.lookup_cached(aor, time.time())
        return True if bindings is None else bool(bindings)  # unknown: the ring attempt finds out

    # ---- actions out -------------------------------------------------------------------------------
    def _perform(self, actions: list[Action], journal: bool = True) -> None:
        sip = self.sip
        ends = self._journal(actions) if journal and self.journal is not None else None
        for i, action in enumerate(actions):
            if type(action) is SendRequest:
                dest = action.dest
                txn, outs = sip.transactions.send_request(
                    action.request, dest, sip.now(), reliable=dest.transport != "udp"
                )
                if action.key is not None:
                    self.keys[txn] = action.key
                    if action.request.method == "INVITE":
                        self._invite_out(action.request, dest)
                elif self._byes is not None and action.request.method == "BYE":
                    self._byes.add(txn)
                sip.run_outputs(outs)
            elif type(action) is Respond:
                sip.respond(action.request, action.response, action.flow)
                if action.request.method == "INVITE":
                    self._setup_answered(action.request.call_id, action.response.status)
            elif type(action) is Reply:
                headers = action.headers
                if action.status == 405:
                    headers = (*headers, ("Allow", sip.allow_header()))
                sip.reply(action.request, action.flow, action.status, action.reason, headers)
            elif type(action) is SendStateless:
                self.send_request(action.request, action.dest)
            elif type(action) is LookupContacts:
                self._lookup(action)
            elif type(action) is Admit:
                admission = action.admission
                pending = self.accounts.admit(admission)
                self._placed(admission.placed)
                if pending is not None:  # the leg's INVITE once the platform admits it (and its hold)
                    rest = actions[i + 1 :]
                    holds = [self._hold(a) for a in rest if isinstance(a, Tally)]  # sent with it, not after
                    checks: list[Awaitable[Refusal | None]] = [
                        _admission_refusal(pending, admission, action.call_id)
                    ]
                    checks += [h for h in holds if h is not None]
                    later: list[Action] = [a for a in rest if not isinstance(a, Tally)]
                    self._tasks.spawn(self._gated(action.call_id, checks, later))
                    break
            elif type(action) is CountCall:
                if action.delta > 0:
                    self.accounts.call_started(action.account_id)
                else:
                    self.accounts.call_ended(action.account_id)
            elif type(action) is EndCall:
                self._ended(action, ends.get(i) if ends else None)
            elif type(action) is Tally:
                held = self._hold(action)
                if held is not None:  # the rest (the leg's INVITE) once the platform grants it
                    self._tasks.spawn(self._gated(action.call_id, [held], actions[i + 1 :]))
                    break
            elif type(action) is Transit:
                method = action.method if action.method in _TRANSIT_METHODS else "other"
                TRANSIT.labels(method).inc()
            elif type(action) is ResolveHost:
                self._resolve(action)
            elif type(action) is ForwardResponse:
                self._forward_response(action)
            elif type(action) is ChangeForwarding:
                self.accounts.apply_forwarding(action.change)
                log.info("forwarding_changed", account=action.change.account_id, change=str(action.change))
            elif type(action) is NotifyAnswered:
                self._notify_answered(action)
            elif type(action) is PeerSilent:  # a call's INVITE through that host went unanswered: down now
                self._perform_monitor(self.monitor.mark_down(action.peer, 408))
            elif type(action) is TrunkFailover:
                TRUNK_FAILOVERS.labels(action.trunk, str(action.status)).inc()
                log.info("trunk_failover", call_id=action.call_id, trunk=action.trunk, status=action.status,
                         next_trunk=action.next_trunk)  # fmt: skip
        set_so_far = self.controller.timers_set
        if set_so_far != self._timers_seen:  # a call deadline was set: it may be the earliest now
            self._timers_seen = set_so_far
            sip.arm_timer()

    def _perform_monitor(self, actions: list[MonitorAction]) -> None:
        """What the trunk monitor asks: probes and REGISTERs out, state changes logged, counted and
        told to the controller."""
        sip = self.sip
        for action in actions:
            if type(action) is SendRequest:
                self._monitor_send(action)
            elif type(action) is TrunkState and action.peer:
                self.controller.on_peer_state(action.trunk, action.up)
                PEER_UP.labels(action.trunk).set(1 if action.up else 0)
                PEER_TRANSITIONS.labels(action.trunk, "up" if action.up else "down").inc()
                if action.up:
                    log.info("peer_up", peer=action.trunk, status=action.status)
                else:  # 408: no answer (a probe's, or a call's INVITE), 503: could not be sent
                    log.warning("peer_down", peer=action.trunk, status=action.status)
            elif type(action) is TrunkState:
                self.controller.on_trunk_state(action.trunk, action.up)
                TRUNK_UP.labels(action.trunk).set(1 if action.up else 0)
                TRUNK_TRANSITIONS.labels(action.trunk, "up" if action.up else "down").inc()
                log.warning(
                    "trunk_down" if not action.up else "trunk_up", trunk=action.trunk, status=action.status
                )
            elif type(action) is RegistrationState:
                TRUNK_REGISTRATIONS.labels(
                    action.trunk, "registered" if action.registered else "failed"
                ).inc()
                if action.registered:
                    log.info("trunk_registered", trunk=action.trunk, expires=action.expires,
                             refresh_in=action.next_in)  # fmt: skip
                else:
                    log.warning("trunk_registration_failed", trunk=action.trunk, status=action.status,
                                retry_in=action.next_in)  # fmt: skip
        sip.arm_timer()

    def _monitor_send(self, action: SendRequest) -> None:
        """A probe or carrier REGISTER out. A trunk addressed by name is resolved first, as its calls
        are (the loop's resolver, cached): the transport sends to IP addresses only."""
        sip, dest = self.sip, action.dest
        if ip_family_v6(dest.host) is None:
            cached = self._dns.get(dest.host)
            if cached is None or cached[1] <= sip.now():
                waiting = self._dns_waiting.get(dest.host)
                if waiting is not None:
                    waiting.append(action)
                else:
                    self._dns_waiting[dest.host] = [action]
                    self._tasks.spawn(self._lookup_host(dest.host))
                return
            if cached[0] is None:  # no address: as a probe that could not be sent
                self._perform_monitor(self.monitor.on_failure(action.key, 503, sip.now()))  # type: ignore[arg-type]
                return
            dest = dataclasses.replace(dest, host=cached[0])
        txn, outs = sip.transactions.send_request(
            action.request, dest, sip.now(), reliable=dest.transport != "udp"
        )
        self.keys[txn] = action.key  # type: ignore[assignment]
        sip.run_outputs(outs)

    def _lookup(self, action: LookupContacts) -> None:
        store = self.registrar.store
        bindings = store.lookup_cached(action.aor, time.time())
        if bindings is not None:
            self._perform(self.controller.on_contacts(action, self._contacts(bindings), self.sip.now()))
            return
        self._tasks.spawn(self._lookup_shared(action))

    async def _lookup_shared(self, action: LookupContacts) -> None:
        """The shared (Redis) store: the lookup is awaited, the call goes on when it answers."""
        try:
            bindings = await self.registrar.store.get(action.aor, time.time())
        except Exception:
            log.exception("location_lookup_failed", aor=action.aor)
            bindings = []
        self._perform(self.controller.on_contacts(action, self._contacts(bindings), self.sip.now()))

    def _contacts(self, bindings: Iterable[Any]) -> list[Contact]:
        cluster = self.controller.settings.cluster
        return [_contact(b, cluster) for b in bindings]

    def _resolve(self, action: ResolveHost) -> None:
        host = action.host
        cached = self._dns.get(host)
        if cached is not None and cached[1] > self.sip.now():
            self._perform(self.controller.on_resolved(action, cached[0], self.sip.now()))
            return
        waiting = self._dns_waiting.get(host)
        if waiting is not None:
            waiting.append(action)
            return
        self._dns_waiting[host] = [action]
        self._tasks.spawn(self._lookup_host(host))

    async def _lookup_host(self, host: str) -> None:
        """The loop's resolver (getaddrinfo in a thread), never a blocking call on the event loop."""
        address: str | None = None
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_DGRAM)
            address = str(infos[0][4][0]) if infos else None
        except (OSError, ValueError) as exc:  # ValueError: a name IDNA cannot encode ("a..b", 64+ chars)
            log.warning("dns_failed", host=host, error=str(exc))
        now = self.sip.now()
        self._dns[host] = (address, now + (DNS_TTL if address else DNS_NEGATIVE_TTL))
        for action in self._dns_waiting.pop(host, []):
            if isinstance(action, ResolveHost):
                self._perform(self.controller.on_resolved(action, address, now))
            else:  # a trunk monitor's probe or REGISTER, sent now the name is cached
                self._monitor_send(action)
                self.sip.arm_timer()

    def _hold(self, action: Tally) -> Awaitable[Refusal | None] | None:
        """Count a tally here; a leg's hold is also reserved across hosts where they share the
        tallies (`Billing.reserve`, which counts it here at once): its pending answer then."""
        if action.call_id and self._reserve is not None:
            pending = self._reserve(action.keys, action.delta)
            if pending is not None:
                return _hold_refusal(pending, action.call_id)
        self._tally(action)
        return None

    async def _gated(self, call_id: str, checks: list[Awaitable[Refusal | None]], rest: list[Action]) -> None:
        """A call's leg waiting for what is checked across hosts (its admission, its hold against
        the daily caps; sent together): all passed, its actions go on; one refused, the call is
        refused as routing refuses at that limit. Either way what they count is counted here already,
        and the call's end takes it back (`CountCall`, `Billing._release`)."""
        refusal: Refusal | None = None
        for check in checks:
            try:
                refused = await check
            except Exception:
                log.exception("platform_check_failed", call_id=call_id)
                refused = None  # decided on this host's view, as before
            refusal = refusal or refused
        call = self.controller.calls.get(call_id)
        live = call is not None and not call.ended
        if refusal is None and live:
            self._perform(rest, journal=False)
            return
        # the leg never leaves: no INVITE, lookup or resolution for it
        self._perform([a for a in rest if type(a) not in _LEG_STARTS], journal=False)
        if refusal is not None and live:
            self._perform(self.controller.refuse(call_id, refusal.status, refusal.reason, refusal.warning,
                                                 refusal.label, self.sip.now()))  # fmt: skip

    def _tally(self, action: Tally) -> None:
        """Add to this process's share of toll-fraud tallies."""
        accounts = self.accounts
        for key in action.keys:  # a hold's (the rate windows are counted by Admit)
            accounts.add_tally(key, action.delta)

    def _placed(self, rate_keys: tuple[str, ...]) -> None:
        """Call-rate window tallies this process added to: each is taken back once no estimate reads
        it (two windows later), so the table stays small."""
        accounts = self.accounts
        self._rate_tallies.update(rate_keys)
        wall = time.time()
        if wall - self._rate_pruned >= 1.0:
            self._rate_pruned = wall
            for key in [k for k in self._rate_tallies if stale_rate_key(k, wall)]:
                self._rate_tallies.discard(key)
                accounts.add_tally(key, -accounts.add_tally(key, 0))

    # ---- the call journal (server.call_journal): answered calls kept across a crash ---------------
    def _journal(self, actions: list[Action]) -> dict[int, CallEnded]:
        """Before the actions are performed: an answered call's record and an answered call's end go
        into the journal, written before any reply of this loop iteration leaves (the transports'
        barrier syncs it before the datagrams; a write on a connection goes at once, so the journal
        is synced here first when one is among the actions). Returns the ends it wrote, in wall-clock
        time, by position in ``actions``: `_ended` takes them (one conversion, the same instants in
        the journal and in the CDR)."""
        journal = self.journal
        assert journal is not None
        ends: dict[int, CallEnded] = {}
        wrote = False
        for i, action in enumerate(actions):
            if type(action) is CallAnswered:
                journal.answered(action.record.shifted(time.time() - self.sip.now()))
                wrote = True
            elif type(action) is EndCall and action.ended.answer is not None:
                event = ends[i] = self._wall(action.ended)
                journal.ended(event)
                wrote = True
        if wrote and any(_on_connection(a) for a in actions):
            journal.sync()
        return ends

    def recover(self) -> None:
        """At start, before any message is read: what the journal kept across a crash. Calls still
        open become dialogs again (``CallController.restore``); calls that had ended have their CDR
        rebuilt (stored once: the CDR store ignores a key it holds). Then the heartbeat runs."""
        journal = self.journal
        if journal is None:
            return
        recovered: Recovered = journal.open()
        now, wall = self.sip.now(), time.time()
        for record in recovered.open:
            self._perform(self.controller.restore(record.shifted(now - wall), now))
        for event in recovered.ended:
            self._to_sinks(event)
        if recovered.open or recovered.ended:
            log.warning("calls_recovered", open=len(recovered.open), ended=len(recovered.ended),
                        call_ids=[r.call_id for r in recovered.open][:20])  # fmt: skip
        asyncio.get_running_loop().call_soon(self.sip.arm_timer)  # once the handlers are in place
        self._tasks.spawn(self._heartbeats())

    async def _heartbeats(self) -> None:
        journal = self.journal
        assert journal is not None
        while True:
            await asyncio.sleep(journal.heartbeat_interval)
            journal.heartbeat(time.time())

    def _wall(self, e: CallEnded) -> CallEnded:
        """``e`` in wall-clock time (the controller's clock is monotonic)."""
        return e.shifted(time.time() - self.sip.now())

    def _to_sinks(self, event: CallEnded) -> None:
        """The rater and the CDR; a journaled (answered) call is forgotten by the journal once every
        sink says its CDR is durable."""
        waits = []
        for sink in self.call_ended_sinks:
            try:
                result = sink(event)
            except Exception:
                log.exception("call_ended_sink_failed", call_id=event.call_id)
                continue
            if result is not None:
                waits.append(result)
        journal = self.journal
        if journal is None or event.answer is None:
            return
        if not waits:
            journal.done(event.call_id)
            return
        task = asyncio.get_running_loop().create_task(self._forget_when_durable(event.call_id, waits))
        self._durable_waits.add(task)
        task.add_done_callback(self._durable_waits.discard)

    async def _forget_when_durable(self, call_id: str, waits: list[Any]) -> None:
        try:
            await asyncio.gather(*waits)
        except Exception as exc:  # kept: the next start rebuilds its CDR
            log.error("call_cdr_not_durable", call_id=call_id, error=repr(exc))
            return
        if self.journal is not None:
            self.journal.done(call_id)

    def _ended(self, action: EndCall, event: CallEnded | None = None) -> None:
        """A call's end: counted, logged, to the sinks. ``event``: its end in wall-clock time when the
        journal already converted it (`_journal`)."""
        if event is None:
            event = self._wall(action.ended)  # the controller's clock -> wall-clock time for the CDR
        CALLS_TOTAL.labels(event.disposition).inc()
        CALLS_FINISHED.labels(event.direction, event.disposition, str(event.sip_status)).inc()
        if event.answer is not None:
            CALL_ANSWERED_SECONDS.labels(event.direction).inc(event.duration)
        self._setup.pop(event.call_id, None)
        # the leg that left through a trunk (its last INVITE's, after any failover): outbound or forwarded
        trunk = (
            self._trunk_of.pop(event.call_id, None) if event.direction in ("outbound", "forwarded") else None
        )
        if trunk is not None:
            TRUNK_CALLS.labels(trunk, event.disposition).inc()
            if event.answer is not None:
                TRUNK_ANSWERED_SECONDS.labels(trunk).inc(event.duration)
        if action.cutoff:
            CUTOFFS.labels(action.cutoff).inc()
        if event.disposition == "refused":
            CALLS_REFUSED.labels(event.reason or "unknown").inc()
            log.info("call_refused", call_id=event.call_id, account=event.account_id, reason=event.reason,
                     status=event.sip_status, dialed=event.dialed, number=event.normalised)  # fmt: skip
        # debug unless server.log.calls: the CDR is the record of every call; a JSON line per call
        # cost ~5 % of the proxy's CPU per call (bench_sip_cpu --mode call)
        (log.info if self.log_calls else log.debug)(
            "call_ended", call_id=event.call_id, leg=event.leg, direction=event.direction, caller=event.caller,
            dialed=event.dialed, trunk=trunk, disposition=event.disposition, status=event.sip_status,
            duration=event.duration, hangup_by=event.hangup_by,
        )  # fmt: skip
        self._to_sinks(event)

    def _invite_out(self, request: Request, dest: Destination) -> None:
        """A call's INVITE leaves for a branch: its trunk (per-trunk figures), its start logged once."""
        call_id = request.call_id
        trunk = self.controller.trunk_for_source(dest.host, dest.port)
        if trunk is not None:
            self._trunk_of[call_id] = trunk
        if not self.log_calls:  # off: not even built (the arguments cost more than the filtered call)
            return
        setup = self._setup.get(call_id)
        if setup is not None and not setup[2]:
            setup[2] = True
            log.info("call_started", call_id=call_id, caller=request.from_.uri_text, dialed=str(request.ruri),
                     trunk=trunk, destination=f"{dest.host}:{dest.port}")  # fmt: skip

    def _setup_answered(self, call_id: str, status: int) -> None:
        """A relayed answer to a new call's INVITE: setup latency to the first 18x and to the 2xx."""
        setup = self._setup.get(call_id)
        if setup is None:
            return
        if 180 <= status < 190:
            if not setup[1]:
                setup[1] = True
                _SETUP_RINGING.observe(time.perf_counter() - setup[0])
        elif 200 <= status < 300:
            _SETUP_ANSWER.observe(time.perf_counter() - setup[0])
            del self._setup[call_id]
        elif status >= 300:
            del self._setup[call_id]

    @staticmethod
    def _notify_answered(action: NotifyAnswered) -> None:
        if 200 <= action.status < 300:
            MWI_COPIES.labels("delivered").inc()
            return
        MWI_COPIES.labels("unreachable" if action.local else "refused").inc()
        log.info("mwi_notify_not_delivered", account=action.account_id, contact=action.contact,
                 status=action.status, local=action.local)  # fmt: skip

    def _forward_response(self, action: ForwardResponse) -> None:
        data = action.response.serialize()
        if action.transport != "UDP":  # back over the connection it came on (TCP, TLS, WS, WSS)
            self.sip.transports.send_flow(data, Flow(action.transport.lower(), action.address, ("", 0), None))
        else:
            self.sip.transports.send_udp(data, action.address)

    def send_request(self, msg: Request, destination: Any) -> bool:
        """How the transaction layer reaches a destination: the phone's flow, else a new connection
        (TCP) or a datagram."""
        dest: Destination = destination
        data = msg.serialize()
        transports = self.sip.transports
        if dest.flow is not None and transports.send_flow(data, dest.flow):
            return True
        if dest.transport == "tcp":
            transports.send_tcp_soon(data, (dest.host, dest.port))
            return True
        if dest.transport == "tls":  # a trunk's TLS (its CA or pin, SNI); else only an open connection
            self._tasks.spawn(self._send_tls(msg, data, (dest.host, dest.port)))
            return True
        if dest.transport != "udp":  # WebSocket: only over the phone's own connection, gone
            return False
        return transports.send_udp(data, (dest.host, dest.port))

    async def _send_tls(self, msg: Request, data: bytes, dest: tuple[str, int]) -> None:
        """Over TLS to a trunk; a connection that cannot be opened or verified fails the request's
        transaction at once (the caller gets its answer or the next trunk is tried)."""
        sip = self.sip
        if not await sip.secure.send_tls(data, dest, self._tls_peer(*dest)):
            sip.run_outputs(sip.transactions.transport_failed(msg, sip.now()))

    def _tls_peer(self, host: str, port: int) -> Any:
        """How to open TLS to a trunk at ``host`` (its configured name, or the address it resolved to)."""
        peer = self._tls_peers.get((host, port))
        if peer is None:
            for name, (address, _) in self._dns.items():
                if address == host and (name, port) in self._tls_peers:
                    return self._tls_peers[(name, port)]
        return peer

    # ---- shutting down (the drain: server.app.Application.drain) ---------------------------------
    def start_draining(self, retry_after: int) -> None:
        """New calls are refused with 503 from now on; calls in progress go on."""
        self.controller.start_draining(retry_after)

    def end_all(self) -> int:
        """End every call still here (BYE both parties, 503 to calls being set up); each gets its
        CDR. Returns how many calls were ended; their BYEs are then awaited by ``wait_byes``."""
        count = len(self.controller.calls)
        if self._byes is None:
            self._byes = set()
        for call_id in list(self.controller.calls):
            log.warning("call_ended_by_shutdown", call_id=call_id, hangup_by="system")
        self._perform(self.controller.end_all(self.sip.now()))
        return count

    async def wait_byes(self, grace: float) -> bool:
        """Wait (at most ``grace`` seconds) for the parties to answer the drain's BYEs, so that a lost
        datagram is retransmitted before the process goes; True when all were answered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._byes and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return not self._byes

    # ---- the calls' deadlines, served by the SIP server's one timer ------------------------------
    def next_deadline(self) -> float | None:
        calls, trunks = self.controller.next_deadline(), self.monitor.next_deadline()
        return calls if trunks is None or (calls is not None and calls < trunks) else trunks

    def on_timer(self, now: float) -> None:
        self._perform(self.controller.on_timer(now))
        if (due := self.monitor.next_deadline()) is not None and due <= now:
            self._perform_monitor(self.monitor.on_timer(now))

    async def close(self) -> None:
        # the CDRs of the last calls (the drain's) are settled and spooled by now or soon: the journal
        # forgets them once durable, or the next start would rebuild them (and debit memory balances
        # again)
        if self._durable_waits:
            await asyncio.wait(list(self._durable_waits), timeout=CDR_DURABLE_WAIT)
        tasks = [*self._tasks, *self._durable_waits]
        for task in tasks:
            task.cancel()
        if tasks:  # each sees its cancellation before the loop stops: a DNS lookup still in flight is
            await asyncio.wait(tasks, timeout=2)  # dropped, not left to fail unseen after the loop is gone


_LEG_STARTS = (SendRequest, LookupContacts, ResolveHost)


async def _admission_refusal(pending: Awaitable[int], admission: Admission, call_id: str) -> Refusal | None:
    """`AccountState.admit`'s answer as routing's refusal (the same status and Warning)."""
    refused = await pending
    if not refused:
        return None
    refusal = admission.refusal(refused)
    log.info("admission_refused", call_id=call_id, cause=refusal.label)
    return refusal


async def _hold_refusal(pending: Awaitable[Authorisation], call_id: str) -> Refusal | None:
    """`Billing.reserve`'s answer as routing's refusal (as `authorise` refuses at the cap)."""
    answer = await pending
    if answer.allowed:
        return None
    log.info("hold_refused", call_id=call_id, cause=answer.cause)
    return Refusal(answer.status, answer.reason, answer.warning, RefusalCause.NOT_AUTHORISED, answer.cause)


_NO_STATE = CallState()  # requests that start no call route on nothing


def _on_connection(action: Action) -> bool:
    """The action writes on a connection (TCP, TLS, WS) at once, not in the loop's datagram batch."""
    if type(action) is Respond or type(action) is Reply:
        return action.flow.reliable  # type: ignore[union-attr]
    if type(action) is SendRequest or type(action) is SendStateless:
        return action.dest.transport != "udp"  # type: ignore[union-attr]
    return False


def _contact(b: Any, cluster: ClusterRoute | None = None) -> Contact:
    """A registered binding as something to ring: its Contact URI, sent over the flow it registered on,
    or through the host that holds that flow (``cluster``: this host's entries are dropped)."""
    f = b.flow
    flow = None
    if b.flow_alive:
        conn = f.connection_id.rsplit("/", 1)[-1] if f.connection_id else None
        lhost, _, lport = f.local_address.rpartition(":")
        flow = Flow(f.transport, (f.source_ip, f.source_port), (lhost, int(lport or 0)), conn)
    dest = Destination(f.transport, f.source_ip, f.source_port, flow)
    path = cluster.without_own(b.path) if cluster is not None and b.path else b.path
    if path:  # RFC 3327 §5.3: through the edge that recorded the Path, Route headers from it
        hop = first_hop(path, dest)
        if hop is not None:
            return Contact(b.contact, hop, path)
    return Contact(b.contact, dest)


def trunks_of(cfg: Any) -> dict[str, Trunk]:
    """Trunk name -> the controller's view of it; host names are resolved when used, not here."""
    import phonenumbers

    trunks: dict[str, Trunk] = {}
    for name, t in cfg.trunks.items():
        dest = Destination(t.transport, str(t.address.host), int(t.address.port))
        sources = tuple(str(s) for s in t.inbound_sources)
        caller = t.caller_id
        trunks[name] = Trunk(
            name, dest, t.trusted, t.username, t.password, sources,
            number_format=t.number_format, caller_format=caller.format or t.number_format,
            caller_default=caller.default, anonymous_allowed=caller.anonymous_allowed,
            country_code=phonenumbers.country_code_for_region(t.country) if t.country else 0,
            failover_timeout=float(t.failover_timeout),
        )  # fmt: skip
    return trunks


def links_of(cfg: Any, trunks: dict[str, Trunk]) -> tuple[TrunkLink, ...]:
    """What the trunk monitor probes and registers, per trunk (the platform's hosts: ``peer_links``)."""
    links = []
    for name, t in cfg.trunks.items():
        reg = t.registration
        registration = (
            Registration(
                reg.username, reg.password, int(reg.expires), str(reg.domain or ""), float(reg.retry_max)
            )
            if reg is not None
            else None
        )
        interval = float(t.probe_interval) if t.probe_interval is not None else None
        links.append(TrunkLink(name, trunks[name].dest, interval, t.probe_failures, registration))
    return tuple(links)


def hops_of(sip: SipServer) -> dict[str, Hop]:
    """Our Via/Record-Route address per transport: the advertised host, else the listening one."""
    adv = sip.settings.advertised_address
    adv_host = split_hostport(adv, 5060)[0] if adv else None
    hops: dict[str, Hop] = {}
    secure = sip.secure.addresses
    for transport, addrs in (("UDP", sip.transports.udp_addresses), ("TCP", sip.transports.tcp_addresses),
                             ("TLS", secure("tls")), ("WS", secure("ws")), ("WSS", secure("wss"))):  # fmt: skip
        if addrs:
            host, port = addrs[0]
            host = adv_host or ("127.0.0.1" if host in ("0.0.0.0", "::") else host)
            hops[transport] = Hop(transport, f"[{host}]" if ":" in host else host, port)
    return hops


def call_settings(cfg: Any, sip: SipServer, realm: str) -> CallSettings:
    """The controller's settings from the configuration (built before a reload swaps them in)."""
    from config.bridge import registrar_view, routing_setup

    aor_of = {c.account_id: f"sip:{c.username}@{c.domain.lower()}" for c in registrar_view(cfg).values()}
    trunks = trunks_of(cfg)
    return CallSettings(
        setup=routing_setup(cfg),
        trunks=trunks,
        links=(*links_of(cfg, trunks), *peer_links(cfg)),
        aor_of=aor_of,
        hops=hops_of(sip),
        realms=frozenset({realm}),
        flow_key=flow_key(cfg.nonce_secret),
        cluster=cluster_route(cfg),
        max_call_duration=float(cfg.proxy.max_call_duration),
        orphan_timeout=float(cfg.proxy.call_journal.orphan_timeout),
    )


def build_proxy_service(
    cfg: Any,
    sip: SipServer,
    registrar: Any,
    accounts: AccountState,
    authorise: Callable[[AuthoriseRequest], Authorisation] = allow_all,
    call_ended_sinks: Iterable[Callable[[CallEnded], Any]] = (),
    worker: Any = None,
    journal: CallJournal | None = None,
    reserve: Callable[[tuple[str, ...], int], Awaitable[Authorisation] | None] | None = None,
) -> ProxyService:
    """Build the call controller and its adapter; ``accounts`` is the account state the processes
    share (``server.account_state_factory``); ``worker`` (server.worker.Worker, None alone) says which
    process of several this is (carriers are registered by worker 0)."""
    settings = call_settings(cfg, sip, registrar.registrar.challenger.realm)
    where = (worker.index, worker.count) if worker is not None else (0, 1)
    from server.tls_context import tls_peers_of

    service = ProxyService(sip, registrar, settings, accounts, authorise, call_ended_sinks, where,
                           tls_peers=tls_peers_of(cfg), journal=journal, reserve=reserve)  # fmt: skip
    service.log_calls = bool(cfg.server.log.calls)
    return service


__all__ = ["ProxyService", "build_proxy_service", "call_settings", "trunks_of"]
