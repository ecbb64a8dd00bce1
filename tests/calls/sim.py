"""An in-memory network for whole call flows: phones and a carrier as plain objects, the call
controller with the real transaction layer between them, messages serialised and parsed again as on
the wire, and a clock that only moves when a test advances it. No sockets, no sleeping.

``Sim`` is a small adapter (what ``server/proxy_service.py`` does over sockets): it performs the
controller's actions, answers contact lookups and DNS from tables (at once, or when the test says),
keeps account state and collects every ``CallEnded`` (and each message-waiting copy's fate).
"""

from __future__ import annotations

import secrets
import textwrap
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calls.actions import (
    Action,
    Admit,
    ChangeForwarding,
    CountCall,
    EndCall,
    ForwardResponse,
    LookupContacts,
    NotifyAnswered,
    Reply,
    ResolveHost,
    Respond,
    SendRequest,
    SendStateless,
)
from calls.call_ended import CallEnded
from calls.controller import AuthAnswer, Authenticated, CallController, CallSettings
from calls.model import Contact, Destination
from config.bridge import routing_setup
from config.loader import load_config
from routing import Authorisation, AuthoriseRequest, CallState, MemoryForwardingStore, allow_all
from server.account_state import LocalAccountState
from server.proxy_service import trunks_of
from sipcore.digest import parse_authorization
from sipcore.flow import Flow
from sipcore.message import Request, Response, parse
from sipcore.proxy import Hop
from sipcore.transaction import (
    RequestReceived,
    ResponseReceived,
    SendMessage,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)

Address = tuple[str, int]
PROXY: Address = ("192.0.2.1", 5060)
CARRIER: Address = ("192.0.2.2", 5060)
MEDIA: Address = ("192.0.2.3", 5080)
DOMAIN = "demo.sim"
REALM = "demo.sim"

CONFIG = """\
default_domain: demo.sim
server: {{listen: {{udp: ["192.0.2.1:5060"]}}, metrics: null, state_dir: {state}}}
registrar: {{realm: demo.sim, nonce_secret: sim-tests-secret-0123456789}}
proxy:
  max_call_duration: {max_call_duration}
  no_answer_timeout: 20
  max_forward_hops: 5
  outbound_trunk: carrier
  media_service: 192.0.2.3:5080
trunks:
  carrier:
    address: carrier.sim:5060
    transport: udp
    username: trunkuser
    password: trunkpw
    inbound_sources: [192.0.2.2]
rating:
  rate_tables: {{t: rates.csv}}
  packages:
    p: {{rate_table: t, markup: {{fixed: 0, percent: 0}}, pulse: 60}}
customers:
  - id: demo
    name: Demo SARL
    reference: CUST-0001
    country: FR
    domains: [demo.sim]
    default_package: p
    dids:
      - {{number: "+33184000001", to: "1001"}}
      - {{number: "+33184000002", to: "group:sales"}}
      - {{number: "+33184000003", to: "group:desk"}}
    groups:
      sales: {{strategy: parallel, members: [{{extension: "1002"}}, {{extension: "1003"}}]}}
      desk: {{strategy: sequential, members: [{{extension: "1002", ring_time: 5}}, {{extension: "1003"}}]}}
    accounts:
      - {{extension: "1001", username: "1001", password: pw1001, outgoing_number: "+33184000001"}}
      - {{extension: "1002", username: "1002", password: pw1002}}
      - {{extension: "1003", username: "1003", password: pw1003}}
      - {{extension: "1004", username: "1004", password: pw1004, forwarding: {{busy: {{to: "1005"}}}}}}
      - {{extension: "1005", username: "1005", password: pw1005}}
      - {{extension: "1006", username: "1006", password: pw1006,
         forwarding: {{no_answer: {{delay: 3, targets: [{{to: "1005", ring_time: 10}}]}}}}}}
      - {{extension: "1007", username: "1007", password: pw1007, forwarding: {{unreachable: {{to: "1005"}}}}}}
      - {{extension: "1008", username: "1008", password: pw1008,
         follow_me: {{destinations: [{{to: "1002", ring_time: 4}}, {{to: "1003", delay: 2, ring_time: 10}}]}}}}
      - {{extension: "1009", username: "1009", password: pw1009, voicemail: true,
         forwarding: {{no_answer: {{delay: 2, voicemail: true}}}}}}
      - {{extension: "1010", username: "1010", password: pw1010, forwarding: {{permanent: {{to: "0612345678"}}}}}}
      - {{extension: "1011", username: "1011", password: pw1011, call_waiting: false}}
      - {{extension: "1012", username: "1012", password: pw1012, max_calls: 1}}
      - {{extension: "1013", username: reception, password: pwreception}}
"""
RATES = "prefix,destination,category,cost_per_minute\n+336,France mobile,mobile,0.02\n+331,France fixed,fixed,0.01\n"


def write_config(directory: Path, max_call_duration: float = 3600) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rates.csv").write_text(RATES, encoding="utf-8")
    path = directory / "sim.yaml"
    text = CONFIG.format(state=directory / "state", max_call_duration=max_call_duration)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


class Sim:
    """The controller, the transaction layer and the parties, on one simulated clock."""

    def __init__(
        self,
        directory: Path,
        *,
        max_call_duration: float = 3600,
        authorise: Callable[[AuthoriseRequest], Authorisation] = allow_all,
    ) -> None:
        cfg = load_config(str(write_config(directory, max_call_duration)))
        accounts = cfg.customers_by_id["demo"].accounts
        aor_of = {f"demo/{a.extension}": f"sip:{a.username}@{DOMAIN}" for a in accounts}
        self.settings = CallSettings(
            setup=routing_setup(cfg),
            trunks=trunks_of(cfg),
            aor_of=aor_of,
            hops={"UDP": Hop("UDP", *PROXY)},
            realms=frozenset({REALM}),
            flow_key=b"sim-flow-key",
            max_call_duration=float(max_call_duration),
        )
        self.controller = CallController(self.settings, self.authenticate, authorise, self.is_local)
        self.txl = TransactionLayer()
        self.now = 1000.0
        self.accounts = LocalAccountState(MemoryForwardingStore())
        self.parties: dict[Address, Party] = {}
        self.contacts: dict[str, list[Contact]] = {}
        self.dns: dict[str, str] = {"carrier.sim": CARRIER[0]}
        self.hold_lookups = False  # True: lookups and DNS wait for release()
        self.held: list[LookupContacts | ResolveHost] = []
        self.keys: dict[Any, Any] = {}
        self.ended: list[CallEnded] = []
        self.notified: list[NotifyAnswered] = []  # the fate of each unsolicited NOTIFY copy
        self.wire: deque[tuple[Address, Address, bytes]] = deque()  # (to, from, bytes)
        self.log: list[tuple[Address, Address, Request | Response]] = []
        self.performed: list[Action] = []  # every action the controller asked for, in order

    # ---- the proxy's surroundings ---------------------------------------------------------------------
    @staticmethod
    def is_local(host: str, port: int | None) -> bool:
        return host in (PROXY[0], DOMAIN) and port in (None, PROXY[1])

    @staticmethod
    def authenticate(req: Request, ip: str, now: float) -> Authenticated | AuthAnswer | None:
        """Digest is tested elsewhere: here a Proxy-Authorization naming the user is enough."""
        value = req.headers.get("proxy-authorization")
        if value is None:
            return AuthAnswer(407, None, (("Proxy-Authenticate", f'Digest realm="{REALM}", nonce="n1"'),))
        return Authenticated(DOMAIN, parse_authorization(value)["username"])

    def state(self) -> CallState:
        def registered(account_id: str) -> bool:
            return bool(self.contacts.get(self.settings.aor_of.get(account_id, "")))

        return CallState(registered, self.accounts.calls_of, self.accounts.overrides())

    def register(self, party: Party) -> None:
        aor = f"sip:{party.user}@{DOMAIN}"
        uri = party.contact[1:-1]  # its Contact (maybe a private address); reached over its flow
        flow = Flow("udp", party.addr, PROXY)
        contact = Contact(uri, Destination("udp", *party.addr, flow))
        self.contacts.setdefault(aor, []).append(contact)

    def release(self) -> None:
        """Answer the lookups and resolutions held back so far."""
        held, self.held = self.held, []
        for action in held:
            self._answer(action)
        self.run()

    # ---- the adapter -------------------------------------------------------------------------------
    def perform(self, actions: list[Action]) -> None:
        self.performed.extend(actions)
        for a in actions:
            kind = type(a)
            if kind is SendRequest:
                txn, outs = self.txl.send_request(a.request, a.dest, self.now, reliable=False)
                if a.key is not None:
                    self.keys[txn] = a.key
                self.outputs(outs)
            elif kind is SendStateless:
                self.transmit(a.request, (a.dest.host, a.dest.port))
            elif kind is Reply:
                tag = "p" + secrets.token_hex(3)
                self.respond(a.request, a.request.make_response(a.status, a.reason, tag, a.headers), a.flow)
            elif kind is Respond:
                self.respond(a.request, a.response, a.flow)
            elif kind is ForwardResponse:
                self.transmit(a.response, a.address)
            elif kind is LookupContacts or kind is ResolveHost:
                if self.hold_lookups:
                    self.held.append(a)
                else:
                    self._answer(a)
            elif kind is CountCall:
                (self.accounts.call_started if a.delta > 0 else self.accounts.call_ended)(a.account_id)
            elif kind is Admit:
                self.accounts.call_started(a.admission.account_id)
            elif kind is ChangeForwarding:
                self.accounts.apply_forwarding(a.change)
            elif kind is EndCall:
                self.ended.append(a.ended)
            elif kind is NotifyAnswered:
                self.notified.append(a)

    def _answer(self, action: LookupContacts | ResolveHost) -> None:
        if type(action) is LookupContacts:
            self.perform(
                self.controller.on_contacts(action, list(self.contacts.get(action.aor, [])), self.now)
            )
        else:
            self.perform(self.controller.on_resolved(action, self.dns.get(action.host), self.now))

    def respond(self, req: Request, resp: Response, flow: Flow) -> None:
        txn = req._cache.get("txn")
        if txn is not None:
            self.outputs(self.txl.send_response(resp, self.now, txn))  # type: ignore[arg-type]
        else:
            self.transmit(resp, flow.remote)

    def outputs(self, outs: list[Any]) -> None:
        for out in outs:
            kind = type(out)
            if kind is SendMessage:
                dest = out.destination
                addr = dest.remote if isinstance(dest, Flow) else (dest.host, dest.port)
                self.transmit(out.message, addr)
            elif kind is RequestReceived:
                if out.transaction is not None:
                    out.request._cache["txn"] = out.transaction
                self.perform(self.controller.on_request(out.request, out.source, self.now, self.state()))
            elif kind is ResponseReceived:
                key = self.keys.get(out.transaction) if out.transaction is not None else None
                if key is not None:
                    self.perform(self.controller.on_response(key, out.response, self.now))
                elif out.transaction is None:
                    self.perform(self.controller.on_stray_response(out.response))
            elif kind is TransactionTimedOut or kind is TransportFailed:
                key = self.keys.get(out.transaction)
                if key is not None:
                    status = 408 if kind is TransactionTimedOut else 503
                    self.perform(self.controller.on_failure(key, status, self.now))
            elif kind is TransactionTerminated:
                self.keys.pop(out.transaction, None)

    def transmit(self, msg: Request | Response, to: Address, source: Address = PROXY) -> None:
        self.wire.append((to, source, msg.serialize()))

    # ---- the network and the clock --------------------------------------------------------------------
    def run(self) -> None:
        """Deliver everything in flight (and what it causes) at the current time."""
        while self.wire:
            to, source, data = self.wire.popleft()
            msg = parse(data)
            if to == PROXY:
                if isinstance(msg, Request):
                    self.outputs(self.txl.on_request(msg, Flow("udp", source, PROXY), self.now))
                else:
                    self.outputs(self.txl.on_response(msg, self.now))
            else:
                self.log.append((to, source, msg))
                party = self.parties.get(to)
                if party is not None:
                    party.receive(msg)

    def advance(self, seconds: float) -> None:
        """Move the clock, firing every timer (transactions, calls, parties) on its way, in order."""
        target = self.now + seconds
        self.run()
        while True:
            due = [d for d in (self.txl.next_deadline(), self.controller.next_deadline()) if d is not None]
            due += [p.next_due() for p in self.parties.values() if p.next_due() is not None]  # type: ignore[misc]
            when = min(due, default=None)
            if when is None or when > target:
                break
            self.now = max(self.now, when)
            self.outputs(self.txl.on_timer(self.now))
            self.perform(self.controller.on_timer(self.now))
            for p in list(self.parties.values()):
                p.on_timer(self.now)
            self.run()
        self.now = target
        self.run()


@dataclass
class Dialog:
    call_id: str
    from_tag: str
    dialed: str
    cseq: int = 1
    branch: str = ""
    to_header: str = ""
    route_set: list[str] = field(default_factory=list)
    remote_target: str = ""
    auth: str = ""
    from_header: str = ""
    method: str = "INVITE"  # what opened the dialog: INVITE, or SUBSCRIBE (then ``event`` is its package)
    event: str = ""


class Party:
    """A phone or a carrier: answers INVITEs by its ``mode`` (answer after ``answer_after`` s, ring,
    busy, decline, silent, challenge), answers BYE / CANCEL / re-INVITE, and places calls."""

    def __init__(self, sim: Sim, user: str, addr: Address, mode: str = "answer", answer_after: float = 0.0):
        self.sim, self.user, self.addr, self.mode, self.answer_after = sim, user, addr, mode, answer_after
        self.received: list[Request | Response] = []
        self._later: list[tuple[float, Callable[[], None]]] = []
        self.invites: dict[str, Request] = {}  # call id -> the INVITE being answered
        self.answered: set[str] = set()
        self.dialogs: dict[str, Dialog] = {}  # calls (and subscriptions) it placed
        self.subscriptions: dict[
            str, Request
        ] = {}  # call id -> a SUBSCRIBE it accepted (as the media service)
        self.contact_host: Address | None = None  # the private address its Contact names (behind NAT)
        self.auto_ack = True
        sim.parties[addr] = self

    # ---- what it received
    def requests(self, method: str) -> list[Request]:
        return [m for m in self.received if isinstance(m, Request) and m.method == method]

    def responses(self, call_id: str | None = None) -> list[Response]:
        return [m for m in self.received if isinstance(m, Response) and call_id in (None, m.call_id)]

    def statuses(self, call_id: str | None = None) -> list[int]:
        return [r.status for r in self.responses(call_id) if r.cseq[1] == "INVITE"]

    # ---- timers
    def next_due(self) -> float | None:
        return min((t for t, _ in self._later), default=None)

    def on_timer(self, now: float) -> None:
        due = [(t, f) for t, f in self._later if t <= now]
        self._later = [(t, f) for t, f in self._later if t > now]
        for _, f in sorted(due, key=lambda x: x[0]):
            f()

    def send(self, msg: Request | Response) -> None:
        self.sim.transmit(msg, PROXY, self.addr)

    # ---- as a callee
    def receive(self, msg: Request | Response) -> None:
        self.received.append(msg)
        if isinstance(msg, Response):
            self.on_response(msg)
            return
        method = msg.method
        if method == "INVITE" and msg.to_tag is not None:
            self.send(msg.make_response(200, None, None, (("Contact", self.contact),)))  # re-INVITE
        elif method == "INVITE":
            self.on_invite(msg)
        elif method == "SUBSCRIBE":  # as the media service: accept, the dialog is ours from now on
            self.subscriptions[msg.call_id] = msg
            rr = tuple(("Record-Route", v) for v in msg.headers.get_all("record-route"))  # §12.1.1
            extra = (*rr, ("Contact", self.contact), ("Expires", msg.headers.get("expires") or "3600"))
            self.send(msg.make_response(200, None, self.tag, extra))
        elif method == "CANCEL":
            self.send(msg.make_response(200))
            invite = self.invites.get(msg.call_id)
            if invite is not None and msg.call_id not in self.answered:
                self.answered.add(msg.call_id)
                self.send(invite.make_response(487, None, self.tag))
        elif method in ("BYE", "INFO", "OPTIONS", "UPDATE", "NOTIFY"):
            self.send(msg.make_response(200))

    @property
    def tag(self) -> str:
        return "t" + self.user

    @property
    def contact(self) -> str:
        host, port = self.contact_host or self.addr
        return f"<sip:{self.user}@{host}:{port}>"

    def on_invite(self, req: Request) -> None:
        mode = self.mode
        if mode == "silent":
            return
        if mode == "challenge" and req.headers.get("proxy-authorization") is None:
            self.send(req.make_response(407, None, self.tag, (("Proxy-Authenticate",
                      'Digest realm="carrier", nonce="c1", qop="auth"'),)))  # fmt: skip
            return
        if mode == "challenge401" and req.headers.get("authorization") is None:
            self.send(req.make_response(401, None, self.tag, (("WWW-Authenticate",
                      'Digest realm="carrier", nonce="c2"'),)))  # fmt: skip
            return
        if mode in ("busy", "decline", "unavailable"):
            status = {"busy": 486, "decline": 603, "unavailable": 480}[mode]
            self.send(req.make_response(status, None, self.tag))
            return
        self.invites[req.call_id] = req
        self.send(req.make_response(180, None, self.tag, (("Contact", self.contact),)))
        if mode in ("answer", "challenge", "challenge401"):
            self.later(self.answer_after, lambda: self.answer(req.call_id))

    def answer(self, call_id: str) -> None:
        req = self.invites.get(call_id)
        if req is None or call_id in self.answered:
            return
        self.answered.add(call_id)
        self.send(req.make_response(200, None, self.tag, (("Contact", self.contact),)))

    def later(self, delay: float, f: Callable[[], None]) -> None:
        if delay <= 0:
            f()
        else:
            self._later.append((self.sim.now + delay, f))

    # ---- as a caller
    def call(self, dialed: str, extra: str = "") -> Dialog:
        """INVITE through the proxy; the 407 is ACKed and answered with credentials (on_response)."""
        dlg = Dialog(secrets.token_hex(6), secrets.token_hex(3), dialed)
        dlg.auth = extra
        self.dialogs[dlg.call_id] = dlg
        self._invite(dlg)
        return dlg

    def _invite(self, dlg: Dialog) -> None:
        dlg.branch = "z9hG4bK" + secrets.token_hex(6)
        text = (
            f"INVITE sip:{dlg.dialed}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {self.addr[0]}:{self.addr[1]};"
            f"branch={dlg.branch}\r\nMax-Forwards: 70\r\nFrom: <sip:{self.user}@{DOMAIN}>;tag={dlg.from_tag}\r\n"
            f"To: <sip:{dlg.dialed}@{DOMAIN}>\r\nCall-ID: {dlg.call_id}\r\nCSeq: {dlg.cseq} INVITE\r\n"
            f"Contact: {self.contact}\r\n{dlg.auth}Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
        )
        self.send(parse(text.encode()))

    def on_response(self, resp: Response) -> None:
        dlg = self.dialogs.get(resp.call_id)
        if dlg is None or resp.cseq[1] != dlg.method:
            return
        invite = dlg.method == "INVITE"
        if resp.status == 407 and "Proxy-Authorization" not in dlg.auth:
            if invite:
                self._ack(dlg, resp)
            dlg.cseq += 1
            dlg.auth = (
                f'Proxy-Authorization: Digest username="{self.user}", realm="{REALM}", nonce="n1"\r\n'
                + dlg.auth
            )
            (self._invite if invite else self._subscribe)(dlg)
        elif 200 <= resp.status < 300 and not dlg.to_header:
            dlg.to_header = resp.headers.get("to") or ""
            dlg.route_set = list(reversed(resp.headers.get_all("record-route")))
            contact = resp.headers.get("contact") or ""
            dlg.remote_target = contact[contact.index("<") + 1 : contact.index(">")]
            if invite and self.auto_ack:
                self.in_dialog(dlg, "ACK", dlg.cseq)
        elif resp.status >= 300 and invite:
            self._ack(dlg, resp)

    # ---- message waiting: as a phone, and as the media service
    def subscribe(self, user: str, event: str = "message-summary", auth: bool = False) -> Dialog:
        """SUBSCRIBE sip:<user>@domain out of dialog; a 407 is answered with credentials."""
        dlg = Dialog(secrets.token_hex(6), secrets.token_hex(3), user, method="SUBSCRIBE", event=event)
        if auth:
            dlg.auth = f'Proxy-Authorization: Digest username="{self.user}", realm="{REALM}", nonce="n1"\r\n'
        self.dialogs[dlg.call_id] = dlg
        self._subscribe(dlg)
        return dlg

    def _subscribe(self, dlg: Dialog) -> None:
        dlg.branch = "z9hG4bK" + secrets.token_hex(6)
        text = (
            f"SUBSCRIBE sip:{dlg.dialed}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {self.addr[0]}:{self.addr[1]};"
            f"branch={dlg.branch}\r\nMax-Forwards: 70\r\nFrom: <sip:{self.user}@{DOMAIN}>;tag={dlg.from_tag}\r\n"
            f"To: <sip:{dlg.dialed}@{DOMAIN}>\r\nCall-ID: {dlg.call_id}\r\nCSeq: {dlg.cseq} SUBSCRIBE\r\n"
            f"Contact: {self.contact}\r\nEvent: {dlg.event}\r\nExpires: 3600\r\n{dlg.auth}Content-Length: 0\r\n\r\n"
        )
        self.send(parse(text.encode()))

    def notify(self, call_id: str, body: str = "Messages-Waiting: yes\r\n") -> None:
        """As the media service: a NOTIFY in the dialog of the SUBSCRIBE it accepted (UAS route set:
        the Record-Route values in order; to the subscriber's Contact)."""
        sub = self.subscriptions[call_id]
        routes = "".join(f"Route: {r}\r\n" for r in sub.headers.get_all("record-route"))
        contact = sub.headers.get("contact") or ""
        text = (
            f"NOTIFY {contact[contact.index('<') + 1 : contact.index('>')]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.addr[0]}:{self.addr[1]};branch=z9hG4bK{secrets.token_hex(6)}\r\n{routes}"
            f"Max-Forwards: 70\r\nFrom: {sub.headers.get('to')};tag={self.tag}\r\nTo: {sub.headers.get('from')}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 NOTIFY\r\nContact: {self.contact}\r\nEvent: message-summary\r\n"
            "Subscription-State: active;expires=3600\r\nContent-Type: application/simple-message-summary\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        self.send(parse(text.encode()))

    def _ack(self, dlg: Dialog, resp: Response) -> None:
        text = (
            f"ACK sip:{dlg.dialed}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {self.addr[0]}:{self.addr[1]};"
            f"branch={dlg.branch}\r\nMax-Forwards: 70\r\nFrom: <sip:{self.user}@{DOMAIN}>;tag={dlg.from_tag}\r\n"
            f"To: {resp.headers.get('to')}\r\nCall-ID: {dlg.call_id}\r\nCSeq: {dlg.cseq} ACK\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        self.send(parse(text.encode()))

    def callee_dialog(self, call_id: str) -> Dialog:
        """Its side of a call it answered: to send BYE (or INFO) to the caller through the proxy."""
        invite = self.invites[call_id]
        contact = invite.headers.get("contact") or ""
        dlg = Dialog(call_id, self.tag, "", cseq=100, to_header=invite.headers.get("from") or "")
        dlg.route_set = invite.headers.get_all("record-route")
        dlg.remote_target = contact[contact.index("<") + 1 : contact.index(">")]
        dlg.from_header = f"{invite.headers.get('to')};tag={self.tag}"
        return dlg

    def in_dialog(self, dlg: Dialog, method: str, cseq: int | None = None, extra: str = "") -> None:
        if cseq is None:
            dlg.cseq += 1
            cseq = dlg.cseq
        routes = "".join(f"Route: {r}\r\n" for r in dlg.route_set)
        text = (
            f"{method} {dlg.remote_target} SIP/2.0\r\nVia: SIP/2.0/UDP {self.addr[0]}:{self.addr[1]};"
            f"branch=z9hG4bK{secrets.token_hex(6)}\r\n{routes}Max-Forwards: 70\r\n"
            f"From: {dlg.from_header or f'<sip:{self.user}@{DOMAIN}>;tag={dlg.from_tag}'}\r\nTo: {dlg.to_header}\r\n"
            f"Call-ID: {dlg.call_id}\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        self.send(parse(text.encode()))

    def cancel(self, dlg: Dialog) -> None:
        text = (
            f"CANCEL sip:{dlg.dialed}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {self.addr[0]}:{self.addr[1]};"
            f"branch={dlg.branch}\r\nMax-Forwards: 70\r\nFrom: <sip:{self.user}@{DOMAIN}>;tag={dlg.from_tag}\r\n"
            f"To: <sip:{dlg.dialed}@{DOMAIN}>\r\nCall-ID: {dlg.call_id}\r\nCSeq: {dlg.cseq} CANCEL\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        self.send(parse(text.encode()))


def carrier_invite(carrier: Party, did: str, caller: str) -> Dialog:
    """An INVITE from the carrier to one of our DIDs (accepted by its source address)."""
    dlg = Dialog(secrets.token_hex(6), secrets.token_hex(3), did, branch="z9hG4bK" + secrets.token_hex(6))
    carrier.dialogs[dlg.call_id] = dlg
    text = (
        f"INVITE sip:{did}@{PROXY[0]}:{PROXY[1]} SIP/2.0\r\nVia: SIP/2.0/UDP {carrier.addr[0]}:{carrier.addr[1]};"
        f"branch={dlg.branch}\r\nMax-Forwards: 70\r\nFrom: <sip:{caller}@carrier.sim>;tag={dlg.from_tag}\r\n"
        f"To: <sip:{did}@{PROXY[0]}>\r\nCall-ID: {dlg.call_id}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:{caller}@{carrier.addr[0]}:{carrier.addr[1]}>\r\nContent-Length: 0\r\n\r\n"
    )
    carrier.send(parse(text.encode()))
    return dlg
