"""The SIP server process core: bytes in from the transports, checks, dispatch to the registrar and the
proxy, responses out per RFC 3261 §18.2.2.

No input may raise out of here: every message is parsed inside a guard; malformed requests get a 400
(or the status the error carries) when a response can be routed, and are dropped and counted otherwise.
"""

from __future__ import annotations

import asyncio
import math
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from sipcore.checks import (
    SUPPORTED_OPTIONS,
    check_max_forwards,
    check_proxy_require,
    check_require,
    check_scheme,
)
from sipcore.errors import SipError, SipParseError
from sipcore.flow import Flow, response_destination, stamp_via, strip_brackets
from sipcore.framing import FramingFailed
from sipcore.message import (
    STATELESS_TAG,
    Message,
    Request,
    Response,
    error_response,
    parse,
    stable_tag,
    validate_request,
    validate_response,
)
from sipcore.transaction import (
    Output,
    RequestReceived,
    SendMessage,
    TableFull,
    TransactionLayer,
    TransactionNotFound,
    TransactionTerminated,
)
from sipcore.transport import SharedSockets, TransportLimits, TransportManager, split_hostport
from sipcore.transport_secure import SecureSettings, SecureTransports
from sipcore.uri import SipUri, TelUri

from . import metrics

log = structlog.get_logger("sipcore.server")

RequestHandler = Callable[[Request, Flow], None]
TuHandler = Callable[[Output], None]
RequestSender = Callable[[Request, object], bool]


class TimerSource(Protocol):
    """Deadlines beside the transactions' (the call controller's), served by the server's one timer."""

    def next_deadline(self) -> float | None: ...

    def on_timer(self, now: float) -> None: ...


@dataclass(frozen=True, slots=True)
class SipHandlers:
    """Where the SIP server hands what it does not answer itself (OPTIONS to itself, errors).

    Given to `SipServer` when it is built, as a factory it calls once its sockets are bound (the
    registrar and the proxy need the server to answer through, and the proxy its bound addresses)."""

    register: RequestHandler | None = None  # REGISTER addressed to us, parsed, in a transaction
    register_lane: Callable[[bytes, Flow], bool] | None = None  # a REGISTER answered from its bytes
    proxy: RequestHandler | None = None  # every other request not for us alone
    stateless_invite: Callable[[Request, Flow], bool] | None = (
        None  # an INVITE answered without a transaction
    )
    invite_lane: Callable[[bytes, Flow], bool] | None = None  # a credential-less INVITE from its bytes
    tu_event: TuHandler | None = None  # responses, time-outs, failures of client transactions
    send_request: RequestSender | None = None  # how a client transaction reaches its destination
    connection_closed: Callable[[str], None] | None = None
    drop_source: Callable[[str], bool] | None = None  # a banned source: its messages are dropped
    # every message as a transport read it, once, before anything else (the worker hand-off
    # included): False drops it unread (a banned source, or one over the request-rate limit)
    admit: Callable[[Flow], bool] | None = None
    # a parsed request of any method but REGISTER (the registrar screens those itself) refused before
    # any answer (a scanner's User-Agent): True when it was dropped
    screen: Callable[[Request, Flow], bool] | None = None
    timers: TimerSource | None = None  # woken by the same loop timer as the transactions


SERVER_HEADER = "sipcore/0.1"
_SERVER = ("Server", SERVER_HEADER)
TIMER_SLACK = 0.01  # seconds: transaction timers fire on a 10 ms grid (see SipServer._arm)


@dataclass
class ServerSettings:
    """What the SIP floor needs from the configuration (built by the config bridge or by tests)."""

    udp: list[str] = field(default_factory=lambda: ["0.0.0.0:5060"])
    tcp: list[str] = field(default_factory=lambda: ["0.0.0.0:5070"])
    advertised_address: str | None = None
    local_domains: set[str] = field(default_factory=set)
    limits: TransportLimits = field(default_factory=TransportLimits)
    metrics_address: str | None = "127.0.0.1:9090"
    reuse_port: bool = False
    secure: SecureSettings = field(default_factory=SecureSettings)  # TLS, WS and WSS listeners
    # server transactions kept at most: a full table ends its oldest lingering one for a new request,
    # and refuses it 503 statelessly only when all it holds are in progress (a flood)
    max_server_transactions: int | None = 65_536


def _local_ips() -> set[str]:
    ips = {"127.0.0.1", "::1", "localhost"}
    try:
        hostname = socket.gethostname()
        ips.add(hostname.lower())
        for info in socket.getaddrinfo(hostname, None):
            ips.add(str(info[4][0]))
    except OSError:
        pass
    return ips


_WEBSOCKET = frozenset({"ws", "wss"})
_AUTHORIZATION = re.compile(rb"\nauthorization[ \t]*:", re.IGNORECASE).search
_PROXY_AUTHORIZATION = re.compile(rb"\nproxy-authorization[ \t]*:", re.IGNORECASE).search
_STATELESS_TAG = re.compile(rb"\n(?:to|t)[ \t]*:[^\r\n]*;[ \t]*tag[ \t]*=[ \t]*" + STATELESS_TAG.encode(),
                            re.IGNORECASE).search  # fmt: skip


class WorkerLink(Protocol):
    """A worker process's part in a server of several (server/worker.py): the sockets its master
    bound, and the entry every received message goes through first (to its owner, or here)."""

    def sockets(self) -> SharedSockets: ...

    def entry(self, sip: SipServer) -> Callable[[bytes, Flow], None]: ...


class SipServer:
    def __init__(
        self,
        settings: ServerSettings,
        handlers: Callable[[SipServer], SipHandlers] | None = None,
        worker: WorkerLink | None = None,
        barrier: Callable[[], None] | None = None,
    ) -> None:
        """``barrier``: run before each batch of datagrams is sent (the call journal's fsync)."""
        self.settings = settings
        self._entry = self.on_message if worker is None else worker.entry(self)
        self.transports = TransportManager(
            self.receive,
            settings.limits,
            on_framing_error=self._on_framing_error,
            on_connection_closed=self._on_connection_closed,
            shared=worker.sockets() if worker is not None else None,
            barrier=barrier,
        )
        self.secure = SecureTransports(self.transports, settings.secure)
        secure_stats = self.secure.stats
        metrics.SECURE_EVENTS.set_function(lambda: metrics.secure_events(secure_stats))
        self._make_handlers = handlers
        self.handlers = SipHandlers()  # none until started: nothing arrives before the sockets exist
        self.transactions = TransactionLayer(
            max_server=settings.max_server_transactions, keep=Message.kept_copy
        )
        transactions = self.transactions
        metrics.TRANSACTIONS_ACTIVE.set_function(lambda: len(transactions))  # read at scrape time
        metrics.TRANSACTIONS_ENDED_EARLY.set_function(lambda: {(): transactions.stats["ended_early"]})
        metrics.TCP_CONNECTIONS.set_function(lambda: len(self.transports.connections))
        metrics.UDP_RECEIVE_DROPPED.set_function(self.transports.receive_dropped)
        metrics.TCP_CONNECTION_CAP.set_function(lambda: self.transports.tcp_cap)
        stats = self.transports.stats
        metrics.TCP_REFUSED.set_function(
            lambda: {("cap",): stats.tcp_refused_cap, ("per_source",): stats.tcp_refused}
        )
        metrics.TCP_CLOSED.set_function(
            lambda: {
                ("idle",): stats.tcp_closed_idle,
                ("message_timeout",): stats.tcp_closed_timeout,
                ("too_slow",): stats.tcp_closed_slow,
            }
        )
        metrics.UDP_SEND_FAILED.set_function(
            lambda: {("not_ip",): stats.udp_not_ip, ("error",): stats.udp_send_errors}
        )
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._handler_deadline: float | None = None  # the handlers' timers, as last read (arm_timer)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.local_hosts: set[str] = set()
        self.own_hosts: set[str] = set()  # from the bound and advertised addresses, not configured names
        self.local_ports: set[int] = set()
        self.started_at = time.time()

    # ---- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        self._loop = asyncio.get_running_loop()
        await self.transports.start(s.udp, s.tcp, reuse_port=s.reuse_port)
        await self.secure.start(reuse_port=s.reuse_port)
        secure = self.secure.addresses("tls") + self.secure.addresses("ws") + self.secure.addresses("wss")
        own: set[str] = set()  # from the bound and advertised addresses: what a reload keeps
        for host, port in self.transports.udp_addresses + self.transports.tcp_addresses + secure:
            self.local_ports.add(port)
            if host in ("0.0.0.0", "::"):
                own |= _local_ips()
            else:
                own.add(host.lower())
        if s.advertised_address:
            host, port = split_hostport(s.advertised_address, 5060)
            own.add(host.lower())
            self.local_ports.add(port)
        self.own_hosts = own
        self.local_hosts = own | {h.lower() for h in s.local_domains}
        if self._make_handlers is not None:
            self.handlers = self._make_handlers(self)
        log.info(
            "sip_listening",
            udp=[f"{h}:{p}" for h, p in self.transports.udp_addresses],
            tcp=[f"{h}:{p}" for h, p in self.transports.tcp_addresses],
            **{
                k: [f"{h}:{p}" for h, p in self.secure.addresses(k)]
                for k in ("tls", "ws", "wss")
                if self.secure.servers[k]
            },
        )

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await self.secure.close()
        await self.transports.close()

    def set_local_domains(self, domains: set[str]) -> None:
        """A reload: the configured names that mean "this server" (customer domains, local
        addresses) replaced; the bound and advertised addresses stay."""
        self.local_hosts = self.own_hosts | {d.lower() for d in domains}

    def health(self) -> dict[str, object]:
        return {
            "status": "ok",
            "uptime_s": round(time.time() - self.started_at, 1),
            "udp": [f"{h}:{p}" for h, p in self.transports.udp_addresses],
            "tcp": [f"{h}:{p}" for h, p in self.transports.tcp_addresses],
            "tcp_connections": len(self.transports.connections),
            "tcp_connection_cap": self.transports.tcp_cap,
        }

    # ---- addressing ------------------------------------------------------------------------------
    def is_local_host(self, host: str, port: int | None) -> bool:
        return strip_brackets(host).lower() in self.local_hosts and (port is None or port in self.local_ports)

    def is_local_uri(self, uri: object) -> bool:
        if isinstance(uri, SipUri):
            return self.is_local_host(uri.host, uri.port)
        return isinstance(uri, TelUri)

    def allow_header(self) -> str:
        handlers = self.handlers
        methods = ["OPTIONS", "REGISTER"] if handlers.register is not None else ["OPTIONS"]
        if handlers.proxy is not None:
            methods += ["INVITE", "ACK", "CANCEL", "BYE", "INFO", "UPDATE", "PRACK", "REFER", "NOTIFY",
                        "SUBSCRIBE", "MESSAGE"]  # fmt: skip
        return ", ".join(dict.fromkeys(methods))

    # ---- input -----------------------------------------------------------------------------------
    def receive(self, data: bytes, flow: Flow) -> None:
        """The transports' callback: the flood gate's word first (once per message read, before
        any parsing or hand-off to another worker), then this process's entry. Never raises."""
        admit = self.handlers.admit
        if admit is not None:
            try:
                if not admit(flow):
                    return
            except Exception:
                log.exception("admit_failed", remote=f"{flow.remote[0]}:{flow.remote[1]}")
        self._entry(data, flow)

    def on_message(self, data: bytes, flow: Flow) -> None:
        """Entry point for every framed message; never raises."""
        try:
            handlers = self.handlers
            drop = handlers.drop_source
            if drop is not None and drop(flow.remote[0]):
                metrics.DROPPED.labels("banned").inc()
                return
            if self._took_on_lane(data, flow):
                return
            try:
                msg = parse(data, stream=flow.reliable)
            except SipParseError as exc:
                self._on_unparseable(data, exc, flow)
                return
            if isinstance(msg, Request):
                self._on_request(msg, flow)
            else:
                self._on_response(msg, flow)
        except Exception:
            self._internal_error(flow)

    @staticmethod
    def _internal_error(flow: Flow) -> None:
        """A failure while handling a message: logged and counted, never raised into the transport."""
        metrics.PARSE_ERRORS.labels("internal_error").inc()
        log.exception("message_handling_failed", remote=f"{flow.remote[0]}:{flow.remote[1]}")

    def _took_on_lane(self, data: bytes, flow: Flow) -> bool:
        """A REGISTER or a credential-less INVITE handled from its bytes (registrar/lane.py,
        registrar/invite_lane.py); False leaves it to the general path."""
        handlers = self.handlers
        head = data[:9]
        if head == b"REGISTER ":
            lane = handlers.register_lane
            return lane is not None and lane(data, flow)
        if head[:7] == b"INVITE ":
            lane = handlers.invite_lane
            return lane is not None and _PROXY_AUTHORIZATION(data) is None and lane(data, flow)
        return False

    def _on_unparseable(self, data: bytes, exc: SipParseError, flow: Flow) -> None:
        if data[:4].upper() == b"SIP/" or exc.status is None:
            metrics.PARSE_ERRORS.labels("dropped").inc()
            return
        resp = error_response(data, exc.status, exc.reason, stable_tag(data))
        if resp is None:
            metrics.PARSE_ERRORS.labels("dropped").inc()
            return
        metrics.PARSE_ERRORS.labels("answered").inc()
        resp.headers.add("Server", SERVER_HEADER)
        self.send_response(resp, flow)

    def _on_framing_error(self, failure: FramingFailed, flow: Flow) -> bytes | None:
        metrics.PARSE_ERRORS.labels("framing").inc()
        if not failure.head:
            return None
        resp = error_response(failure.head, failure.status, failure.reason, stable_tag(failure.head))
        if resp is None:
            return None
        metrics.count_response_sent(resp.status)
        return resp.serialize()

    def _on_connection_closed(self, conn_id: str) -> None:
        hook = self.handlers.connection_closed
        if hook is None:
            return
        try:
            hook(conn_id)
        except Exception:
            log.exception("connection_closed_hook_failed", conn_id=conn_id)

    def _on_request(self, req: Request, flow: Flow) -> None:
        metrics.count_request(req.method)
        if self._screened(req, flow):
            return
        try:
            validate_request(req)
        except SipParseError as exc:
            metrics.PARSE_ERRORS.labels("answered").inc()
            if req.method != "ACK":
                self.reply(req, flow, exc.status or 400, exc.reason)
            return
        try:
            self._on_valid_request(req, flow)
        except SipParseError as exc:
            self._on_late_parse_error(req, flow, exc)

    def _on_late_parse_error(self, req: Request, flow: Flow, exc: SipParseError) -> None:
        """A value parsed on first use deep in a service (a From URI, a header read only by that
        method) is malformed: the request gets its 400 like any malformed one, no error is logged."""
        metrics.PARSE_ERRORS.labels("answered").inc()
        self.reply(req, flow, exc.status or 400, exc.reason)

    def _screened(self, req: Request, flow: Flow) -> bool:
        """The guard's word on a request before any answer, whatever its method: a scanner is dropped
        on INVITE, OPTIONS, SUBSCRIBE… as on REGISTER (whose decision screens it, on both its paths)."""
        screen = self.handlers.screen
        return screen is not None and req.method != "REGISTER" and screen(req, flow)

    def _on_valid_request(self, req: Request, flow: Flow) -> None:
        self._stamp(req, flow)
        if not self._answered_statelessly(req, flow):
            self.run_outputs(self.transactions.on_request(req, flow, self.now()))

    def _answered_statelessly(self, req: Request, flow: Flow) -> bool:
        """The ACK of a stateless answer (absorbed), an OPTIONS to the server itself, or an INVITE
        the proxy answers without a transaction (dispatched with none: every answer leaves
        statelessly); False for the rest. RFC 3261 §8.2.7: a stateless UAS answers a retransmission
        again, with the same To tag (derived from the request) — no transaction held for timer J,
        so a flood of them costs no memory."""
        method = req.method
        if method == "ACK" and self._absorbs_ack(req):
            metrics.DROPPED.labels("ack_of_stateless_answer").inc()
            return True
        if method == "OPTIONS" and self._to_self(req):
            self._dispatch(req, flow, None)
            return True
        stateless = self.handlers.stateless_invite
        if method == "INVITE" and stateless is not None and stateless(req, flow):
            self._dispatch(req, flow, None)
            return True
        return False

    @staticmethod
    def _stamp(req: Request, flow: Flow) -> None:
        """§18.2.1: received / rport on the top Via, as the request arrived."""
        top = req.top_via
        stamped = stamp_via(top, flow.remote, flow.transport in _WEBSOCKET)
        if stamped is not top:
            req.headers.remove_first_value("via")
            req.headers.add("via", str(stamped), first=True)
            req.invalidate()
            req._cache["top_via"] = stamped

    def _to_self(self, req: Request) -> bool:
        """Addressed to this server itself (no user part, a local host, no Route)."""
        ruri = req.ruri
        return (
            isinstance(ruri, SipUri)
            and ruri.user is None
            and self.is_local_uri(ruri)
            and "route" not in req.headers
        )

    def take_stateless(self, data: bytes, flow: Flow) -> bool:
        """Handle ``data`` here and return True when it changes no state, so any worker may answer
        it without handing it to its owner: a REGISTER without credentials (its 401, or its 400), an
        OPTIONS to the server itself, an INVITE answered without a transaction, or the ACK of such
        an answer."""
        head = data[:9]
        if head == b"REGISTER ":
            if _AUTHORIZATION(data) is not None:
                return False  # the authenticated one goes to the AOR's owner
            self.on_message(data, flow)
            return True
        if head[:7] == b"INVITE ":
            if self.handlers.stateless_invite is None or _PROXY_AUTHORIZATION(data) is not None:
                return False
        elif head[:8] == b"OPTIONS ":
            if b"@" in data[8 : data.find(b"\n")]:
                return False  # a user in the Request-URI: not for the server itself, to its owner
        elif head[:4] != b"ACK " or _STATELESS_TAG(data) is None:
            return False
        drop = self.handlers.drop_source
        if drop is not None and drop(flow.remote[0]):
            return False  # the owner drops it and counts it
        lane = self.handlers.invite_lane  # (its Proxy-Authorization was looked for above)
        try:
            if head[:7] == b"INVITE " and lane is not None and lane(data, flow):
                return True
        except Exception:
            self._internal_error(flow)
            return True
        try:
            req = parse(data, stream=flow.reliable)
            if not isinstance(req, Request):
                return False
            if self._screened(req, flow):  # dropped here, as the owner would
                metrics.count_request(req.method)
                return True
            validate_request(req)
        except SipParseError:
            return False  # the owner answers it as it answers every malformed request
        try:
            self._stamp(req, flow)
            if not self._answered_statelessly(req, flow):
                return False
        except SipParseError as exc:
            self._on_late_parse_error(req, flow, exc)
        except Exception:
            self._internal_error(flow)
        metrics.count_request(req.method)
        return True

    def _absorbs_ack(self, req: Request) -> bool:
        """The ACK of a non-2xx INVITE answer sent statelessly: nothing waits for it (§17.2.1 has no
        transaction here). Recognised by its To tag, which repeats the one we derived from the INVITE's
        Call-ID, From and branch (the ACK carries the same three, §17.1.1.3)."""
        try:
            tag = req.to_tag
            if tag is None or not tag.startswith(STATELESS_TAG):
                return False
            return tag == STATELESS_TAG + stable_tag(
                f"{req.call_id}|{req.headers.get('from')}|{req.top_via.branch}"
            )
        except SipParseError:
            return False

    def _dispatch(self, req: Request, flow: Flow, txn: object) -> None:
        """A new request for the transaction user (registrar, proxy, or our own UAS answers)."""
        if txn is not None:
            req._cache["txn"] = txn
        error = check_scheme(req)
        if error is not None:
            self.reply_error(req, flow, error)
            return
        ruri = req.ruri
        if req.method == "OPTIONS" and self._to_self(req):
            self._answer_options(req, flow)
            return
        if req.method == "REGISTER" and self.is_local_uri(ruri):
            error = check_require(req)
            if error is not None:
                self.reply_error(req, flow, error)
                return
            handler = self.handlers.register
            if handler is None:
                self.reply(req, flow, 501, "Registrar not enabled", (("Allow", self.allow_header()),))
            else:
                handler(req, flow)
            return
        error = check_max_forwards(req) or check_proxy_require(req)
        if error is not None:
            self.reply_error(req, flow, error)
            return
        proxy = self.handlers.proxy
        if proxy is not None:
            proxy(req, flow)
            return
        if req.method == "ACK":
            return
        if req.method == "CANCEL":
            self.reply(req, flow, 481)  # without a proxy no INVITE is ever pending here
            return
        if not self.is_local_uri(ruri):
            self.reply(req, flow, 403, "Relaying Forbidden")
        elif req.method in ("INVITE", "BYE", "CANCEL", "MESSAGE", "INFO", "UPDATE", "PRACK", "REFER",
                            "NOTIFY", "SUBSCRIBE", "PUBLISH", "OPTIONS"):  # fmt: skip
            self.reply(req, flow, 405, None, (("Allow", self.allow_header()),))
        else:
            self.reply(req, flow, 501, None, (("Allow", self.allow_header()),))

    def _answer_options(self, req: Request, flow: Flow) -> None:
        error = check_require(req)
        if error is not None:
            self.reply_error(req, flow, error)
            return
        self.reply(
            req,
            flow,
            200,
            None,
            (
                ("Allow", self.allow_header()),
                ("Accept", "application/sdp"),
                ("Accept-Language", "en"),
                ("Supported", ", ".join(sorted(SUPPORTED_OPTIONS))),
            ),
        )

    def _on_response(self, resp: Response, flow: Flow) -> None:
        metrics.count_response_received(resp.status)
        try:
            validate_response(resp)
        except SipParseError:
            metrics.PARSE_ERRORS.labels("dropped").inc()
            return
        outs = self.transactions.on_response(resp, self.now())
        if self.handlers.tu_event is None:
            if outs and getattr(outs[0], "transaction", None) is None:
                metrics.DROPPED.labels("stray_response").inc()
            return
        self.run_outputs(outs)

    # ---- transactions ------------------------------------------------------------------------------
    def now(self) -> float:
        """Monotonic time base of transactions and timers."""
        return self._loop.time() if self._loop is not None else time.monotonic()

    def run_outputs(self, outs: list[Output]) -> None:
        """Carry out what the transaction layer asked, then re-arm the single timer."""
        for out in outs:
            kind = type(out)
            if kind is SendMessage:
                msg = out.message  # type: ignore[union-attr]
                if isinstance(msg, Response):
                    self.send_response(msg, out.destination)  # type: ignore[union-attr, arg-type]
                elif (sender := self.handlers.send_request) is not None:
                    sender(msg, out.destination)  # type: ignore[union-attr]
            elif kind is RequestReceived:
                self._dispatch(out.request, out.source, out.transaction)  # type: ignore[union-attr]
            elif kind is TableFull:
                metrics.TRANSACTIONS_REFUSED.inc()
                self.reply(out.request, out.source, 503, "Server overloaded", (("Retry-After", "5"),))  # type: ignore[union-attr]
            else:
                if kind is TransactionTerminated:
                    # The request points at its server transaction and back: break the cycle so
                    # both are freed by reference counting, not left to the cyclic collector.
                    request = getattr(out.transaction, "request", None)  # type: ignore[union-attr]
                    if request is not None:
                        request._cache.pop("txn", None)
                if (tu_event := self.handlers.tu_event) is not None:
                    tu_event(out)
        self._arm()

    def arm_timer(self) -> None:
        """The handlers' next deadline may have come earlier (a call timer was set): read it again
        and re-arm. Kept between calls (one look per change, not one per message); a deadline that
        moved later only costs an early wake-up that finds nothing due."""
        timers = self.handlers.timers
        self._handler_deadline = timers.next_deadline() if timers is not None else None
        self._arm()

    def _arm(self) -> None:
        """Keep one loop timer at the earliest deadline of the transactions and the handlers'
        timers (the calls), rounded up to TIMER_SLACK.

        The slack (like the kernel's timerslack) lets one wake-up serve every transaction due in the
        same 10 ms slot instead of one wake-up per transaction; SIP timers count in T1 = 500 ms, so
        firing a few ms late changes nothing a peer can see."""
        deadline = self.transactions.next_deadline()
        other = self._handler_deadline
        if other is not None and (deadline is None or other < deadline):
            deadline = other
        if deadline is None or self._loop is None:
            return
        when = max(deadline, math.ceil(deadline / TIMER_SLACK) * TIMER_SLACK)
        if self._timer is not None:
            if self._timer_when <= when:
                return
            self._timer.cancel()
        self._timer_when = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self.now()
        try:
            self.run_outputs(self.transactions.on_timer(now))
        except Exception:
            log.exception("transaction_timer_failed")
        timers = self.handlers.timers
        if timers is not None:
            try:
                timers.on_timer(now)
            except Exception:
                log.exception("handler_timer_failed")
        self.arm_timer()

    # ---- output ----------------------------------------------------------------------------------
    def reply_error(self, req: Request, flow: Flow, error: SipError) -> None:
        self.reply(req, flow, error.status or 400, error.reason, error.headers)

    def reply(
        self,
        req: Request,
        flow: Flow,
        status: int,
        reason: str | None = None,
        headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response | None:
        if req.method == "ACK":
            return None
        try:
            tag = stable_tag(f"{req.call_id}|{req.headers.get('from')}|{req.top_via.branch}")
        except SipParseError:
            tag = stable_tag(req.headers.get("call-id") or "")
        if req.method == "INVITE" and "txn" not in req._cache:
            tag = STATELESS_TAG + tag  # its ACK is recognised and absorbed on arrival (_absorbs_ack)
        resp = req.make_response(status, reason, tag, (*headers, _SERVER))
        if body:
            resp.body = body
            if content_type:
                resp.headers.add("Content-Type", content_type)
        self.respond(req, resp, flow)
        return resp

    def respond(self, req: Request, resp: Response, flow: Flow) -> None:
        """Send a response to ``req``: through its server transaction when it has one (so
        retransmissions of the request are answered again), else statelessly."""
        txn = req._cache.get("txn")
        if txn is not None:
            try:
                self.run_outputs(self.transactions.send_response(resp, self.now(), txn))  # type: ignore[arg-type]
                return
            except TransactionNotFound:
                pass
        self.send_response(resp, flow)

    def send_answer(self, data: bytes, status: int, flow: Flow, destination: tuple[str, int]) -> bool:
        """A response already serialised (the REGISTER lane): as send_response routes it, with the
        §18.2.2 UDP ``destination`` its top Via gave."""
        metrics.count_response_sent(status)
        if flow.reliable:
            if self.transports.send_flow(data, flow):
                return True
            if flow.transport != "tcp":  # TLS / WebSocket: only over the connection it came on
                return False
            self.transports.send_tcp_soon(data, destination)
            return True
        return self.transports.send_udp(data, destination, flow.local)

    def send_response(self, resp: Response, flow: Flow) -> bool:
        """§18.2.2: reliable → back on the connection (or a new one to the sent-by); UDP → received /
        rport / sent-by port from the top Via."""
        data = resp.serialize()
        metrics.count_response_sent(resp.status)
        if flow.reliable:
            if self.transports.send_flow(data, flow):
                return True
            if flow.transport != "tcp":  # TLS / WebSocket: only over the connection it came on
                return False
            try:
                via = resp.top_via
            except SipParseError:
                return False
            dest = response_destination(via, 5060)
            self.transports.send_tcp_soon(data, dest)
            return True
        try:
            dest = response_destination(resp.top_via, 5060)
        except SipParseError:
            return False
        return self.transports.send_udp(data, dest, flow.local)
