"""The call controller: a record-routing stateful proxy (RFC 3261 §16) driven by routing decisions.

For every new INVITE it authenticates the phone (407, same digest machinery as REGISTER) or accepts
the trunk by source address, asks ``routing`` where the call goes, and executes the resulting plan:
forks branches (each registered contact of an account is a sub-branch), relays provisional and 2xx
responses, cancels losing branches, feeds busy / no-answer / unreachable outcomes back to the plan
(forwarding, follow-me, voicemail), and answers the caller with the plan's final word. Answered calls
are tracked as dialogs (in-dialog requests are relayed over the flows the parties used, so phones
behind NAT stay reachable); a call nobody ends, or a prepaid call at its limit, is cut with a BYE to
both parties. Every finished or refused call is reported as a CallEnded event.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import structlog
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge

from calls.identity import (
    HeaderPolicy,
    Source,
    own_numbers,
    preferred_number,
    present,
    privacy_of,
    public_number,
)
from registrar.location import MemoryLocationStore
from routing import (
    Authorisation,
    AuthoriseRequest,
    BranchAnswered,
    BranchBusy,
    BranchFailed,
    BranchNotAnswered,
    BranchUnreachable,
    Caller,
    CallState,
    CancelBranch,
    ConnectBranch,
    Decision,
    DecisionKind,
    FailCall,
    RingBranch,
    allow_all,
    plan_did,
    plan_incoming,
    route_outgoing,
)
from routing.forwarding_store import MemoryForwardingStore
from routing.targets import AccountContacts, MediaService, TrunkNumber
from routing.targets import SipUri as TargetUri
from sipcore.digest import build_authorization
from sipcore.errors import SipParseError
from sipcore.flow import Flow, response_destination, strip_brackets
from sipcore.message import Request, Response, new_branch
from sipcore.proxy import (
    Hop,
    ack_branch,
    best_response,
    forward_request,
    in_dialog_request,
    make_cancel,
    next_hop,
    pre_process_route,
    relay_response,
    target_uri_of,
)
from sipcore.transaction import (
    ClientTransaction,
    ResponseReceived,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from sipcore.transport import split_hostport
from sipcore.uri import SipUri, parse_uri

from .account_state import AccountState, LocalAccountState
from .calls import CallEnded, disposition_for
from .sip_server import SipServer

log = structlog.get_logger("sipcore.proxy")

CALLS_ACTIVE = Gauge("sipcore_calls_active", "Calls being set up or in progress")
CALLS_TOTAL = PromCounter("sipcore_calls_total", "Finished calls by disposition", ["disposition"])
ACK_WAIT = 32.0  # 64*T1: an answered call whose 2xx is never ACKed is ended (BYE both ways)
CANCEL_GRACE = 4.0  # seconds a CANCELled branch may take to answer before the caller gets 487 anyway
CUTOFFS = PromCounter("sipcore_call_cutoffs_total", "Calls ended by the proxy, by reason", ["reason"])


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a forwarded request is sent: an address, and the phone's flow when it registered one."""

    transport: str  # "udp" | "tcp"
    host: str
    port: int
    flow: Flow | None = None


@dataclass
class Branch:
    """One forwarded INVITE: a contact of a plan branch."""

    plan_branch: int
    request: Request
    dest: Destination
    txn: ClientTransaction | None = None
    provisional: bool = False
    cancel_pending: bool = False
    cancel_sent: bool = False  # a branch is CANCELled once (plan and caller may both ask)
    final: int | None = None
    response: Response | None = None
    auth_tried: bool = False


@dataclass
class Call:
    call_id: str
    invite: Request
    flow: Flow
    caller_dest: Destination
    caller_tag: str
    direction: str
    customer_id: str | None
    account_id: str | None
    caller_number: str
    dialed: str
    normalised: str
    plan: Any
    started: float
    did: str | None = None
    rated: bool = False
    max_duration: int | None = None
    caller_public: str | None = None  # the caller account's outgoing (public) number
    caller_extension: str | None = None  # the caller account's extension
    source: Source = Source.PHONE  # who sent the INVITE, for identity (RFC 3325)
    privacy: frozenset[str] = frozenset()  # the caller's Privacy values
    preferred: str | None = None  # one of the account's own numbers its P-Preferred-Identity chose
    branches: dict[int, list[Branch]] = field(default_factory=dict)
    rings: dict[int, RingBranch] = field(default_factory=dict)
    finals: list[Response] = field(default_factory=list)
    ringing_at: float | None = None
    answered_at: float | None = None
    answered: Branch | None = None
    callee_tag: str | None = None
    callee_contact: str | None = None
    callee_to: str | None = None
    callee_account_id: str | None = None
    billed_account_id: str | None = None
    caller_cseq: int = 0
    callee_cseq: int = 0
    done: bool = False
    ended: bool = False
    cancelled: bool = False
    hangup_by: str | None = None
    timer: asyncio.TimerHandle | None = None
    cutoff: asyncio.TimerHandle | None = None
    ack_timer: asyncio.TimerHandle | None = None


class DirectPlan:
    """A plan with a single target (trunk number, media service, fixed URI), same interface as
    routing's CallPlan so the controller drives every call alike."""

    def __init__(self, ring: RingBranch) -> None:
        self.ring = ring
        self.finished = False

    def start(self, now: float) -> list[Any]:
        return [self.ring]

    def branch(self, branch_id: int) -> RingBranch:
        return self.ring

    def on_branch_event(self, branch_id: int, event: Any, now: float) -> list[Any]:
        self.finished = True
        if isinstance(event, BranchAnswered):
            return [ConnectBranch(branch_id)]
        if isinstance(event, BranchBusy):
            return [FailCall(486, "Busy Here")]
        if isinstance(event, BranchNotAnswered):
            return [FailCall(480, "Temporarily Unavailable")]
        if isinstance(event, BranchUnreachable):
            return [FailCall(480, "Temporarily Unavailable", "destination unreachable")]
        return [FailCall(event.status, event.reason or "Call Failed")]

    def on_timer(self, now: float) -> list[Any]:
        return []

    def next_deadline(self) -> float | None:
        return None

    def cancel(self) -> list[Any]:
        self.finished = True
        return [CancelBranch(self.ring.branch_id)]


class ProxyService:
    def __init__(
        self,
        sip: SipServer,
        registrar: Any,  # server.registrar_service.RegistrarService
        routing_setup: Any,
        trunks: dict[str, tuple[Destination, Any]],
        aor_of: dict[str, str],
        max_call_duration: float = 14400.0,
        authorise: Callable[[AuthoriseRequest], Authorisation] = allow_all,
        accounts: AccountState | None = None,
    ) -> None:
        self.sip = sip
        self.registrar = registrar
        self.setup = routing_setup
        self.trunks = trunks
        self.aor_of = aor_of
        self.max_call_duration = max_call_duration
        self.authorise = authorise
        self.accounts: AccountState = accounts or LocalAccountState(MemoryForwardingStore())
        self.ack_wait = ACK_WAIT
        self.calls: dict[str, Call] = {}
        self.branch_of: dict[ClientTransaction, tuple[Call, Branch]] = {}
        self.relays: dict[ClientTransaction, tuple[Request, Flow, Call | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.call_ended_sinks: list[Callable[[CallEnded], None]] = []
        self._trunk_memo: dict[str, str | None] = {}
        self.trunk_sources = self._trunk_networks()
        self.hops = self._hops()
        self.policy = HeaderPolicy((registrar.registrar.challenger.realm,))

    # ---- wiring ----------------------------------------------------------------------------------
    def update(self, setup: Any, trunks: dict[str, tuple[Destination, Any]], aor_of: dict[str, str],
               max_call_duration: float) -> None:  # fmt: skip
        """Swap in a reloaded configuration; calls in progress keep the plans they started with."""
        self.setup = setup
        self.trunks = trunks
        self.aor_of = aor_of
        self.max_call_duration = max_call_duration
        self.trunk_sources = self._trunk_networks()
        self._trunk_memo = {}
        self.policy = HeaderPolicy((self.registrar.registrar.challenger.realm,))

    def start(self) -> None:
        self.sip.proxy = self.on_request
        self.sip.tu_handler = self.on_tu_event
        self.sip.request_sender = self.send_request
        self.sip.stateless_invite = self.is_stateless_invite

    def _hops(self) -> dict[str, Hop]:
        """Our Via/Record-Route address per transport: the advertised host, else the listening one."""
        adv = self.sip.settings.advertised_address
        adv_host = split_hostport(adv, 5060)[0] if adv else None
        hops: dict[str, Hop] = {}
        for transport, addrs in (
            ("UDP", self.sip.transports.udp_addresses),
            ("TCP", self.sip.transports.tcp_addresses),
        ):
            if addrs:
                host, port = addrs[0]
                host = adv_host or ("127.0.0.1" if host in ("0.0.0.0", "::") else host)
                hops[transport] = Hop(transport, f"[{host}]" if ":" in host else host, port)
        return hops

    def _trunk_networks(self) -> list[tuple[Any, str]]:
        nets = []
        for name, (_, cfg) in self.trunks.items():
            for src in getattr(cfg, "inbound_sources", ()):
                nets.append((ipaddress.ip_network(src, strict=False), name))
        return nets

    def trunk_for_source(self, ip: str) -> str | None:
        """The trunk whose inbound sources hold ``ip``; memoised per address (asked per message)."""
        memo = self._trunk_memo
        if ip in memo:
            return memo[ip]
        name = self._trunk_lookup(ip)
        if len(memo) >= 4096:  # bounded: a scan from many addresses cannot grow it without end
            memo.clear()
        memo[ip] = name
        return name

    def _trunk_lookup(self, ip: str) -> str | None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        for net, name in self.trunk_sources:
            if addr in net:
                return name
        return None

    def _source_of(self, trunk: str | None) -> Source:
        if trunk is None:
            return Source.PHONE
        entry = self.trunks.get(trunk)
        return Source.TRUSTED_PEER if entry is not None and entry[1].trusted else Source.UNTRUSTED_PEER

    def _to_trusted(self, target: Any) -> bool:
        """The next hop is in our trust domain: a trusted trunk, or our own media service."""
        if isinstance(target, TrunkNumber):
            entry = self.trunks.get(target.trunk)
            return entry is not None and entry[1].trusted
        return isinstance(target, MediaService)

    def is_stateless_invite(self, req: Request, flow: Flow) -> bool:
        """An initial INVITE without credentials from a phone (not a trunk): whatever it gets — the
        407 challenge, or a refusal before any call exists (400, 403, 482, 483) — is final and kept
        nowhere, so it is answered without a transaction (RFC 3261 §8.2.7: a UAS may challenge
        statelessly), by whichever worker read it. A retransmission is simply answered again."""
        try:
            if req.to_tag is not None:
                return False
        except SipParseError:
            return False
        return "proxy-authorization" not in req.headers and self.trunk_for_source(flow.remote[0]) is None

    def hop_for(self, dest: Destination) -> Hop:
        return self.hops.get(dest.transport.upper()) or next(iter(self.hops.values()))

    def is_me(self, uri: SipUri) -> bool:
        return self.sip.is_local_host(uri.host, uri.port)

    # ---- requests in -------------------------------------------------------------------------------
    def on_request(self, req: Request, flow: Flow) -> None:
        method = req.method
        try:
            to_tag = req.to_tag
        except SipParseError as exc:
            self.sip.reply(req, flow, 400, exc.reason)
            return
        if method == "CANCEL":
            self._on_cancel(req, flow)
            return
        if to_tag is not None or ("route" in req.headers and method != "INVITE"):
            self._in_dialog(req, flow)
            return
        if method == "ACK":
            return  # ACK of a non-2xx: absorbed by its transaction already, or stray
        if method != "INVITE":
            self.sip.reply(req, flow, 405, "Only calls are proxied", (("Allow", self.sip.allow_header()),))
            return
        try:
            pre_process_route(req, self.is_me)
        except SipParseError as exc:
            self.sip.reply(req, flow, 400, exc.reason)
            return
        if self._looped(req):
            self.sip.reply(req, flow, 482, "Loop Detected")
            return
        if req.call_id in self.calls and not self.calls[req.call_id].ended:
            self.sip.reply(req, flow, 482, "Loop Detected")  # spiral of a call we already route
            return
        trunk = self.trunk_for_source(flow.remote[0])
        if trunk is not None:
            self._inbound(req, flow, trunk)
        else:
            self._outbound(req, flow)

    def _looped(self, req: Request) -> bool:
        """A request that already went through us (one of our Via sent-by values) is a loop."""
        ours = {(h.host.lower(), h.port) for h in self.hops.values()}
        return any(
            (v.host.lower(), v.port) in ours and (v.branch or "").startswith("z9hG4bK") for v in req.vias[1:]
        )

    def _outbound(self, req: Request, flow: Flow) -> None:
        """A call placed by a phone: authenticate, then route by the dialed digits."""
        reg = self.registrar.registrar
        now = time.time()
        from_uri = req.from_.sip_uri
        domain = reg.domain_of(from_uri) if from_uri is not None else None
        if domain is None:
            ruri = req.ruri
            domain = reg.domain_of(ruri) if isinstance(ruri, SipUri) else None
        if domain is None:
            self.sip.reply(req, flow, 403, "Relaying Forbidden")
            return
        result = reg.challenger.verify(
            req.headers.get("proxy-authorization"),
            "INVITE",
            lambda user: a.credentials if (a := reg.accounts(domain, user)) else None,
            now,
            # The digest uri is not compared with the Request-URI for INVITE: SIPp and several phones
            # put the proxy's address there; the response hash still covers whatever uri they used.
        )
        if not result.ok:
            guard = reg.guard
            ban = (
                guard.record_failure(flow.remote[0], result.username, now)
                if guard and result.is_failure
                else None
            )
            if ban is not None:
                return
            if result.status == 400:
                self.sip.reply(req, flow, 400, f"Bad Proxy-Authorization header ({result.reason.value})")
                return
            values = reg.challenge_values(now, result.stale, req.headers.get("user-agent"))
            headers = tuple(("Proxy-Authenticate", v) for v in values)
            self.sip.reply(req, flow, 407, None, headers)
            return
        caller = self.setup.find_user(domain, result.username or "")
        if caller is None:
            self.sip.reply(req, flow, 403, "Account not routable")
            return
        ruri = req.ruri
        dialed = unquote(ruri.user) if isinstance(ruri, SipUri) and ruri.user else ""
        if not dialed:
            self.sip.reply(req, flow, 404, "No number dialed")
            return
        state = self._state()
        by_name = self.setup.find_user(domain, dialed) if any(c.isalpha() for c in dialed) else None
        if by_name is not None:  # sip:user@domain naming an account: the AOR itself, not digits
            decision = Decision(DecisionKind.INTERNAL, dialed, dialed, caller.extension, callee=by_name)
        else:
            decision = route_outgoing(self.setup, caller, dialed, state, self.authorise)
        kind = decision.kind
        base = dict(
            call_id=req.call_id, invite=req, flow=flow, caller_dest=self._dest_of_flow(flow),
            caller_tag=req.from_tag or "", customer_id=caller.customer_id, account_id=caller.account_id,
            caller_number=caller.presented_number, dialed=dialed, normalised=decision.normalised or dialed,
            started=now,
        )  # fmt: skip
        if kind is DecisionKind.REFUSED:
            ref = decision.refusal
            assert ref is not None
            self._reply_warning(req, flow, ref.status, ref.reason, ref.warning)
            CALLS_TOTAL.labels("refused").inc()
            refused = Call(direction="outbound", plan=None, **base)  # type: ignore[arg-type]
            self._emit(self._ended(refused, "refused", ref.status, None, ref.reason))
            return
        if kind is DecisionKind.FEATURE:
            change = decision.change
            if change is not None:
                self.accounts.apply_forwarding(change)
                log.info("forwarding_changed", account=caller.account_id, change=str(change))
                self.sip.reply(req, flow, 486, "Forwarding updated")
            else:
                self.sip.reply(req, flow, 501, "Feature codes not enabled")
            return
        if kind in (DecisionKind.INTERNAL, DecisionKind.ON_NET):
            callee = decision.callee
            assert callee is not None
            plan = plan_incoming(
                self.setup,
                callee,
                Caller(caller.presented_number if kind is DecisionKind.ON_NET else caller.extension,
                       caller.display_name if hasattr(caller, "display_name") else "", caller.account_id),
                state,
                self.authorise,
            )  # fmt: skip
            direction = "internal"
            did = decision.normalised if kind is DecisionKind.ON_NET else None
        else:
            assert decision.target is not None
            plan = DirectPlan(
                RingBranch(1, decision.target, decision.caller_id, rated=decision.rated,
                           billed_account_id=caller.account_id, max_duration=decision.max_duration)
            )  # fmt: skip
            direction = "outbound"
            did = None
        preferred = preferred_number(
            req.headers.get_all("p-preferred-identity"), own_numbers(self.setup, caller)
        )
        call = Call(direction=direction, plan=plan, did=did, rated=decision.rated,
                    max_duration=decision.max_duration, caller_public=public_number(self.setup, caller),
                    caller_extension=caller.extension,
                    privacy=privacy_of(req.headers.get_all("privacy")), preferred=preferred,
                    **base)  # type: ignore[arg-type]  # fmt: skip
        self._begin(call)

    def _inbound(self, req: Request, flow: Flow, trunk: str) -> None:
        """A call from the carrier to one of our DIDs (accepted by source address)."""
        ruri = req.ruri
        user = unquote(ruri.user) if isinstance(ruri, SipUri) and ruri.user else ""
        number = user if user.startswith("+") else "+" + user.lstrip("0")
        from_uri = req.from_.sip_uri
        caller_number = unquote(from_uri.user) if from_uri is not None and from_uri.user else "anonymous"
        now = time.time()
        plan = plan_did(self.setup, number, Caller(caller_number), self._state(), self.authorise)
        if plan is None:
            self.sip.reply(req, flow, 404, "Number not assigned")
            return
        did = self.setup.dids.get(number)
        call = Call(
            call_id=req.call_id, invite=req, flow=flow, caller_dest=self._dest_of_flow(flow),
            caller_tag=req.from_tag or "", direction="inbound",
            customer_id=getattr(did, "customer_id", None), account_id=None, caller_number=caller_number,
            dialed=user, normalised=number, plan=plan, started=now, did=number,
            source=self._source_of(trunk), privacy=privacy_of(req.headers.get_all("privacy")),
        )  # fmt: skip
        self._begin(call)

    def _state(self) -> CallState:
        accounts = self.accounts
        return CallState(registered=self._is_registered, active_calls=accounts.calls_of,
                         overrides=accounts.overrides())  # fmt: skip

    def _is_registered(self, account_id: str) -> bool:
        aor = self.aor_of.get(account_id)
        store = self.registrar.store
        if aor is None:
            return False
        if isinstance(store, MemoryLocationStore):
            return bool(store.lookup(aor, time.time()))
        return True  # shared store: the ring attempt finds out (unreachable if no contact)

    # ---- executing a plan ---------------------------------------------------------------------------
    def _begin(self, call: Call) -> None:
        self.calls[call.call_id] = call
        if call.account_id:
            self.accounts.call_started(call.account_id)
        CALLS_ACTIVE.set(len(self.calls))
        self._run(call, call.plan.start(self.sip.now()))

    def _run(self, call: Call, actions: list[Any]) -> None:
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, RingBranch):
                call.rings[action.branch_id] = action
                queue.extend(self._ring(call, action))
            elif isinstance(action, CancelBranch):
                self._cancel_branch(call, action.branch_id)
            elif isinstance(action, ConnectBranch):
                call.done = True
            elif isinstance(action, FailCall):
                call.done = True
                self._fail(call, action)
        self._arm(call)

    def _arm(self, call: Call) -> None:
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        if call.done:
            return
        deadline = call.plan.next_deadline()
        if deadline is not None:
            loop = asyncio.get_running_loop()
            call.timer = loop.call_at(deadline, self._on_plan_timer, call)

    def _on_plan_timer(self, call: Call) -> None:
        call.timer = None
        if not call.done:
            self._run(call, call.plan.on_timer(self.sip.now()))

    def _ring(self, call: Call, ring: RingBranch) -> list[Any]:
        """Start a plan branch; returns plan actions when it cannot even start (no contact)."""
        target = ring.target
        if isinstance(target, AccountContacts) and not isinstance(self.registrar.store, MemoryLocationStore):
            task = asyncio.get_running_loop().create_task(self._ring_shared(call, ring))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return []
        return self._ring_targets(call, ring, self._resolve(target))

    async def _ring_shared(self, call: Call, ring: RingBranch) -> None:
        """Look the account's contacts up in the shared (Redis) store, then ring them."""
        aor = self.aor_of.get(ring.target.account_id)  # type: ignore[union-attr]
        try:
            bindings = await self.registrar.store.get(aor, time.time()) if aor else []
        except Exception:
            log.exception("location_lookup_failed", aor=aor)
            bindings = []
        if call.done or call.ended:
            return
        self._run(call, self._ring_targets(call, ring, [self._binding_target(b) for b in bindings]))

    def _ring_targets(self, call: Call, ring: RingBranch, targets: list[Any]) -> list[Any]:
        if not targets:
            return call.plan.on_branch_event(ring.branch_id, BranchUnreachable(), self.sip.now())
        subs: list[Branch] = []
        call.branches[ring.branch_id] = subs
        for ruri, dest, extra in targets:
            fwd = self._forwarded_invite(call, ring, ruri, dest, extra)
            branch = Branch(ring.branch_id, fwd, dest)
            subs.append(branch)
            self._send_branch(call, branch)
        return []

    def _forwarded_invite(
        self, call: Call, ring: RingBranch, ruri: str, dest: Destination, extra: tuple[tuple[str, str], ...]
    ) -> Request:
        hop = self.hop_for(dest)
        inbound_hop = self.hop_for(call.caller_dest)
        rr = (hop.record_route(),) if hop == inbound_hop else (hop.record_route(), inbound_hop.record_route())
        headers = list(extra)
        shown = ring.caller_id
        if isinstance(ring.target, TrunkNumber):
            if not shown.startswith("+"):  # the carrier sees a public number, never an extension
                shown = self._public_number(call, ring, shown)
            if call.preferred and shown == call.caller_public:
                shown = call.preferred  # the phone chose another of its own numbers
        shown_as = present(
            source=call.source, from_value=call.invite.headers.get("from"), original=call.caller_number,
            shown=shown or call.caller_number, display=ring.caller_display, host=hop.host,
            privacy=call.privacy, to_trusted=self._to_trusted(ring.target), policy=self.policy,
        )  # fmt: skip
        replace = [("from", shown_as.from_value)] if shown_as.from_value is not None else []
        if shown_as.asserted is not None:
            headers.append(("P-Asserted-Identity", shown_as.asserted))
        for d in ring.diversions:
            reason = d.reason.value if d.reason.value != "follow-me" else "unknown"
            headers.append(
                ("Diversion", f"<sip:{d.diverting_number}@{hop.host}>;reason={reason};counter={d.counter}")
            )
        return forward_request(call.invite, ruri, hop, record_route=rr, extra_headers=tuple(headers),
                               replace_headers=tuple(replace), remove=shown_as.remove)  # fmt: skip

    def _public_number(self, call: Call, ring: RingBranch, shown: str) -> str:
        """The public number behind an extension shown on an outside leg: the caller's, or the
        forwarding account's (``show_caller: account``)."""
        if shown == call.caller_extension:
            return call.caller_public or shown
        forwarder = self.setup.accounts.get(ring.billed_account_id or "")
        if forwarder is not None and shown == forwarder.extension:
            return public_number(self.setup, forwarder) or shown
        return shown

    def _send_branch(self, call: Call, branch: Branch) -> None:
        txn, outs = self.sip.transactions.send_request(
            branch.request, branch.dest, self.sip.now(), reliable=branch.dest.transport == "tcp"
        )
        branch.txn = txn
        self.branch_of[txn] = (call, branch)
        self.sip.run_outputs(outs)

    def _resolve(self, target: Any) -> list[tuple[str, Destination, tuple[tuple[str, str], ...]]]:
        """Request-URI and destination of each thing to ring for a plan target."""
        if isinstance(target, AccountContacts):
            aor = self.aor_of.get(target.account_id)
            store = self.registrar.store
            if aor is None or not isinstance(store, MemoryLocationStore):
                return []
            return [self._binding_target(b) for b in store.lookup(aor, time.time())]
        if isinstance(target, TrunkNumber):
            trunk = self.trunks.get(target.trunk)
            if trunk is None:
                return []
            dest, _ = trunk
            return [(f"sip:{target.number}@{dest.host}:{dest.port}", dest, ())]
        if isinstance(target, MediaService):
            uri = parse_uri(target.uri) if target.uri else None
            if not isinstance(uri, SipUri):
                return []
            user = target.service + (
                f"-{target.mailbox or target.room}" if (target.mailbox or target.room) else ""
            )
            user = user.replace("/", "-")
            dest = Destination("udp", _resolve_host(uri.host), uri.port or 5060)
            return [(f"sip:{user}@{uri.host}:{uri.port or 5060}", dest, ())]
        if isinstance(target, TargetUri):
            uri = parse_uri(target.uri)
            if not isinstance(uri, SipUri):
                return []
            return [
                (
                    target.uri,
                    Destination(uri.transport or "udp", _resolve_host(uri.host), uri.port or 5060),
                    (),
                )
            ]
        return []

    @staticmethod
    def _binding_target(b: Any) -> tuple[str, Destination, tuple[tuple[str, str], ...]]:
        """Request-URI and destination of a registered contact: over the flow it registered on."""
        f = b.flow
        flow = None
        if b.flow_alive:
            conn = f.connection_id.rsplit("/", 1)[-1] if f.connection_id else None
            lhost, _, lport = f.local_address.rpartition(":")
            flow = Flow(f.transport, (f.source_ip, f.source_port), (lhost, int(lport or 0)), conn)
        return (b.contact, Destination(f.transport, f.source_ip, f.source_port, flow), ())

    def _cancel_branch(self, call: Call, plan_branch: int) -> None:
        for branch in call.branches.get(plan_branch, ()):
            if branch.final is not None or branch.cancel_sent:
                continue
            if branch.provisional:
                self._send_cancel(branch)
            else:
                branch.cancel_pending = True

    def _send_cancel(self, branch: Branch) -> None:
        branch.cancel_pending = False
        if branch.cancel_sent:
            return
        branch.cancel_sent = True
        cancel = make_cancel(branch.request)
        _, outs = self.sip.transactions.send_request(cancel, branch.dest, self.sip.now(),
                                                     reliable=branch.dest.transport == "tcp")  # fmt: skip
        self.sip.run_outputs(outs)

    def _fail(self, call: Call, action: FailCall) -> None:
        for subs in call.branches.values():
            for b in subs:
                if b.final is None:
                    self._cancel_branch(call, b.plan_branch)
        best = best_response(call.finals)
        if best is not None and best.status == action.status:
            resp = relay_response(best)
            if resp.status == 503:
                resp.status, resp.reason = 500, "Server Internal Error"
                resp.raw = None  # the received bytes no longer say what is sent: serialise anew
            self.sip.respond(call.invite, resp, call.flow)
        else:
            self._reply_warning(call.invite, call.flow, action.status, action.reason, action.warning)
        self._finish(call, action.status, None)

    def _reply_warning(self, req: Request, flow: Flow, status: int, reason: str, warning: str) -> None:
        host = next(iter(self.hops.values())).host if self.hops else "sipcore"
        headers = (("Warning", f'399 {host} "{warning}"'),) if warning else ()
        self.sip.reply(req, flow, status, reason, headers)

    # ---- responses -----------------------------------------------------------------------------------
    def on_tu_event(self, out: Any) -> None:
        if isinstance(out, ResponseReceived):
            txn = out.transaction
            if txn is None:
                self._stray_response(out.response)
            elif txn in self.branch_of:
                call, branch = self.branch_of[txn]
                self._branch_response(call, branch, out.response)
            elif txn in self.relays:
                self._relay(txn, out.response)
        elif isinstance(out, TransactionTimedOut | TransportFailed):
            txn = out.transaction
            status = 408 if isinstance(out, TransactionTimedOut) else 503
            if txn in self.branch_of:
                call, branch = self.branch_of[txn]
                if branch.final is None:
                    self._branch_final(call, branch, status, None)
            elif txn in self.relays:
                req, flow, relayed_call = self.relays.pop(txn)
                self.sip.reply(req, flow, status)
                if req.method == "BYE" and relayed_call is not None and not relayed_call.ended:
                    self._finish(relayed_call, 200, relayed_call.hangup_by)  # the BYE was sent: call over
        elif isinstance(out, TransactionTerminated):
            self.branch_of.pop(out.transaction, None)  # type: ignore[arg-type]
            self.relays.pop(out.transaction, None)  # type: ignore[arg-type]

    def _branch_response(self, call: Call, branch: Branch, resp: Response) -> None:
        status = resp.status
        if status < 200:
            if status == 100:
                branch.provisional = True
                if branch.cancel_pending:
                    self._send_cancel(branch)
                return
            branch.provisional = True
            if branch.cancel_pending:
                self._send_cancel(branch)
                return
            if call.done:
                return
            if status in (180, 183) and call.ringing_at is None:
                call.ringing_at = time.time()
            self.sip.respond(call.invite, relay_response(resp), call.flow)
            return
        if status < 300:
            branch.final = status
            branch.response = resp
            self.sip.respond(call.invite, relay_response(resp), call.flow)
            if call.answered is None:
                self._answered(call, branch, resp)
            return
        if status in (401, 407) and not branch.auth_tried and self._trunk_auth(call, branch, resp):
            return
        self._branch_final(call, branch, status, resp)

    def _answered(self, call: Call, branch: Branch, resp: Response) -> None:
        if call.cancelled and call.timer is not None:
            call.timer.cancel()
            call.timer = None
        call.answered = branch
        call.answered_at = time.time()
        call.callee_tag = resp.to_tag
        call.callee_to = resp.headers.get("to")
        contacts = resp.headers.get_all("contact")
        call.callee_contact = contacts[0] if contacts else None
        ring = call.rings.get(branch.plan_branch)
        target = ring.target if ring is not None else None
        if isinstance(target, AccountContacts):
            call.callee_account_id = target.account_id
            self.accounts.call_started(target.account_id)
        if isinstance(target, TrunkNumber):
            call.normalised = target.number  # the number actually reached (a forward's target)
            if call.direction != "outbound":
                call.direction = "forwarded"  # an outside leg of a forwarded call: billed to the forwarder
                payer = self.setup.accounts.get(ring.billed_account_id) if ring is not None else None
                if payer is not None:
                    call.customer_id = payer.customer_id
        if ring is not None:
            call.billed_account_id = ring.billed_account_id
            call.rated = call.rated or ring.rated
            if ring.max_duration is not None:
                call.max_duration = ring.max_duration
        self._run(call, call.plan.on_branch_event(branch.plan_branch, BranchAnswered(), self.sip.now()))
        limit = self.max_call_duration
        reason = "max_duration"
        if call.max_duration is not None and call.max_duration < limit:
            limit, reason = float(call.max_duration), "prepaid_limit"
        loop = asyncio.get_running_loop()
        call.cutoff = loop.call_later(limit, self._cut_off, call, reason)
        # §13.3.1.4: a UAS gives up on a 2xx not ACKed within 64*T1; the dialog is dead then.
        call.ack_timer = loop.call_later(self.ack_wait, self._cut_off, call, "no_ack")

    def _branch_final(self, call: Call, branch: Branch, status: int, resp: Response | None) -> None:
        branch.final = status
        branch.response = resp
        if resp is not None and status != 487:
            call.finals.append(resp)
        if call.cancelled:
            if not self._pending(call):
                self._end_cancelled(call)
            return
        subs = call.branches.get(branch.plan_branch, [])
        if any(b.final is None for b in subs) or call.done:
            return
        if any(b.final is not None and 200 <= b.final < 300 for b in subs):
            return
        codes = [b.final for b in subs]
        provisional = any(b.provisional for b in subs)
        if any(c in (486, 600) for c in codes):
            event: Any = BranchBusy()
        elif all(c == 487 for c in codes):
            return  # we cancelled it: the plan already moved on
        elif any(c == 480 for c in codes) or (provisional and any(c == 408 for c in codes)):
            event = BranchNotAnswered()
        elif all(c in (408, 503) for c in codes):
            event = BranchUnreachable()
        else:
            best = min(codes)  # type: ignore[type-var]
            reason = next((b.response.reason for b in subs if b.final == best and b.response), "")
            event = BranchFailed(best or 500, reason)  # type: ignore[arg-type]
        self._run(call, call.plan.on_branch_event(branch.plan_branch, event, self.sip.now()))

    def _trunk_auth(self, call: Call, branch: Branch, resp: Response) -> bool:
        """Answer the carrier's own 401/407 with the trunk's credentials (once per branch)."""
        ring = call.rings.get(branch.plan_branch)
        if ring is None or not isinstance(ring.target, TrunkNumber):
            return False
        trunk = self.trunks.get(ring.target.trunk)
        if trunk is None or not getattr(trunk[1], "username", None):
            return False
        cfg = trunk[1]
        header = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
        challenge = resp.headers.get(header)
        if challenge is None:
            return False
        try:
            value = build_authorization(challenge, username=cfg.username, password=cfg.password,
                                        method="INVITE", uri=branch.request.uri)  # fmt: skip
        except Exception:
            return False
        fwd = branch.request.headers.copy()
        fwd.remove_first_value("via")
        hop = self.hop_for(branch.dest)
        fwd.add("via", hop.via(new_branch()), first=True)
        cseq, method = branch.request.cseq
        fwd.set("cseq", f"{cseq + 1} {method}")
        fwd.set("authorization" if resp.status == 401 else "proxy-authorization", value)
        new = Request(branch.request.method, branch.request.uri, fwd, branch.request.body)
        retry = Branch(branch.plan_branch, new, branch.dest, auth_tried=True)
        branch.final = resp.status
        subs = call.branches[branch.plan_branch]
        subs[subs.index(branch)] = retry
        self._send_branch(call, retry)
        return True

    def _stray_response(self, resp: Response) -> None:
        """2xx retransmissions after the INVITE client transaction ended: forward statelessly by Via."""
        try:
            vias = resp.vias
        except SipParseError:
            return
        if len(vias) < 2:
            return
        top = vias[0]
        if not any(top.host == h.host and top.port == h.port for h in self.hops.values()):
            return
        up = relay_response(resp)
        via = up.top_via
        dest = response_destination(via)
        data = up.serialize()
        if via.transport == "TCP":
            self.sip.transports.send_flow(data, Flow("tcp", dest, ("", 0), None))
        else:
            self.sip.transports.send_udp(data, dest)

    # ---- CANCEL and in-dialog requests ---------------------------------------------------------------
    def _on_cancel(self, req: Request, flow: Flow) -> None:
        """§16.10: 200 to the CANCEL, CANCEL every pending branch; the caller's INVITE is answered by
        what the branches answer (487, or a 2xx that crossed the CANCEL, which is relayed)."""
        target = self.sip.transactions.find_cancel_target(req)
        call = self.calls.get(req.call_id)
        if target is None or call is None or call.done:
            self.sip.reply(req, flow, 481)
            return
        self.sip.reply(req, flow, 200)
        call.cancelled = True
        call.hangup_by = "caller"
        self._run(call, call.plan.cancel())
        for subs in call.branches.values():
            for b in subs:
                if b.final is None:
                    self._cancel_branch(call, b.plan_branch)
        call.done = True
        if not self._pending(call):
            self._end_cancelled(call)
        else:  # a branch that never answers its CANCEL must not hold the caller (no Timer C here)
            call.timer = asyncio.get_running_loop().call_later(CANCEL_GRACE, self._end_cancelled, call)

    @staticmethod
    def _pending(call: Call) -> bool:
        return any(b.final is None for subs in call.branches.values() for b in subs)

    def _end_cancelled(self, call: Call) -> None:
        if call.ended or call.answered is not None:
            return
        self.sip.reply(call.invite, call.flow, 487)
        self._finish(call, 487, "caller")

    def _in_dialog(self, req: Request, flow: Flow) -> None:
        try:
            pre_process_route(req, self.is_me)
        except SipParseError as exc:
            self.sip.reply(req, flow, 400, exc.reason)
            return
        call = self.calls.get(req.call_id)
        from_tag = req.from_tag
        dest: Destination | None = None
        if call is not None and call.answered is not None:
            if from_tag == call.caller_tag:
                dest = call.answered.dest
                call.caller_cseq = max(call.caller_cseq, req.cseq[0])
                side = "caller"
            else:
                dest = call.caller_dest
                call.callee_cseq = max(call.callee_cseq, req.cseq[0])
                side = "callee"
            if req.method == "BYE" and call.hangup_by is None:
                call.hangup_by = side
        if dest is None:
            hop_uri = next_hop(req)
            if hop_uri is None or self.is_me(hop_uri):
                if req.method != "ACK":
                    self.sip.reply(req, flow, 481)
                return
            dest = Destination(hop_uri.transport or "udp", _resolve_host(hop_uri.host), hop_uri.port or 5060)
        hop = self.hop_for(dest)
        if (
            req.method == "ACK"
            and call is not None
            and call.ack_timer is not None
            and from_tag == call.caller_tag
        ):
            call.ack_timer.cancel()
            call.ack_timer = None
        remove = self.policy.for_source(self._source_of(self.trunk_for_source(flow.remote[0])))
        if req.method == "ACK":
            branch = ack_branch(req.top_via.branch, req.call_id)
            self.send_request(forward_request(req, req.uri, hop, branch=branch, remove=remove), dest)
            return
        fwd = forward_request(req, req.uri, hop, remove=remove)
        txn, outs = self.sip.transactions.send_request(
            fwd, dest, self.sip.now(), reliable=dest.transport == "tcp"
        )
        self.relays[txn] = (req, flow, call)
        self.sip.run_outputs(outs)

    def _relay(self, txn: ClientTransaction, resp: Response) -> None:
        req, flow, call = self.relays[txn]
        if resp.status == 100:
            return
        self.sip.respond(req, relay_response(resp), flow)
        if resp.status >= 200:
            del self.relays[txn]
            if req.method == "BYE" and call is not None and not call.ended:
                self._finish(call, 200, call.hangup_by)

    # ---- cut-off and the end of a call -------------------------------------------------------------
    def _cut_off(self, call: Call, reason: str) -> None:
        """BYE both parties (prepaid limit reached, or a call nobody ended)."""
        call.cutoff = None
        if call.ended or call.answered is None:
            return
        CUTOFFS.labels(reason).inc()
        hop_callee = self.hop_for(call.answered.dest)
        invite = call.invite
        from_value = invite.headers.get("from") or ""
        to_value = call.callee_to or invite.headers.get("to") or ""
        if call.callee_contact:
            callee_target = target_uri_of(call.callee_contact)
            bye = in_dialog_request("BYE", callee_target, from_value, to_value, call.call_id,
                                    call.caller_cseq + 1 if call.caller_cseq else invite.cseq[0] + 1, hop_callee)  # fmt: skip
            self._fire(bye, call.answered.dest)
        caller_contacts = invite.headers.get_all("contact")
        if caller_contacts:
            hop_caller = self.hop_for(call.caller_dest)
            bye = in_dialog_request("BYE", target_uri_of(caller_contacts[0]), to_value, from_value, call.call_id,
                                    call.callee_cseq + 1 if call.callee_cseq else 1, hop_caller)  # fmt: skip
            self._fire(bye, call.caller_dest)
        call.hangup_by = "system"
        self._finish(call, 200, "system")

    def _fire(self, req: Request, dest: Destination) -> None:
        """Send a request whose answer nobody waits for (its transaction still retransmits it)."""
        _, outs = self.sip.transactions.send_request(
            req, dest, self.sip.now(), reliable=dest.transport == "tcp"
        )
        self.sip.run_outputs(outs)

    def _finish(self, call: Call, status: int, hangup_by: str | None) -> None:
        if call.ended:
            return
        call.ended = True
        call.done = True
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None  # the handle refers back to the call: drop the cycle
        if call.cutoff is not None:
            call.cutoff.cancel()
            call.cutoff = None
        if call.ack_timer is not None:
            call.ack_timer.cancel()
            call.ack_timer = None
        dispose = getattr(call.plan, "dispose", None)
        if dispose is not None:
            dispose()  # free the routing plan's graph now, not at the next cyclic collection
        if call.account_id:
            self.accounts.call_ended(call.account_id)
        if call.callee_account_id:
            self.accounts.call_ended(call.callee_account_id)
        self.calls.pop(call.call_id, None)
        CALLS_ACTIVE.set(len(self.calls))
        answered = call.answered_at is not None
        disposition = "answered" if answered else disposition_for(status, call.cancelled)
        CALLS_TOTAL.labels(disposition).inc()
        self._emit(self._ended(call, disposition, 200 if answered else status, hangup_by or call.hangup_by))

    @staticmethod
    def _ended(
        call: Call, disposition: str, status: int, hangup_by: str | None, reason: str = ""
    ) -> CallEnded:
        """The CallEnded facts of a call (finished, or refused before any branch rang)."""
        return CallEnded(
            call_id=call.call_id, leg="0", direction=call.direction, customer_id=call.customer_id,
            account_id=call.account_id, billed_account_id=call.billed_account_id or call.account_id,
            caller=call.caller_number, dialed=call.dialed, normalised=call.normalised,
            callee_account_id=call.callee_account_id, did=call.did, start=call.started,
            answer=call.answered_at, end=time.time(), disposition=disposition, sip_status=status,
            hangup_by=hangup_by, rated=call.rated, reason=reason,
        )  # fmt: skip

    def _emit(self, event: CallEnded) -> None:
        # debug, not info: the CDR is the record of every call; a JSON line per call cost ~5 % of
        # the proxy's CPU per call (bench_sip_cpu --mode call)
        log.debug("call_ended", call_id=event.call_id, disposition=event.disposition, status=event.sip_status,
                 duration=event.duration, hangup_by=event.hangup_by)  # fmt: skip
        for sink in self.call_ended_sinks:
            try:
                sink(event)
            except Exception:
                log.exception("call_ended_sink_failed", call_id=event.call_id)

    # ---- sending -------------------------------------------------------------------------------------
    def send_request(self, msg: Request, destination: Any) -> bool:
        dest: Destination = destination
        data = msg.serialize()
        transports = self.sip.transports
        if dest.flow is not None and transports.send_flow(data, dest.flow):
            return True
        if dest.transport == "tcp":
            asyncio.get_running_loop().create_task(transports.send_tcp(data, (dest.host, dest.port)))
            return True
        return transports.send_udp(data, (dest.host, dest.port))

    def _dest_of_flow(self, flow: Flow) -> Destination:
        return Destination(flow.transport, flow.remote[0], flow.remote[1], flow)


def _resolve_host(host: str) -> str:
    host = strip_brackets(host)
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        try:
            return socket.gethostbyname(host)
        except OSError:
            return host


def trunks_of(cfg: Any) -> dict[str, tuple[Destination, Any]]:
    """Trunk name -> (where to send, its configuration); host names resolved once, here."""
    trunks: dict[str, tuple[Destination, Any]] = {}
    for name, t in cfg.trunks.items():
        trunks[name] = (Destination(t.transport, _resolve_host(str(t.address.host)), int(t.address.port)), t)
    return trunks


def build_proxy_service(
    cfg: Any, sip: SipServer, registrar: Any, accounts: AccountState | None = None
) -> ProxyService:
    """Build the call controller from the configuration (routing setup, trunks); ``accounts`` is the
    account state shared by the processes (default: this process's, forwarding in the state dir)."""
    from config.bridge import registrar_view, routing_setup
    from routing import JsonForwardingStore

    setup = routing_setup(cfg)
    trunks = trunks_of(cfg)
    aor_of = {c.account_id: f"sip:{c.username}@{c.domain.lower()}" for c in registrar_view(cfg).values()}
    if accounts is None:
        accounts = LocalAccountState(JsonForwardingStore.in_state_dir(str(cfg.paths.state_dir)))
    return ProxyService(sip, registrar, setup, trunks, aor_of, float(cfg.proxy.max_call_duration),
                        accounts=accounts)  # fmt: skip


__all__ = ["Branch", "Call", "Destination", "ProxyService", "build_proxy_service"]
