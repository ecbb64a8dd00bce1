"""The call controller: a record-routing stateful proxy (RFC 3261 §16) driven by routing decisions,
sans I/O.

For every new INVITE it authenticates the phone (407, through the ``authenticate`` it is given) or
accepts the trunk by source address, asks ``routing`` where the call goes, and executes the plan:
forks branches (each registered contact of an account is a sub-branch), relays provisional and 2xx
responses, cancels losing branches, feeds busy / no-answer / unreachable outcomes back to the plan
(forwarding, follow-me, voicemail), and answers the caller with the plan's final word. Answered calls
are tracked as dialogs (in-dialog requests are relayed over the flows the parties used, so phones
behind NAT stay reachable); a call nobody ends, a prepaid call at its limit, or a 2xx never ACKed
is cut with a BYE to both parties. Every finished or refused call ends with an ``EndCall``.

Message waiting goes through it too (``calls.subscriptions``): a phone's SUBSCRIBE to its own
mailbox is authenticated like a call and forwarded to the media service, the dialog's NOTIFYs reach
the phone over its flow (a flow token in our Record-Route), and the media service's unsolicited
NOTIFY is copied to every registered contact of the account.

It takes events with ``now`` (a monotonic clock in seconds) and returns actions (``calls.actions``);
``next_deadline()`` says when ``on_timer`` is due. No clock, socket, asyncio, store or metrics here:
the adapter (``server/proxy_service.py``) performs the actions and feeds back what happened.
"""

from __future__ import annotations

import heapq
import ipaddress
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

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
from calls.call_ended import CallEnded, disposition_for
from calls.cluster_route import CALLER_TAG, ClusterRoute, peer_name
from calls.dialog_record import DialogRecord
from calls.identity import (
    HeaderPolicy,
    Source,
    own_numbers,
    preferred_number,
    present,
    privacy_of,
    public_number,
    withholds,
)
from calls.model import Branch, Call, Contact, Destination, NotifyCopy, Relay
from calls.subscriptions import (
    ALLOW_EVENTS,
    MAILBOX_SERVICE,
    MWI_EVENT,
    FlowTokens,
    event_package,
    notify_copy,
    record_route_with,
)
from routing import (
    AccountRoute,
    Authorisation,
    AuthoriseRequest,
    BranchAnswered,
    BranchUnreachable,
    Caller,
    CallState,
    CancelBranch,
    ConnectBranch,
    DecisionKind,
    FailCall,
    RingBranch,
    RoutingSetup,
    allow_all,
    format_number,
    order_trunks,
    plan_did,
    plan_incoming,
    route_outgoing,
    route_to_account,
)
from routing.dialplan import VOICEMAIL_CODE
from routing.outcomes import branch_outcome
from routing.plan_direct import DirectPlan
from routing.plan_events import BranchFailed
from routing.targets import AccountContacts, MediaService, TrunkNumber, media_key
from routing.targets import SipUri as TargetUri
from routing.toll_fraud import Admission, hold_keys
from sipcore.digest import build_authorization
from sipcore.errors import SipParseError
from sipcore.flow import Flow, response_destination, same_host, strip_brackets
from sipcore.headers import NameAddr, split_list
from sipcore.message import Headers, Request, Response, new_branch
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
from sipcore.records import fast_init
from sipcore.uri import SipUri, parse_uri

ACK_WAIT = 32.0  # 64*T1: an answered call whose 2xx is never ACKed is ended (BYE both ways)
CANCEL_GRACE = 4.0  # seconds a CANCELled branch may take to answer before the caller gets 487 anyway

ORPHAN_TIMEOUT = 3600.0  # a call restored after a crash with no BYE (nor any request) by then is ended

# timer kinds, in the heap next to their call's Call-ID
_PLAN, _CANCEL, _CUTOFF, _ACK, _TRUNK, _ORPHAN = range(6)
# the Call field of each kind
_DEADLINES = ("plan_at", "cancel_at", "cutoff_at", "ack_at", "trunk_at", "orphan_at")


@fast_init
@dataclass(frozen=True, slots=True)
class Trunk:
    """A carrier trunk as the controller sees it; ``dest.host`` may be a name (resolved per use)."""

    name: str
    dest: Destination
    trusted: bool = True
    username: str | None = None
    password: str | None = None
    inbound_sources: tuple[str, ...] = ()  # networks ("192.0.2.0/24") and address:port ("192.0.2.1:5090")
    number_format: str = "e164"  # Request-URI and To user (routing.trunks.format_number)
    caller_format: str = "e164"  # From and P-Asserted-Identity user
    caller_default: str | None = None  # shown when our caller has no public number
    anonymous_allowed: bool = True  # False: calls withholding their identity do not use it
    country_code: int = 0  # what the national format means
    failover_timeout: float = 5.0  # no answer at all to an INVITE by then: the next trunk


@fast_init
@dataclass(frozen=True, slots=True)
class CallSettings:
    """Everything a reload may change; calls in progress keep the plans they started with."""

    setup: RoutingSetup
    trunks: Mapping[str, Trunk]
    aor_of: Mapping[str, str]  # account id -> AOR of its registrations
    hops: Mapping[str, Hop]  # "UDP" / "TCP" -> our Via and Record-Route address
    realms: frozenset[str]  # ours: credentials for them are consumed, never forwarded
    flow_key: bytes  # seals subscription flow tokens; the same in every process relaying a dialog
    max_call_duration: float = 14400.0
    ack_wait: float = ACK_WAIT
    cancel_grace: float = CANCEL_GRACE
    orphan_timeout: float = ORPHAN_TIMEOUT  # a call restored after a crash whose BYE never comes
    # calls.trunk_monitor.TrunkLink of each trunk (probes, registration) and peer probed (the adapter's)
    links: tuple[Any, ...] = ()
    cluster: ClusterRoute | None = None  # several hosts (server.cluster): transit of peers' requests


@fast_init
@dataclass(frozen=True, slots=True)
class Authenticated:
    """A phone's INVITE carried valid credentials for ``username`` in ``domain``."""

    domain: str
    username: str


@fast_init
@dataclass(frozen=True, slots=True)
class AuthAnswer:
    """The answer to an INVITE that did not authenticate (407 with its challenges, 400, 403)."""

    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


Authenticate = Callable[[Request, str, float], Authenticated | AuthAnswer | None]
"""(INVITE or SUBSCRIBE, source IP, now) -> who it is, the answer to give, or None to drop it (a
banned source)."""


@dataclass(slots=True, eq=False)
class _Waiting:
    """A request parked until its destination's host name is resolved."""

    request: Request
    dest: Destination
    key: Branch | Relay | NotifyCopy | None
    stateless: bool = False


@dataclass(slots=True, eq=False)
class _Transit:
    """A peer host's INVITE relayed to a phone whose flow is ours (calls.cluster_route): kept until
    its final answer, only so that the peer's CANCEL reaches the phone."""

    relay: Relay
    request: Request  # as forwarded
    dest: Destination
    provisional: bool = False
    cancel_pending: bool = False


@dataclass(slots=True)
class _Timers:
    heap: list[tuple[float, int, str, int]] = field(default_factory=list)
    seq: int = 0


class CallController:
    def __init__(
        self,
        settings: CallSettings,
        authenticate: Authenticate,
        authorise: Callable[[AuthoriseRequest], Authorisation] = allow_all,
        is_local: Callable[[str, int | None], bool] = lambda host, port: False,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.authenticate = authenticate
        self.authorise = authorise
        self.is_local = is_local
        self.draw = draw  # weighted choice among trunks of equal priority
        self.down_trunks: set[str] = set()  # taken out of rotation by failed probes (on_trunk_state)
        self.down_peers: set[str] = set()  # the platform's hosts found dead (on_peer_state): not rung through
        self.calls: dict[str, Call] = {}
        self._timers = _Timers()
        # unsolicited NOTIFYs waiting for their account's contacts: (NOTIFY, its flow, account id, AOR)
        self._notifies: dict[int, tuple[Request, Flow, str, str]] = {}
        self._notify_seq = 0
        self.draining: int | None = None  # shutting down: new calls get 503 with this Retry-After
        # (Call-ID, Via branch) -> a peer's INVITE relayed, until final (a fork may send several)
        self._transits: dict[tuple[str, str], _Transit] = {}
        self.update(settings)

    def update(self, settings: CallSettings) -> None:
        """Swap in a reloaded configuration; calls in progress keep the plans they started with."""
        self.settings = settings
        self.setup = settings.setup
        self.policy = HeaderPolicy(settings.realms)
        self._ours = {(h.host.lower(), h.port) for h in settings.hops.values()}
        nets = []
        exact: dict[tuple[str, int], str] = {}
        for name, trunk in settings.trunks.items():
            for src in trunk.inbound_sources:
                if not (src.startswith("[") or src.count(":") == 1):  # a network, any port
                    nets.append((ipaddress.ip_network(src, strict=False), name))
                else:  # "192.0.2.1:5090" or "[2001:db8::1]:5090": that address and port only
                    host, _, port = src.rpartition(":")
                    exact.setdefault((str(ipaddress.ip_address(strip_brackets(host))), int(port)), name)
        self._trunk_nets = nets
        self._trunk_ports = exact
        self._trunk_memo: dict[tuple[str, int | None], str | None] = {}
        self._public: dict[str, str | None] = {}
        self._tokens = FlowTokens(settings.flow_key)
        accounts = self.setup.accounts.values()
        self._mailboxes = {media_key(a.account_id): a.account_id for a in accounts}  # mailbox-<key> -> id
        media = parse_uri(self.setup.media_uri) if self.setup.media_uri else None
        self._media = (strip_brackets(media.host), media.port or 5060) if isinstance(media, SipUri) else None

    # ---- questions the adapter asks ---------------------------------------------------------------
    def trunk_for_source(self, ip: str, port: int | None = None) -> str | None:
        """The trunk whose inbound sources hold ``ip`` (and ``port``, for sources given with one);
        memoised per address and port (asked per message)."""
        key = (ip, port)
        memo = self._trunk_memo
        if key in memo:
            return memo[key]
        name = self.find_trunk(ip, port)
        if len(memo) >= 4096:  # bounded: a scan from many addresses cannot grow it without end
            memo.clear()
        memo[key] = name
        return name

    def find_trunk(self, ip: str, port: int | None = None) -> str | None:
        """``trunk_for_source`` without the memo: an address:port source first (a carrier on a host
        that also has phones), then the networks (any port)."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if port is not None and self._trunk_ports:
            name = self._trunk_ports.get((str(addr), port))
            if name is not None:
                return name
        return next((n for net, n in self._trunk_nets if addr in net), None)

    def on_trunk_state(self, trunk: str, up: bool) -> None:
        """The adapter's probes found ``trunk`` answering again (up) or dead: new calls skip a dead
        trunk while another of their set is up."""
        if up:
            self.down_trunks.discard(trunk)
        else:
            self.down_trunks.add(trunk)

    def on_peer_state(self, peer: str, up: bool) -> None:
        """The adapter's probes (or a call's silent branch, ``PeerSilent``) found another host of the
        platform (``peer_name``) answering again (up) or dead: a contact registered through a dead host
        is not rung (its branch ends at once as unreachable, as after ``answer_wait``)."""
        if up:
            self.down_peers.discard(peer)
        else:
            self.down_peers.add(peer)

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
        if "proxy-authorization" in req.headers or self.trunk_for_source(*flow.remote) is not None:
            return False
        cluster = self.settings.cluster
        return cluster is None or cluster.transit_flow(req, flow.remote[0], self._is_me) is None

    def may_challenge(self, call_id: str, remote: tuple[str, int]) -> bool:
        """Whether an initial INVITE without credentials, with one Via and no Route (the INVITE lane's,
        registrar/invite_lane.py), goes straight to authentication, answered without a transaction:
        `is_stateless_invite` and `_on_invite`'s checks before it (a phone, not a trunk; one host, no
        transit; not draining; no call of ours with that Call-ID, which would be a spiral: 482)."""
        return (
            self.draining is None
            and self.settings.cluster is None
            and call_id not in self.calls
            and self.trunk_for_source(*remote) is None
        )

    def next_deadline(self) -> float | None:
        heap = self._timers.heap
        while heap and not self._valid(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    # ---- events -------------------------------------------------------------------------------------
    def on_request(self, req: Request, flow: Flow, now: float, state: CallState) -> list[Action]:
        """A new request for the proxy (not a retransmission: the transaction layer absorbed those)."""
        out: list[Action] = []
        method = req.method
        try:
            to_tag = req.to_tag
        except SipParseError as exc:
            out.append(Reply(req, flow, 400, exc.reason))
            return out
        if method == "CANCEL":
            self._on_cancel(req, flow, now, out)
        elif (to_tag is None and method != "ACK" and self.settings.cluster is not None
              and (toward := self.settings.cluster.transit_flow(req, flow.remote[0], self._is_me))):  # fmt: skip
            self._transit(req, flow, toward, out)
        elif to_tag is None and method == "SUBSCRIBE":
            self._on_subscribe(req, flow, now, out)
        elif to_tag is None and method == "NOTIFY":
            self._on_unsolicited_notify(req, flow, out)
        elif to_tag is not None or ("route" in req.headers and method != "INVITE"):
            self._in_dialog(req, flow, now, out)
        elif method == "ACK":
            pass  # ACK of a non-2xx: absorbed by its transaction already, or stray
        elif method != "INVITE":
            out.append(Reply(req, flow, 405, "Only calls are proxied"))
        else:
            self._on_invite(req, flow, now, state, out)
        return out

    def on_response(self, key: Branch | Relay | NotifyCopy, resp: Response, now: float) -> list[Action]:
        """A response on the client transaction sent with ``key``."""
        out: list[Action] = []
        if type(key) is Branch:
            call = self.calls.get(key.call_id)
            if call is None:  # the call is over: a late 2xx still goes up (§16.7), by its Via
                if 200 <= resp.status < 300:
                    self._stray(resp, out)
                return out
            self._branch_response(call, key, resp, now, out)
        elif type(key) is Relay:
            self._relay(key, resp, now, out)
        elif resp.status >= 200:
            self._notify_answered(key, resp.status, False, out)  # type: ignore[arg-type]
        return out

    def on_failure(self, key: Branch | Relay | NotifyCopy, status: int, now: float) -> list[Action]:
        """The transaction sent with ``key`` timed out (408) or could not be sent (503)."""
        out: list[Action] = []
        if type(key) is Branch:
            call = self.calls.get(key.call_id)
            if call is not None and key.final is None:
                self._branch_final(call, key, status, None, now, out)
        elif type(key) is NotifyCopy:
            self._notify_answered(key, status, True, out)
        else:
            relay: Relay = key  # type: ignore[assignment]
            if relay.final:
                return out
            if relay.call_id is None and self._transits:
                self._transit_answer(relay, status, out)
            relay.final = True
            out.append(Reply(relay.request, relay.flow, status))
            call = self.calls.get(relay.call_id) if relay.call_id else None
            if relay.request.method == "BYE" and call is not None:
                self._finish(call, 200, call.hangup_by, now, out)  # the BYE was sent: the call is over
        return out

    def on_stray_response(self, resp: Response) -> list[Action]:
        """A response no transaction knows (a 2xx retransmission after the INVITE transaction)."""
        out: list[Action] = []
        self._stray(resp, out)
        return out

    def hang_up(self, call_id: str, now: float) -> list[Action]:
        """The operator ends a call (admin API). Answered: a BYE to both parties, ended by ``system``
        with reason ``admin`` (the cut-off path). Still ringing: every branch is CANCELled and the
        caller answered 487 once they have answered (or after the CANCEL grace), ended by ``system``;
        a 2xx crossing the CANCELs makes it an answered call, as with the caller's own CANCEL.
        Nothing when no call has that Call-ID here."""
        out: list[Action] = []
        call = self.calls.get(call_id)
        if call is None or call.ended:
            return out
        if call.answered is not None:
            self._cut_off(call, "admin", now, out)
            return out
        if not call.cancelled:  # a caller's CANCEL already under way stays the caller's
            call.cancelled = True
            call.hangup_by = "system"
        self._stop_ringing(call, now, out)
        return out

    def refuse(
        self, call_id: str, status: int, reason: str, warning: str, label: str, now: float
    ) -> list[Action]:
        """A call whose hold the platform refused after routing granted it (another host's call took
        what was left of a daily cap): refused as routing refuses (``status reason``, ``warning``, a
        refused CDR counted as ``label``), its branches cancelled. Nothing when it ended already."""
        out: list[Action] = []
        call = self.calls.get(call_id)
        if call is None or call.ended:
            return out
        if call.answered is not None:  # not reached: its INVITE leaves only once the hold is granted
            self._cut_off(call, label, now, out)
            return out
        self._cancel_all(call, out)
        out.append(self._warning_reply(call.invite, call.flow, status, reason, warning))
        self._finish(call, status, None, now, out)
        end = out.pop()
        assert isinstance(end, EndCall)
        out.append(EndCall(replace(end.ended, disposition="refused", reason=label), end.cutoff))
        return out

    def restore(self, record: DialogRecord, now: float) -> list[Action]:
        """An answered call the journal kept across a crash (``record`` in this controller's clock):
        a dialog again, so that the BYE of either party ends it with its real end time. It counts
        against its accounts again, keeps its cut-off deadline, and is ended as an orphan when no
        request of it comes within ``orphan_timeout`` (BYE both ways, end time estimated as the last
        time it was known alive: ``_orphaned``). Nothing when the Call-ID is here already."""
        out: list[Action] = []
        if record.call_id in self.calls:
            return out
        caller_dest = record.caller_dest
        flow = caller_dest.flow or Flow(caller_dest.transport, (caller_dest.host, caller_dest.port), ("", 0))
        headers = Headers([["from", "From", record.caller_from], ["to", "To", record.callee_to or ""],
                           ["call-id", "Call-ID", record.call_id],
                           ["cseq", "CSeq", f"{record.invite_cseq} INVITE"]])  # fmt: skip
        if record.caller_contact:
            headers.add("contact", record.caller_contact)
        invite = Request("INVITE", "sip:restored.invalid", headers)
        call = Call(
            call_id=record.call_id, invite=invite, flow=flow, caller_dest=caller_dest,
            caller_tag=record.caller_tag, direction=record.direction, customer_id=record.customer_id,
            account_id=record.account_id, caller_number=record.caller_number, dialed=record.dialed,
            normalised=record.normalised, plan=None, started=record.started, did=record.did,
            rated=record.rated, billed_account_id=record.billed_account_id,
            callee_account_id=record.callee_account_id, answered_at=record.answered_at,
            answered=Branch(record.call_id, 0, invite, record.callee_dest, provisional=True, final=200),
            callee_tag=record.callee_tag, callee_to=record.callee_to, callee_contact=record.callee_contact,
            caller_cseq=record.invite_cseq, done=True, alive_until=record.alive_until,
        )  # fmt: skip
        self.calls[call.call_id] = call
        if call.account_id:
            out.append(CountCall(call.account_id, 1))
        if call.callee_account_id:
            out.append(CountCall(call.callee_account_id, 1))
        call.cutoff_at, call.cutoff_reason = record.cutoff_at, record.cutoff_reason
        self._push(call, call.cutoff_at, _CUTOFF)
        call.orphan_at = now + self.settings.orphan_timeout
        self._push(call, call.orphan_at, _ORPHAN)
        return out

    def on_contacts(self, lookup: LookupContacts, contacts: list[Contact], now: float) -> list[Action]:
        """The registered contacts a ``LookupContacts`` asked for."""
        out: list[Action] = []
        if lookup.branch_id < 0:
            self._notify_contacts(-lookup.branch_id, contacts, out)
            return out
        call = self.calls.get(lookup.call_id)
        if call is None or call.done or lookup.branch_id in call.dropped:
            return out
        ring = call.rings[lookup.branch_id]
        self._run(call, self._ring_targets(call, ring, contacts, now, out), now, out)
        return out

    def on_resolved(self, resolve: ResolveHost, address: str | None, now: float) -> list[Action]:
        """The address of a ``ResolveHost`` host (None: it does not resolve)."""
        out: list[Action] = []
        waiting: _Waiting = resolve.key
        if address is None:
            if waiting.key is not None:
                out.extend(self.on_failure(waiting.key, 503, now))
            return out
        dest = Destination(waiting.dest.transport, address, waiting.dest.port, waiting.dest.flow)
        if type(waiting.key) is Branch:
            branch: Branch = waiting.key
            call = self.calls.get(branch.call_id)
            if call is None or branch.final is not None or branch.cancel_sent:
                return out
            if branch.cancel_pending:  # cancelled while its name was being resolved: never sent
                self._branch_final(call, branch, 487, None, now, out)
                return out
            branch.dest = dest
        if waiting.stateless:
            out.append(SendStateless(waiting.request, dest))
        else:
            out.append(SendRequest(waiting.request, dest, waiting.key))
        return out

    def on_timer(self, now: float) -> list[Action]:
        out: list[Action] = []
        heap = self._timers.heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._valid(entry):
                continue
            call = self.calls[entry[2]]
            kind = entry[3]
            if kind == _PLAN:
                call.plan_at = None
                if not call.done:
                    self._run(call, call.plan.on_timer(now), now, out)
            elif kind == _CANCEL:
                call.cancel_at = None
                self._end_cancelled(call, now, out)
            elif kind == _CUTOFF:
                # the CDR ends at the instant the money ran out, not a timer's lateness after it: the
                # price of a call cut at a prepaid balance or daily cap never passes what it was allowed
                at, call.cutoff_at = call.cutoff_at, None
                end = min(at, now) if at is not None and call.cutoff_reason == "prepaid_limit" else None
                self._cut_off(call, call.cutoff_reason, now, out, end=end)
            elif kind == _ACK:
                call.ack_at = None
                self._cut_off(call, "no_ack", now, out)
            elif kind == _ORPHAN:
                call.orphan_at = None
                self._orphaned(call, now, out)
            else:
                call.trunk_at = None
                self._give_up_trunks(call, now, out)
        return out

    # ---- timers ---------------------------------------------------------------------------------------
    def _valid(self, entry: tuple[float, int, str, int]) -> bool:
        call = self.calls.get(entry[2])
        if call is None:
            return False
        kind = entry[3]
        at = call.plan_at if kind == _PLAN else call.cancel_at if kind == _CANCEL else call.cutoff_at if kind == _CUTOFF else getattr(call, _DEADLINES[kind])  # fmt: skip
        return at == entry[0]

    @property
    def timers_set(self) -> int:
        """How many deadlines were set so far: the adapter re-reads ``next_deadline`` only when this
        moved (a deadline can come earlier only by being set)."""
        return self._timers.seq

    def _push(self, call: Call, when: float, kind: int) -> None:
        timers = self._timers
        timers.seq += 1
        heap = timers.heap
        heapq.heappush(heap, (when, timers.seq, call.call_id, kind))
        # Entries of ended calls or moved deadlines stay until they surface; a cut-off is hours away,
        # so compact once they far outnumber the live ones (amortised O(1) per push).
        if len(heap) > 1024 and len(heap) > 16 * (len(self.calls) + 1):
            timers.heap = [e for e in heap if self._valid(e)]
            heapq.heapify(timers.heap)

    def _arm_plan(self, call: Call) -> None:
        deadline = None if call.done else call.plan.next_deadline()
        if deadline != call.plan_at:
            call.plan_at = deadline
            if deadline is not None:
                self._push(call, deadline, _PLAN)

    # ---- new calls ----------------------------------------------------------------------------------
    def _on_invite(self, req: Request, flow: Flow, now: float, state: CallState, out: list[Action]) -> None:
        if self.draining is not None:  # shutting down: the caller tries again elsewhere or later
            out.append(Reply(req, flow, 503, "Shutting Down", (("Retry-After", str(self.draining)),)))
            return
        try:
            pre_process_route(req, self._is_me)
        except SipParseError as exc:
            out.append(Reply(req, flow, 400, exc.reason))
            return
        if self._looped(req):
            out.append(Reply(req, flow, 482, "Loop Detected"))
            return
        if req.call_id in self.calls:
            out.append(Reply(req, flow, 482, "Loop Detected"))  # spiral of a call we already route
            return
        trunk = self.trunk_for_source(*flow.remote)
        if trunk is not None:
            self._inbound(req, flow, trunk, now, state, out)
        else:
            self._outbound(req, flow, now, state, out)

    def _source_of(self, trunk: str | None) -> Source:
        """Who sent a request, for identity: a phone (no trunk), or a trusted or untrusted carrier."""
        if trunk is None:
            return Source.PHONE
        entry = self.settings.trunks.get(trunk)
        return Source.TRUSTED_PEER if entry is not None and entry.trusted else Source.UNTRUSTED_PEER

    def _is_me(self, uri: SipUri) -> bool:
        return self.is_local(uri.host, uri.port)

    def _looped(self, req: Request) -> bool:
        """A request that already went through us (one of our Via sent-by values) is a loop."""
        ours = self._ours
        return any(
            (v.host.lower(), v.port) in ours and (v.branch or "").startswith("z9hG4bK") for v in req.vias[1:]
        )

    def _outbound(self, req: Request, flow: Flow, now: float, state: CallState, out: list[Action]) -> None:
        """A call placed by a phone: authenticate, then route by the dialed digits."""
        auth = self.authenticate(req, flow.remote[0], now)
        if auth is None:
            return  # a banned source: dropped
        if isinstance(auth, AuthAnswer):
            out.append(Reply(req, flow, auth.status, auth.reason, auth.headers))
            return
        setup = self.setup
        caller = setup.find_user(auth.domain, auth.username)
        if caller is None:
            out.append(Reply(req, flow, 403, "Account not routable"))
            return
        ruri = req.ruri
        dialed = unquote(ruri.user) if isinstance(ruri, SipUri) and ruri.user else ""
        if not dialed:
            out.append(Reply(req, flow, 404, "No number dialed"))
            return
        by_name = setup.find_user(auth.domain, dialed) if any(c.isalpha() for c in dialed) else None
        if by_name is not None:  # sip:user@domain naming an account: the AOR itself, not digits
            decision = route_to_account(caller, by_name, dialed, state)
        else:
            decision = route_outgoing(setup, caller, dialed, state, self.authorise)
        kind = decision.kind
        base = dict(
            call_id=req.call_id, invite=req, flow=flow, caller_dest=_dest_of_flow(flow),
            caller_tag=req.from_tag or "", customer_id=caller.customer_id, account_id=caller.account_id,
            caller_number=caller.presented_number, dialed=dialed, normalised=decision.normalised or dialed,
            started=now,
        )  # fmt: skip
        if kind is DecisionKind.REFUSED:
            ref = decision.refusal
            assert ref is not None
            out.append(self._warning_reply(req, flow, ref.status, ref.reason, ref.warning))
            refused = Call(direction="outbound", plan=None, **base)  # type: ignore[arg-type]
            out.append(EndCall(_ended(refused, "refused", ref.status, None, now, ref.label)))
            return
        if kind is DecisionKind.FEATURE:
            if decision.change is None:
                out.append(Reply(req, flow, 501, "Feature code not supported"))
                return
            out.append(ChangeForwarding(decision.change))
            out.append(Reply(req, flow, 486, "Forwarding updated"))
            return
        if kind in (DecisionKind.INTERNAL, DecisionKind.ON_NET):
            callee = decision.callee
            assert callee is not None
            number = caller.presented_number if kind is DecisionKind.ON_NET else caller.extension
            plan: Any = plan_incoming(setup, callee, Caller(number, caller.display_name, caller.account_id),
                                      state, self.authorise)  # fmt: skip
            direction = "internal"
            did = decision.normalised if kind is DecisionKind.ON_NET else None
        else:
            assert decision.target is not None
            plan = DirectPlan(
                RingBranch(1, decision.target, decision.caller_id, rated=decision.rated,
                           billed_account_id=caller.account_id, max_duration=decision.max_duration,
                           hold_micros=decision.hold_micros)
            )  # fmt: skip
            # our media service is on-net (not rated, not sent to the rater as a number)
            direction = "internal" if isinstance(decision.target, MediaService) else "outbound"
            did = None
        asked = req.headers.get_all("p-preferred-identity")
        preferred = preferred_number(asked, own_numbers(setup, caller)) if asked else None
        call = Call(direction=direction, plan=plan, did=did, rated=decision.rated,
                    max_duration=decision.max_duration, caller_public=self._public_of(caller),
                    caller_extension=caller.extension, privacy=privacy_of(req.headers.get_all("privacy")),
                    preferred=preferred, **base)  # type: ignore[arg-type]  # fmt: skip
        self._begin(call, now, out, decision.admission)

    def _inbound(
        self, req: Request, flow: Flow, trunk: str, now: float, state: CallState, out: list[Action]
    ) -> None:
        """A call from the carrier to one of our DIDs (accepted by source address)."""
        ruri = req.ruri
        user = unquote(ruri.user) if isinstance(ruri, SipUri) and ruri.user else ""
        number = user if user.startswith("+") else "+" + user.lstrip("0")
        from_uri = req.from_.sip_uri
        caller_number = unquote(from_uri.user) if from_uri is not None and from_uri.user else "anonymous"
        plan = plan_did(self.setup, number, Caller(caller_number), state, self.authorise)
        if plan is None:
            out.append(Reply(req, flow, 404, "Number not assigned"))
            return
        did = self.setup.dids.get(number)
        source = self._source_of(trunk)
        call = Call(
            call_id=req.call_id, invite=req, flow=flow, caller_dest=_dest_of_flow(flow),
            caller_tag=req.from_tag or "", direction="inbound",
            customer_id=getattr(did, "customer_id", None), account_id=None, caller_number=caller_number,
            dialed=user, normalised=number, plan=plan, started=now, did=number,
            source=source, privacy=privacy_of(req.headers.get_all("privacy")),
        )  # fmt: skip
        self._begin(call, now, out)

    # ---- executing a plan ---------------------------------------------------------------------------
    def _begin(self, call: Call, now: float, out: list[Action], admission: Admission | None = None) -> None:
        self.calls[call.call_id] = call
        if admission is not None:  # counted by its admission (platform-wide, where hosts share counts)
            out.append(Admit(call.call_id, admission))
        elif call.account_id:
            out.append(CountCall(call.account_id, 1))
        self._run(call, call.plan.start(now), now, out)

    def _run(self, call: Call, actions: list[Any], now: float, out: list[Action]) -> None:
        queue = deque(actions)
        while queue:
            action = queue.popleft()
            kind = type(action)
            if kind is RingBranch:
                call.rings[action.branch_id] = action
                queue.extend(self._ring(call, action, now, out))
            elif kind is CancelBranch:
                self._cancel_branch(call, action.branch_id, out)
            elif kind is ConnectBranch:
                call.done = True
            elif kind is FailCall:
                call.done = True
                self._fail(call, action, now, out)
        if not call.ended:
            self._arm_plan(call)

    def _ring(self, call: Call, ring: RingBranch, now: float, out: list[Action]) -> list[Any]:
        """Start a plan branch; returns plan actions when it cannot even start (no contact)."""
        target = ring.target
        if ring.hold_micros > 0:  # held against the payer's daily caps until the call is settled
            payer = self.setup.accounts.get(ring.billed_account_id or "")
            if payer is not None:
                out.append(
                    Tally(hold_keys(payer.customer_id, payer.account_id), ring.hold_micros, call.call_id)
                )
                call.holds = (*call.holds, (payer.customer_id, payer.account_id, ring.hold_micros))
        if isinstance(target, AccountContacts):
            aor = self.settings.aor_of.get(target.account_id)
            if aor is not None:
                out.append(LookupContacts(call.call_id, ring.branch_id, aor))
                return []
            return call.plan.on_branch_event(ring.branch_id, BranchUnreachable(), now)
        if isinstance(target, TrunkNumber):
            return self._ring_trunk(call, ring, target, now, out)
        return self._ring_targets(call, ring, self._targets(target), now, out)

    # ---- trunks: the best available one, failing over to the next ---------------------------------
    def _ring_trunk(
        self, call: Call, ring: RingBranch, target: TrunkNumber, now: float, out: list[Action]
    ) -> list[Any]:
        trunks = self.settings.trunks
        choices = [c for c in target.choices if c.trunk in trunks]
        if choices and withholds(call.privacy):
            choices = [c for c in choices if trunks[c.trunk].anonymous_allowed]
            if not choices:  # RFC 5079: no trunk takes a call that withholds its identity
                event = BranchFailed(433, "Anonymity Disallowed")
                return call.plan.on_branch_event(ring.branch_id, event, now)
        down = self.down_trunks
        order = order_trunks(choices, {c.trunk for c in choices if c.trunk not in down}, self.draw)
        if not order:
            return call.plan.on_branch_event(ring.branch_id, BranchUnreachable(), now)
        subs: list[Branch] = []
        call.branches[ring.branch_id] = subs
        self._send_trunk(call, ring, order[0], order[1:], subs, now, out)
        return []

    def _send_trunk(self, call: Call, ring: RingBranch, name: str, left: tuple[str, ...],
                    subs: list[Branch], now: float, out: list[Action]) -> None:  # fmt: skip
        """The INVITE to one trunk: the number in its format, the caller shown by its rules."""
        trunk = self.settings.trunks[name]
        target: TrunkNumber = ring.target  # type: ignore[assignment]
        dest = trunk.dest
        number = format_number(target.number, trunk.number_format, trunk.country_code)
        host = f"[{dest.host}]" if ":" in dest.host else dest.host
        fwd = self._forwarded_invite(call, ring, f"sip:{number}@{host}:{dest.port}", dest, trunk,
                                     f"<sip:{number}@{host}>")  # fmt: skip
        branch = Branch(call.call_id, ring.branch_id, fwd, dest, trunk=name, trunks_left=left)
        if left:  # a trunk that says nothing at all (not even 100) is left for the next one
            branch.give_up_at = now + trunk.failover_timeout
            if call.trunk_at is None or branch.give_up_at < call.trunk_at:
                call.trunk_at = branch.give_up_at
                self._push(call, branch.give_up_at, _TRUNK)
        subs.append(branch)
        self._send(fwd, dest, branch, out)

    def _fail_over(self, call: Call, branch: Branch, status: int, now: float, out: list[Action]) -> bool:
        """Send the call to the branch's next trunk (it answered 5xx, 408, or nothing); False when
        there is none to try, or the call moved on."""
        ring = call.rings.get(branch.plan_branch)
        subs = call.branches.get(branch.plan_branch)
        if ring is None or subs is None or branch not in subs or call.cancelled or call.done:
            return False
        subs.remove(branch)
        nxt, rest = branch.trunks_left[0], branch.trunks_left[1:]
        out.append(TrunkFailover(call.call_id, branch.trunk or "", status, nxt))
        self._send_trunk(call, ring, nxt, rest, subs, now, out)
        return True

    def _give_up_trunks(self, call: Call, now: float, out: list[Action]) -> None:
        """Trunk branches that answered nothing within their trunk's ``failover_timeout``: 408, and
        the next trunk; branches through another host of ours silent past its ``answer_wait``: 408
        (that host is down). A late provisional answer from the one left behind is CANCELled."""
        if call.done or call.ended:
            return
        late = [b for subs in call.branches.values() for b in subs
                if b.give_up_at is not None and b.final is None and not b.provisional]  # fmt: skip
        for b in late:
            if b.give_up_at is not None and b.give_up_at <= now:
                b.cancel_pending = True
                if b.trunk is None:  # through another host of ours (_ring_targets): it is dead
                    out.append(PeerSilent(peer_name(b.dest.host, b.dest.port)))
                self._branch_final(call, b, 408, None, now, out)
        waiting = [b.give_up_at for subs in call.branches.values() for b in subs
                   if b.give_up_at is not None and b.final is None and not b.provisional]  # fmt: skip
        if waiting and not call.done and not call.ended:
            call.trunk_at = min(waiting)  # type: ignore[type-var]
            self._push(call, call.trunk_at, _TRUNK)

    def _ring_targets(
        self, call: Call, ring: RingBranch, contacts: list[Contact], now: float, out: list[Action]
    ) -> list[Any]:
        cluster = self.settings.cluster
        if cluster is not None and self.down_peers:  # no contact rung through a dead host of ours
            contacts = [c for c in contacts if not self._behind_dead_peer(c, cluster)]
        if not contacts:  # as when those branches are given up after answer_wait (408), at once
            return call.plan.on_branch_event(ring.branch_id, BranchUnreachable(), now)
        subs: list[Branch] = []
        call.branches[ring.branch_id] = subs
        for contact in contacts:
            fwd = self._forwarded_invite(call, ring, contact.uri, contact.dest, route=contact.route)
            branch = Branch(call.call_id, ring.branch_id, fwd, contact.dest)
            if cluster is not None and contact.route and cluster.is_peer(contact.dest.host):
                # through another host of ours: silent past answer_wait, it is down (_give_up_trunks)
                branch.give_up_at = now + cluster.answer_wait
                if call.trunk_at is None or branch.give_up_at < call.trunk_at:
                    call.trunk_at = branch.give_up_at
                    self._push(call, branch.give_up_at, _TRUNK)
            subs.append(branch)
            self._send(fwd, contact.dest, branch, out)
        return []

    def _behind_dead_peer(self, contact: Contact, cluster: ClusterRoute) -> bool:
        dest = contact.dest
        return (bool(contact.route) and cluster.is_peer(dest.host)
                and peer_name(dest.host, dest.port) in self.down_peers)  # fmt: skip

    def _targets(self, target: Any) -> list[Contact]:
        """Request-URI and destination of each thing to ring for a plan target (not an account)."""
        if isinstance(target, TrunkNumber):
            trunk = self.settings.trunks.get(target.trunk)
            if trunk is None:
                return []
            dest = trunk.dest
            return [Contact(f"sip:{target.number}@{dest.host}:{dest.port}", dest)]
        if isinstance(target, MediaService):
            uri = parse_uri(target.uri) if target.uri else None
            if not isinstance(uri, SipUri):
                return []
            port = uri.port or 5060
            dest = Destination("udp", strip_brackets(uri.host), port)
            return [Contact(f"sip:{target.user}@{uri.host}:{port}", dest)]
        if isinstance(target, TargetUri):
            uri = parse_uri(target.uri)
            if not isinstance(uri, SipUri):
                return []
            dest = Destination(uri.target_transport, strip_brackets(uri.host), uri.target_port)
            return [Contact(target.uri, dest)]
        return []

    def _hop_for(self, dest: Destination) -> Hop:
        hops = self.settings.hops
        return hops.get(dest.transport.upper()) or next(iter(hops.values()))

    def _to_trusted(self, target: Any) -> bool:
        """The next hop is in our trust domain: a trusted trunk, or our own media service."""
        if isinstance(target, TrunkNumber):
            trunk = self.settings.trunks.get(target.trunk)
            return trunk is not None and trunk.trusted
        return isinstance(target, MediaService)

    def _forwarded_invite(self, call: Call, ring: RingBranch, ruri: str, dest: Destination,
                          trunk: Trunk | None = None, to_value: str | None = None,
                          route: tuple[str, ...] = ()) -> Request:  # fmt: skip
        """``route``: the contact's registered Path (RFC 3327 §5.3), pushed on top of the Route set."""
        hop = self._hop_for(dest)
        inbound_hop = self._hop_for(call.caller_dest)
        rr = (hop.record_route(),) if hop == inbound_hop else (hop.record_route(), inbound_hop.record_route())
        headers: list[tuple[str, str]] = []
        shown = ring.caller_id
        if isinstance(ring.target, TrunkNumber):
            if not shown.startswith("+"):  # the carrier sees a public number, never an extension
                shown = self._public_number(call, ring, shown)
            if call.preferred and shown == call.caller_public:
                shown = call.preferred  # the phone chose another of its own numbers
            if (trunk is not None and trunk.caller_default and not shown.startswith("+")
                    and (call.source is Source.PHONE or shown != call.caller_number)):  # fmt: skip
                shown = trunk.caller_default  # our caller has no public number: the trunk's default
        shown_as = present(
            source=call.source, from_value=call.invite.headers.get("from"), original=call.caller_number,
            shown=shown or call.caller_number, display=ring.caller_display, host=hop.host,
            privacy=call.privacy, to_trusted=self._to_trusted(ring.target), policy=self.policy,
        )  # fmt: skip
        from_value, asserted = shown_as.from_value, shown_as.asserted
        if trunk is not None and trunk.caller_format != "e164" and shown.startswith("+"):
            fmt = format_number(shown, trunk.caller_format, trunk.country_code)
            from_value = _with_user(from_value or call.invite.headers.get("from"), shown, fmt)
            asserted = _with_user(asserted, shown, fmt)
        replace: tuple[tuple[str, str], ...] = (("from", from_value),) if from_value is not None else ()
        if to_value is not None:
            replace = (*replace, ("to", to_value))
        if route:
            replace = (*replace, ("route", ", ".join((*route, *call.invite.headers.get_all("route")))))
        if asserted is not None:
            headers.append(("P-Asserted-Identity", asserted))
        for d in ring.diversions:
            reason = d.reason.value if d.reason.value != "follow-me" else "unknown"
            headers.append(
                ("Diversion", f"<sip:{d.diverting_number}@{hop.host}>;reason={reason};counter={d.counter}")
            )
        return forward_request(call.invite, ruri, hop, record_route=rr, extra_headers=tuple(headers),
                               replace_headers=replace, remove=shown_as.remove)  # fmt: skip

    def _public_number(self, call: Call, ring: RingBranch, shown: str) -> str:
        """The public number behind an extension shown on an outside leg: the caller's, or the
        forwarding account's (``show_caller: account``)."""
        if shown == call.caller_extension:
            return call.caller_public or shown
        forwarder = self.setup.accounts.get(ring.billed_account_id or "")
        if forwarder is not None and shown == forwarder.extension:
            return self._public_of(forwarder) or shown
        return shown

    def _public_of(self, account: AccountRoute) -> str | None:
        """`identity.public_number`, memoised per configuration (it may walk the customer's DIDs)."""
        memo = self._public
        if account.account_id not in memo:
            memo[account.account_id] = public_number(self.setup, account)
        return memo[account.account_id]

    def _send(self, req: Request, dest: Destination, key: Branch | Relay | NotifyCopy | None,
              out: list[Action]) -> None:  # fmt: skip
        """Send through a client transaction, once the destination is an address."""
        if _is_address(dest.host):
            out.append(SendRequest(req, dest, key))
        else:
            out.append(ResolveHost(dest.host, _Waiting(req, dest, key)))

    def _cancel_branch(self, call: Call, plan_branch: int, out: list[Action]) -> None:
        subs = call.branches.get(plan_branch)
        if subs is None:  # its contacts are still being looked up: they will not be rung
            call.dropped.add(plan_branch)
            return
        for branch in subs:
            self._cancel_one(branch, out)

    def _cancel_one(self, branch: Branch, out: list[Action]) -> None:
        if branch.final is not None or branch.cancel_sent:
            return
        if branch.provisional:
            self._send_cancel(branch, out)
        else:
            branch.cancel_pending = True  # §9.1: CANCEL only once it has answered something

    @staticmethod
    def _send_cancel(branch: Branch, out: list[Action]) -> None:
        branch.cancel_pending = False
        if branch.cancel_sent:
            return
        branch.cancel_sent = True
        out.append(SendRequest(make_cancel(branch.request), branch.dest))

    def _fail(self, call: Call, action: FailCall, now: float, out: list[Action]) -> None:
        self._cancel_all(call, out)
        best = best_response(call.finals)
        if best is not None and best.status == action.status:
            resp = relay_response(best)
            if resp.status == 503:
                resp.status, resp.reason = 500, "Server Internal Error"
                resp.raw = None  # the received bytes no longer say what is sent: serialise anew
            out.append(Respond(call.invite, call.flow, resp))
        else:
            out.append(
                self._warning_reply(call.invite, call.flow, action.status, action.reason, action.warning)
            )
        self._finish(call, action.status, None, now, out)

    def _warning_reply(self, req: Request, flow: Flow, status: int, reason: str, warning: str) -> Reply:
        hops = self.settings.hops
        host = next(iter(hops.values())).host if hops else "sipcore"
        headers = (("Warning", f'399 {host} "{warning}"'),) if warning else ()
        return Reply(req, flow, status, reason, headers)

    # ---- responses on branches ---------------------------------------------------------------------
    def _branch_response(
        self, call: Call, branch: Branch, resp: Response, now: float, out: list[Action]
    ) -> None:
        status = resp.status
        if status < 200:
            branch.provisional = True
            if branch.cancel_pending:
                self._send_cancel(branch, out)
                return
            if status == 100 or call.done:
                return
            if status in (180, 183) and call.ringing_at is None:
                call.ringing_at = now
            out.append(Respond(call.invite, call.flow, relay_response(resp)))
            return
        if status < 300:
            branch.final = status
            branch.response = resp
            out.append(Respond(call.invite, call.flow, relay_response(resp)))
            if call.answered is None:
                self._answered(call, branch, resp, now, out)
            return
        if status in (401, 407) and not branch.auth_tried and self._trunk_auth(call, branch, resp, out):
            return
        self._branch_final(call, branch, status, resp, now, out)

    def _answered(self, call: Call, branch: Branch, resp: Response, now: float, out: list[Action]) -> None:
        call.cancel_at = None  # a 2xx crossed the caller's CANCEL: the call goes on
        call.answered = branch
        call.answered_at = now
        call.callee_tag = resp.to_tag
        call.callee_to = resp.headers.get("to")
        contacts = resp.headers.get_all("contact")
        call.callee_contact = contacts[0] if contacts else None
        ring = call.rings.get(branch.plan_branch)
        target = ring.target if ring is not None else None
        if isinstance(target, AccountContacts):
            call.callee_account_id = target.account_id
            out.append(CountCall(target.account_id, 1))
        if isinstance(target, TrunkNumber):
            call.normalised = target.number  # the number actually reached (a forward's target)
            if call.direction != "outbound":
                call.direction = "forwarded"  # an outside leg of a forwarded call: billed to the forwarder
                payer = self.setup.accounts.get(ring.billed_account_id or "") if ring is not None else None
                if payer is not None:
                    call.customer_id = payer.customer_id
        if isinstance(target, MediaService):
            call.normalised = target.user  # the CDR says which service and box: voicemail-acme-2001
        if ring is not None:
            call.billed_account_id = ring.billed_account_id
            call.rated = call.rated or ring.rated
            if ring.max_duration is not None:
                call.max_duration = ring.max_duration
        self._run(call, call.plan.on_branch_event(branch.plan_branch, BranchAnswered(), now), now, out)
        for subs in call.branches.values():  # §16.7 step 10: the first 2xx wins, the rest are CANCELled
            for other in subs:
                if other.final is None and other is not branch:
                    self._cancel_one(other, out)
        limit = self.settings.max_call_duration
        reason = "max_duration"
        if call.max_duration is not None and call.max_duration < limit:
            limit, reason = float(call.max_duration), "prepaid_limit"
        call.cutoff_at, call.cutoff_reason = now + limit, reason
        self._push(call, call.cutoff_at, _CUTOFF)
        # §13.3.1.4: a UAS gives up on a 2xx not ACKed within 64*T1; the dialog is dead then.
        call.ack_at = now + self.settings.ack_wait
        self._push(call, call.ack_at, _ACK)
        if not call.ended:
            out.append(CallAnswered(_record(call)))

    def _branch_final(
        self, call: Call, branch: Branch, status: int, resp: Response | None, now: float, out: list[Action]
    ) -> None:
        if branch.final is not None:
            return  # a branch left behind (failed over) answering late
        branch.final = status
        branch.response = resp
        if resp is not None and status != 487:
            call.finals.append(resp)
        if (
            branch.trunks_left
            and (status == 408 or 500 <= status < 600)
            and self._fail_over(call, branch, status, now, out)
        ):
            return  # 4xx and 6xx are answers about the number: final; 5xx and 408 are the trunk's
        if call.cancelled:
            if not call.pending():
                self._end_cancelled(call, now, out)
            return
        subs = call.branches.get(branch.plan_branch, [])
        if call.done or any(b.final is None or 200 <= b.final < 300 for b in subs):
            return
        finals = [(b.final or 500, b.response.reason if b.response is not None else "") for b in subs]
        event = branch_outcome(finals, any(b.provisional for b in subs))
        if event is not None:
            self._run(call, call.plan.on_branch_event(branch.plan_branch, event, now), now, out)

    def _trunk_auth(self, call: Call, branch: Branch, resp: Response, out: list[Action]) -> bool:
        """Answer the carrier's own 401/407 with the trunk's credentials (once per branch)."""
        ring = call.rings.get(branch.plan_branch)
        if ring is None or not isinstance(ring.target, TrunkNumber):
            return False
        trunk = self.settings.trunks.get(branch.trunk or ring.target.trunk)
        if trunk is None or not trunk.username:
            return False
        challenge = resp.headers.get("www-authenticate" if resp.status == 401 else "proxy-authenticate")
        if challenge is None:
            return False
        try:
            value = build_authorization(challenge, username=trunk.username, password=trunk.password or "",
                                        method="INVITE", uri=branch.request.uri)  # fmt: skip
        except Exception:
            return False
        fwd = branch.request.headers.copy()
        fwd.remove_first_value("via")
        fwd.add("via", self._hop_for(branch.dest).via(new_branch()), first=True)
        cseq, method = branch.request.cseq
        fwd.set("cseq", f"{cseq + 1} {method}")
        fwd.set("authorization" if resp.status == 401 else "proxy-authorization", value)
        new = Request(branch.request.method, branch.request.uri, fwd, branch.request.body)
        retry = Branch(call.call_id, branch.plan_branch, new, branch.dest, auth_tried=True, trunk=branch.trunk,
                       trunks_left=branch.trunks_left)  # fmt: skip
        branch.final = resp.status
        subs = call.branches[branch.plan_branch]
        subs[subs.index(branch)] = retry
        self._send(new, branch.dest, retry, out)
        return True

    def _stray(self, resp: Response, out: list[Action]) -> None:
        """Forward a response statelessly by its second Via, if the top one is ours."""
        try:
            vias = resp.vias
        except SipParseError:
            return
        if len(vias) < 2:
            return
        top = vias[0]
        if (top.host.lower(), top.port) not in self._ours:
            return
        up = relay_response(resp)
        via = up.top_via
        out.append(ForwardResponse(up, via.transport, response_destination(via)))

    # ---- transit: a peer host's request for a phone whose flow is ours (calls.cluster_route) -------
    def _transit(self, req: Request, flow: Flow, toward: Flow, out: list[Action]) -> None:
        """Relay a peer's out-of-dialog request over the phone's flow: no authentication, no call,
        no counting (the host where the call entered does all that). An INVITE gets our Record-Route
        with a token sealed for the caller's From tag, so the dialog's requests towards the phone come
        back through us and over the same flow."""
        try:
            pre_process_route(req, self._is_me)
            from_tag = req.from_tag
        except SipParseError as exc:
            out.append(Reply(req, flow, 400, exc.reason))
            return
        if self._looped(req):
            out.append(Reply(req, flow, 482, "Loop Detected"))
            return
        dest = _dest_of_flow(toward)
        hop = self._hop_for(dest)
        rr: tuple[str, ...] = ()
        invite = req.method == "INVITE"
        if invite:
            if not from_tag:
                out.append(Reply(req, flow, 400, "Missing From tag"))
                return
            own = record_route_with(hop, self._tokens.seal(toward, CALLER_TAG + from_tag))
            in_hop = self._hop_for(_dest_of_flow(flow))
            rr = (own,) if hop == in_hop else (own, in_hop.record_route())
        fwd = forward_request(req, req.uri, hop, record_route=rr,
                              remove=self.policy.for_source(Source.TRUSTED_PEER))  # fmt: skip
        relay = Relay(req, flow, None)
        if invite:
            self._transits[_transit_key(req)] = _Transit(relay, fwd, dest)
        out.append(Transit(req.method))
        self._send(fwd, dest, relay, out)

    def _transit_cancel(self, req: Request, flow: Flow, out: list[Action]) -> bool:
        """A peer's CANCEL of an INVITE in transit: 200, and CANCEL towards the phone once it has
        answered something (§9.1). False when no transit INVITE matches."""
        transit = self._transits.get(_transit_key(req))
        if transit is None or transit.relay.final or not _same_transaction(req, transit.relay.request):
            return False
        out.append(Reply(req, flow, 200))
        if transit.provisional:
            out.append(SendRequest(make_cancel(transit.request), transit.dest))
        else:
            transit.cancel_pending = True
        return True

    def _transit_answer(self, relay: Relay, status: int, out: list[Action]) -> None:
        """Track a transit INVITE's answers: a CANCEL waiting for a provisional goes now; forgotten at
        the final answer."""
        key = _transit_key(relay.request)
        transit = self._transits.get(key)
        if transit is None or transit.relay is not relay:
            return
        if status >= 200:
            del self._transits[key]
        elif not transit.provisional:
            transit.provisional = True
            if transit.cancel_pending:
                transit.cancel_pending = False
                out.append(SendRequest(make_cancel(transit.request), transit.dest))

    # ---- CANCEL and in-dialog requests ---------------------------------------------------------------
    def _on_cancel(self, req: Request, flow: Flow, now: float, out: list[Action]) -> None:
        """§16.10: 200 to the CANCEL, CANCEL every pending branch; the caller's INVITE is answered by
        what the branches answer (487, or a 2xx that crossed the CANCEL, which is relayed)."""
        call = self.calls.get(req.call_id)
        if call is None and self._transits and self._transit_cancel(req, flow, out):
            return
        if call is None or call.done or not _same_transaction(req, call.invite):
            out.append(Reply(req, flow, 481))
            return
        out.append(Reply(req, flow, 200))
        call.cancelled = True
        call.hangup_by = "caller"
        self._stop_ringing(call, now, out)

    def _stop_ringing(self, call: Call, now: float, out: list[Action]) -> None:
        """A cancelled call (by the caller or the operator): the plan stops, every branch is
        CANCELled, and the caller's INVITE is answered by what the branches answer (487, or a 2xx
        that crossed the CANCEL) — or 487 after the grace, since a branch that never answers its
        CANCEL must not hold the caller (no Timer C here)."""
        if not call.done:
            self._run(call, call.plan.cancel(), now, out)
        self._cancel_all(call, out)
        call.done = True
        call.plan_at = None
        if not call.pending():
            self._end_cancelled(call, now, out)
        elif call.cancel_at is None:
            call.cancel_at = now + self.settings.cancel_grace
            self._push(call, call.cancel_at, _CANCEL)

    def _cancel_all(self, call: Call, out: list[Action]) -> None:
        for subs in call.branches.values():
            for b in subs:
                self._cancel_one(b, out)

    def _end_cancelled(self, call: Call, now: float, out: list[Action]) -> None:
        if call.ended or call.answered is not None:
            return
        out.append(Reply(call.invite, call.flow, 487))
        self._finish(call, 487, call.hangup_by or "caller", now, out)

    def _in_dialog(self, req: Request, flow: Flow, now: float, out: list[Action]) -> None:
        toward = self._token_flow(req)  # read before our Route entries are removed
        try:
            pre_process_route(req, self._is_me)
        except SipParseError as exc:
            out.append(Reply(req, flow, 400, exc.reason))
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
            if call.orphan_at is not None:
                call.seen = now  # a restored call shows it is alive
        if dest is None and toward is not None:
            dest = _dest_of_flow(toward)  # to a subscribed phone: over its flow, not at its Contact
        if dest is None:
            hop_uri = next_hop(req)
            if hop_uri is None or self._is_me(hop_uri):
                if req.method != "ACK":
                    out.append(Reply(req, flow, 481))
                return
            dest = Destination(hop_uri.target_transport, strip_brackets(hop_uri.host), hop_uri.target_port)
        hop = self._hop_for(dest)
        remove = self.policy.for_source(self._source_of(self.trunk_for_source(*flow.remote)))
        if req.method == "ACK":
            if call is not None and call.ack_at is not None and from_tag == call.caller_tag:
                call.ack_at = None
            fwd = forward_request(req, req.uri, hop, branch=ack_branch(req.top_via.branch, req.call_id),
                                  remove=remove)  # fmt: skip
            if _is_address(dest.host):
                out.append(SendStateless(fwd, dest))
            else:
                out.append(ResolveHost(dest.host, _Waiting(fwd, dest, None, stateless=True)))
            return
        fwd = forward_request(req, req.uri, hop, remove=remove)
        self._send(fwd, dest, Relay(req, flow, call.call_id if call is not None else None), out)

    def _relay(self, relay: Relay, resp: Response, now: float, out: list[Action]) -> None:
        status = resp.status
        if relay.call_id is None and self._transits:
            self._transit_answer(relay, status, out)
        if status == 100:
            return
        request = relay.request
        if relay.final and not (request.method == "INVITE" and 200 <= status < 300):
            return  # only a re-INVITE's 2xx retransmissions go up again
        out.append(Respond(request, relay.flow, relay_response(resp)))
        if status >= 200 and not relay.final:
            relay.final = True
            call = self.calls.get(relay.call_id) if relay.call_id else None
            if request.method == "BYE" and call is not None:
                self._finish(call, 200, call.hangup_by, now, out)

    # ---- message waiting (RFC 6665 / RFC 3842; calls.subscriptions) --------------------------------
    def _on_subscribe(self, req: Request, flow: Flow, now: float, out: list[Action]) -> None:
        """A phone subscribes to its own mailbox's message summary: authenticated like a call, then
        forwarded to the media service's ``mailbox-<account>`` with our Record-Route carrying the
        phone's flow token, so the dialog's NOTIFYs come back through us and over that flow."""
        if event_package(req.headers.get("event")) != MWI_EVENT:
            out.append(Reply(req, flow, 489, "Bad Event", ALLOW_EVENTS))
            return
        try:
            pre_process_route(req, self._is_me)
            tag = req.from_tag
        except SipParseError as exc:
            out.append(Reply(req, flow, 400, exc.reason))
            return
        if not tag:
            out.append(Reply(req, flow, 400, "Missing From tag"))
            return
        if self._looped(req):
            out.append(Reply(req, flow, 482, "Loop Detected"))
            return
        if self.trunk_for_source(*flow.remote) is not None:
            out.append(Reply(req, flow, 403, "Subscriptions are for phones"))
            return
        auth = self.authenticate(req, flow.remote[0], now)
        if auth is None:
            return  # a banned source: dropped
        if isinstance(auth, AuthAnswer):
            out.append(Reply(req, flow, auth.status, auth.reason, auth.headers))
            return
        account = self.setup.find_user(auth.domain, auth.username)
        if account is None:
            out.append(Reply(req, flow, 403, "Account not routable"))
            return
        ruri = req.ruri
        user = unquote(ruri.user) if isinstance(ruri, SipUri) and ruri.user else ""
        if user not in (account.extension, account.sip_username, VOICEMAIL_CODE):
            out.append(Reply(req, flow, 403, "Not your mailbox"))
            return
        media = self._targets(MediaService(self.setup.media_uri, MAILBOX_SERVICE, mailbox=account.account_id))
        if not media:
            out.append(Reply(req, flow, 480, "No media service"))
            return
        target = media[0]
        hop = self._hop_for(target.dest)
        phone_hop = self._hop_for(_dest_of_flow(flow))
        own = record_route_with(phone_hop, self._tokens.seal(flow, tag))  # the entry facing the phone
        rr = (own,) if hop == phone_hop else (hop.record_route(), own)
        asserted = (("P-Asserted-Identity", f"<sip:{account.extension}@{auth.domain}>"),)  # media trusts us
        fwd = forward_request(req, target.uri, hop, record_route=rr, extra_headers=asserted,
                              remove=self.policy.credentials_and_identity)  # fmt: skip
        self._send(fwd, target.dest, Relay(req, flow, None), out)

    def _token_flow(self, req: Request) -> Flow | None:
        """The phone flow named by a flow token in our Route entries, when this request goes to that
        phone (its To tag is the one the token was sealed for); None otherwise."""
        fields = req.headers.get_fields("route")
        if not fields or not any("@" in f for f in fields):  # calls' Route entries carry no user part
            return None
        try:
            tag = req.to_tag
            if not tag:
                return None
            from_tag = req.from_tag
            for value in split_list(fields[0] if len(fields) == 1 else ",".join(fields))[:2]:
                uri = NameAddr.parse(value).uri
                if not isinstance(uri, SipUri) or not self._is_me(uri):
                    return None
                if uri.user:
                    token = unquote(uri.user)
                    found = self._tokens.open(token, tag)
                    if found is None and from_tag:  # a call we relayed in transit, towards its callee
                        found = self._tokens.open(token, CALLER_TAG + from_tag)
                    if found is not None:
                        return found
        except SipParseError:
            return None
        return None

    def _from_media(self, flow: Flow) -> bool:
        """Sent by our media service: its address and port (UDP), its address (TCP: any port)."""
        media = self._media
        if media is None or not same_host(media[0], flow.remote[0]):
            return False
        return flow.reliable or flow.remote[1] == media[1]

    def _on_unsolicited_notify(self, req: Request, flow: Flow, out: list[Action]) -> None:
        """The media service's message summary for phones that never subscribe (``NOTIFY
        sip:mailbox-<account>@us``, no To tag): every registered contact gets a copy once the
        contacts are known (``_notify_contacts``). Anyone else's out-of-dialog NOTIFY is refused."""
        if not self._from_media(flow):
            out.append(Reply(req, flow, 403, "Forbidden"))
            return
        if event_package(req.headers.get("event")) != MWI_EVENT:
            out.append(Reply(req, flow, 489, "Bad Event", ALLOW_EVENTS))
            return
        ruri = req.ruri
        user = unquote(ruri.user) if isinstance(ruri, SipUri) and ruri.user else ""
        service, _, key = user.partition("-")
        account_id = self._mailboxes.get(media_key(key)) if service == MAILBOX_SERVICE else None
        aor = self.settings.aor_of.get(account_id) if account_id else None
        if account_id is None or aor is None:
            out.append(Reply(req, flow, 404, "No such mailbox"))
            return
        self._notify_seq += 1
        self._notifies[self._notify_seq] = (req, flow, account_id, aor)
        out.append(LookupContacts(req.call_id, -self._notify_seq, aor))

    def _notify_contacts(self, seq: int, contacts: list[Contact], out: list[Action]) -> None:
        """Answer the media service at once (200, or 480 when nothing is registered) and send each
        contact its copy over its flow; the phones' answers stop here (``_notify_answered``)."""
        waiting = self._notifies.pop(seq, None)
        if waiting is None:
            return
        req, flow, account_id, aor = waiting
        if not contacts:
            out.append(Reply(req, flow, 480, "No registered contact"))
            return
        out.append(Reply(req, flow, 200))
        for contact in contacts:
            copy = notify_copy(req, contact.uri, aor, self._hop_for(contact.dest), contact.route)
            self._send(copy, contact.dest, NotifyCopy(account_id, contact.uri), out)

    @staticmethod
    def _notify_answered(key: NotifyCopy, status: int, local: bool, out: list[Action]) -> None:
        if not key.final:
            key.final = True
            out.append(NotifyAnswered(key.account_id, key.contact, status, local))

    # ---- shutting down (SIGTERM: the drain) ---------------------------------------------------------
    def start_draining(self, retry_after: int) -> None:
        """From now on every new call (a phone's or a trunk's initial INVITE) is answered 503 with
        ``Retry-After``; calls in progress, their in-dialog requests and subscriptions go on."""
        self.draining = max(1, int(retry_after))

    def end_all(self, now: float) -> list[Action]:
        """The drain's deadline: every call still here ends now, each with its EndCall. An answered
        call gets a BYE to both parties (as the cut-off, ended by ``system``); a call still being set
        up has its branches CANCELled and the caller answered 503."""
        out: list[Action] = []
        for call in list(self.calls.values()):
            if call.ended:
                continue
            if call.answered is not None:
                self._cut_off(call, "shutdown", now, out)
                continue
            if call.cancelled:  # the caller's CANCEL was answered: its INVITE gets its 487 now
                self._end_cancelled(call, now, out)
                continue
            self._cancel_all(call, out)
            call.done = True
            retry = (("Retry-After", str(self.draining or 1)),)
            out.append(Reply(call.invite, call.flow, 503, "Shutting Down", retry))
            call.hangup_by = "system"
            self._finish(call, 503, "system", now, out, "shutdown")
        return out

    # ---- cut-off and the end of a call -------------------------------------------------------------
    def _orphaned(self, call: Call, now: float, out: list[Action]) -> None:
        """A call restored after a crash that no request of has reached us for ``orphan_timeout``
        (re-armed from the last one seen): its BYE is lost or the parties are gone. BYE both ways;
        the CDR ends it at the last time it was known alive (the crashed process's last journal
        heartbeat, or the last request seen since), ``hangup_by`` ``orphan``."""
        timeout = self.settings.orphan_timeout
        if call.seen is not None and call.seen + timeout > now:
            call.orphan_at = call.seen + timeout
            self._push(call, call.orphan_at, _ORPHAN)
            return
        known = [t for t in (call.alive_until, call.seen, call.answered_at) if t is not None]
        self._cut_off(call, "orphan", now, out, "orphan", min(max(known), now))

    def _cut_off(
        self,
        call: Call,
        reason: str,
        now: float,
        out: list[Action],
        by: str = "system",
        end: float | None = None,
    ) -> None:
        """BYE both parties (prepaid limit reached, or a call nobody ended or ACKed); ``end``: the end
        time of the CDR when it is not now (an orphan's estimate)."""
        if call.ended or call.answered is None:
            return
        invite = call.invite
        from_value = invite.headers.get("from") or ""
        to_value = call.callee_to or invite.headers.get("to") or ""
        if call.callee_contact:
            cseq = call.caller_cseq + 1 if call.caller_cseq else invite.cseq[0] + 1
            bye = in_dialog_request("BYE", target_uri_of(call.callee_contact), from_value, to_value,
                                    call.call_id, cseq, self._hop_for(call.answered.dest))  # fmt: skip
            self._send(bye, call.answered.dest, None, out)
        caller_contacts = invite.headers.get_all("contact")
        if caller_contacts:
            cseq = call.callee_cseq + 1 if call.callee_cseq else 1
            bye = in_dialog_request("BYE", target_uri_of(caller_contacts[0]), to_value, from_value,
                                    call.call_id, cseq, self._hop_for(call.caller_dest))  # fmt: skip
            self._send(bye, call.caller_dest, None, out)
        call.hangup_by = by
        self._finish(call, 200, by, now, out, reason, end)

    def _finish(
        self,
        call: Call,
        status: int,
        hangup_by: str | None,
        now: float,
        out: list[Action],
        cutoff: str = "",
        end: float | None = None,
    ) -> None:
        if call.ended:
            return
        call.ended = call.done = True
        call.plan_at = call.cancel_at = call.cutoff_at = call.ack_at = call.trunk_at = call.orphan_at = None
        dispose = getattr(call.plan, "dispose", None)
        if dispose is not None:
            dispose()  # free the routing plan's graph now, not at the next cyclic collection
        if call.account_id:
            out.append(CountCall(call.account_id, -1))
        if call.callee_account_id:
            out.append(CountCall(call.callee_account_id, -1))
        self.calls.pop(call.call_id, None)
        answered = call.answered_at is not None
        disposition = "answered" if answered else disposition_for(status, call.cancelled)
        ended = _ended(call, disposition, 200 if answered else status, hangup_by or call.hangup_by,
                       now if end is None else end)  # fmt: skip
        out.append(EndCall(ended, cutoff))


def _record(call: Call) -> DialogRecord:
    """What an answered call needs to outlive a crash (calls.dialog_record)."""
    assert call.answered is not None and call.answered_at is not None and call.cutoff_at is not None
    invite = call.invite
    contacts = invite.headers.get_all("contact")
    return DialogRecord(
        call.call_id, call.caller_tag, call.callee_tag or "", call.direction, call.customer_id,
        call.account_id, call.billed_account_id, call.caller_number, call.dialed, call.normalised,
        call.callee_account_id, call.did, call.rated, call.started, call.answered_at, call.cutoff_at,
        call.cutoff_reason, call.caller_dest, call.answered.dest, invite.headers.get("from") or "",
        contacts[0] if contacts else None, invite.cseq[0], call.callee_to, call.callee_contact,
    )  # fmt: skip


def _ended(
    call: Call, disposition: str, status: int, hangup_by: str | None, now: float, reason: str = ""
) -> CallEnded:
    """The CallEnded facts of a call (finished, or refused before any branch rang), in the
    controller's clock (the adapter moves them to wall-clock time)."""
    return CallEnded(
        call_id=call.call_id, leg="0", direction=call.direction, customer_id=call.customer_id,
        account_id=call.account_id, billed_account_id=call.billed_account_id or call.account_id,
        caller=call.caller_number, dialed=call.dialed, normalised=call.normalised,
        callee_account_id=call.callee_account_id, did=call.did, start=call.started,
        answer=call.answered_at, end=now, disposition=disposition, sip_status=status,
        hangup_by=hangup_by, rated=call.rated, reason=reason, holds=call.holds,
    )  # fmt: skip


def _transit_key(req: Request) -> tuple[str, str]:
    """A transit INVITE and its CANCEL share Call-ID and top Via branch (§9.1)."""
    return req.call_id, req.top_via.branch or ""


def _dest_of_flow(flow: Flow) -> Destination:
    return Destination(flow.transport, flow.remote[0], flow.remote[1], flow)


def _same_transaction(cancel: Request, invite: Request) -> bool:
    """§9.2: a CANCEL matches the INVITE whose top Via branch it repeats."""
    try:
        return cancel.top_via.branch == invite.top_via.branch
    except SipParseError:
        return False


@lru_cache(maxsize=4096)
def _is_address(host: str) -> bool:
    """An IP literal (sent to as is), not a name to resolve first."""
    try:
        ipaddress.ip_address(strip_brackets(host))
    except ValueError:
        return False
    return True


def _with_user(value: str | None, old: str, new: str) -> str | None:
    """``value`` (a From or P-Asserted-Identity) with the user ``old`` of its SIP URI written ``new``."""
    if value is None:
        return None
    return value.replace(f"sip:{old}@", f"sip:{new}@", 1)
