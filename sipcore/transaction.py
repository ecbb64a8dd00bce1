"""RFC 3261 §17 transactions as sans-IO state machines, and the layer that matches messages to them.

Every call takes ``now`` (float seconds on the caller's monotonic clock) and returns a list of outputs:
``SendMessage`` (an instruction for the transport edge) and events for the TU, named in the past tense
(``RequestReceived``, ``ResponseReceived``, ``TransactionTimedOut``, ``TransportFailed``,
``TransactionTerminated``). Callers wake the layer at ``next_deadline()`` with ``on_timer(now)``.

All four machines live in one table, ``TRANSITIONS``: ``(machine, state, input) -> (steps, next
state)``, as h2 does. A pair missing from the table is ignored, which is what the RFC asks for every
input it does not list (late responses, stray ACKs, TU responses after the final one). Pairs the RFC
names explicitly as "absorbed" or "discarded" are written in with no steps, so the table documents
them.

The INVITE client transaction is RFC 3261 as written: it ends on a 2xx, and 2xx retransmissions come
up as stray responses for the TU. The INVITE server transaction adds RFC 6026's Accepted state (timer
L = 64*T1, ``TimerConfig.rfc6026``) so an INVITE retransmitted after the 2xx is absorbed, not a new
call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sipcore.message import MAGIC_COOKIE, Headers, Request, Response
from sipcore.message import new_branch as new_branch  # re-exported for TUs calling send_request
from sipcore.records import fast_init
from sipcore.timers import DEFAULT_TIMERS, TimerConfig, TimerWheel

RELIABLE_TRANSPORTS = frozenset({"TCP", "TLS", "SCTP", "TLS-SCTP", "WS", "WSS"})


class TransactionNotFound(LookupError):
    """The TU sent a response that matches no live server transaction (it ended, or never existed)."""


# --------------------------------------------------------------------------- states, inputs, table


class Machine(StrEnum):
    INVITE_CLIENT = "INVITE client"  # §17.1.1
    NON_INVITE_CLIENT = "non-INVITE client"  # §17.1.2
    INVITE_SERVER = "INVITE server"  # §17.2.1
    NON_INVITE_SERVER = "non-INVITE server"  # §17.2.2


class State(StrEnum):
    INITIAL = "Initial"  # before start(): the machine has not sent or passed up anything yet
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"  # RFC 6026 §8.7: INVITE server after a 2xx, absorbing INVITE retransmissions
    TERMINATED = "Terminated"


class Input(StrEnum):
    START = "start"
    RESPONSE_1XX = "1xx received"
    RESPONSE_2XX = "2xx received"
    RESPONSE_FINAL = "300-699 received"
    REQUEST = "request retransmission"
    ACK = "ACK received"
    TU_1XX = "TU sent 1xx"
    TU_2XX = "TU sent 2xx"
    TU_FINAL = "TU sent 300-699"
    TRANSPORT_ERROR = "transport error"
    TIMER_A = "timer A"
    TIMER_B = "timer B"
    TIMER_D = "timer D"
    TIMER_E = "timer E"
    TIMER_F = "timer F"
    TIMER_G = "timer G"
    TIMER_H = "timer H"
    TIMER_I = "timer I"
    TIMER_J = "timer J"
    TIMER_K = "timer K"
    TIMER_L = "timer L"
    TIMER_TRYING = "100 Trying timer"


_TERMINATED = State.TERMINATED
_IC, _NIC, _IS, _NIS = (
    Machine.INVITE_CLIENT,
    Machine.NON_INVITE_CLIENT,
    Machine.INVITE_SERVER,
    Machine.NON_INVITE_SERVER,
)
_S = State
_I = Input
# States past the final response, held for retransmissions (up to 32 s): where transactions shrink.
_LINGERING = frozenset({State.COMPLETED, State.CONFIRMED, State.ACCEPTED})

# (machine, state, input) -> (step names, next state). Steps run in order; see _STEPS below.
TRANSITIONS: dict[tuple[Machine, State, Input], tuple[tuple[str, ...], State]] = {
    # ---- INVITE client, §17.1.1 (Figure 5)
    (_IC, _S.INITIAL, _I.START): (("send_request", "start_A", "start_B"), _S.CALLING),
    (_IC, _S.CALLING, _I.TIMER_A): (("retransmit_request", "double_A"), _S.CALLING),
    (_IC, _S.CALLING, _I.TIMER_B): (("timed_out",), _S.TERMINATED),
    (_IC, _S.CALLING, _I.RESPONSE_1XX): (("stop_timers", "pass_response"), _S.PROCEEDING),
    (_IC, _S.CALLING, _I.RESPONSE_2XX): (("pass_response",), _S.TERMINATED),
    (_IC, _S.CALLING, _I.RESPONSE_FINAL): (
        ("stop_timers", "pass_response", "send_ack", "start_D"),
        _S.COMPLETED,
    ),
    (_IC, _S.CALLING, _I.TRANSPORT_ERROR): (("transport_failed",), _S.TERMINATED),
    (_IC, _S.PROCEEDING, _I.RESPONSE_1XX): (("pass_response",), _S.PROCEEDING),
    (_IC, _S.PROCEEDING, _I.RESPONSE_2XX): (("pass_response",), _S.TERMINATED),
    (_IC, _S.PROCEEDING, _I.RESPONSE_FINAL): (("pass_response", "send_ack", "start_D"), _S.COMPLETED),
    (_IC, _S.PROCEEDING, _I.TRANSPORT_ERROR): (("transport_failed",), _S.TERMINATED),
    (_IC, _S.COMPLETED, _I.RESPONSE_FINAL): (("send_ack",), _S.COMPLETED),  # retransmission: ACK again
    (_IC, _S.COMPLETED, _I.TIMER_D): ((), _S.TERMINATED),
    (_IC, _S.COMPLETED, _I.TRANSPORT_ERROR): (("transport_failed",), _S.TERMINATED),
    # ---- non-INVITE client, §17.1.2 (Figure 6)
    (_NIC, _S.INITIAL, _I.START): (("send_request", "start_E", "start_F"), _S.TRYING),
    (_NIC, _S.TRYING, _I.TIMER_E): (("retransmit_request", "backoff_E"), _S.TRYING),
    (_NIC, _S.TRYING, _I.TIMER_F): (("timed_out",), _S.TERMINATED),
    (_NIC, _S.TRYING, _I.RESPONSE_1XX): (("pass_response",), _S.PROCEEDING),
    (_NIC, _S.TRYING, _I.RESPONSE_2XX): (("stop_timers", "pass_response", "start_K"), _S.COMPLETED),
    (_NIC, _S.TRYING, _I.RESPONSE_FINAL): (("stop_timers", "pass_response", "start_K"), _S.COMPLETED),
    (_NIC, _S.TRYING, _I.TRANSPORT_ERROR): (("transport_failed",), _S.TERMINATED),
    (_NIC, _S.PROCEEDING, _I.TIMER_E): (("retransmit_request", "E_at_T2"), _S.PROCEEDING),
    (_NIC, _S.PROCEEDING, _I.TIMER_F): (("timed_out",), _S.TERMINATED),
    (_NIC, _S.PROCEEDING, _I.RESPONSE_1XX): (("pass_response",), _S.PROCEEDING),
    (_NIC, _S.PROCEEDING, _I.RESPONSE_2XX): (("stop_timers", "pass_response", "start_K"), _S.COMPLETED),
    (_NIC, _S.PROCEEDING, _I.RESPONSE_FINAL): (("stop_timers", "pass_response", "start_K"), _S.COMPLETED),
    (_NIC, _S.PROCEEDING, _I.TRANSPORT_ERROR): (("transport_failed",), _S.TERMINATED),
    (_NIC, _S.COMPLETED, _I.RESPONSE_1XX): ((), _S.COMPLETED),  # absorbed
    (_NIC, _S.COMPLETED, _I.RESPONSE_2XX): ((), _S.COMPLETED),  # absorbed
    (_NIC, _S.COMPLETED, _I.RESPONSE_FINAL): ((), _S.COMPLETED),  # absorbed
    (_NIC, _S.COMPLETED, _I.TIMER_K): ((), _S.TERMINATED),
    # ---- INVITE server, §17.2.1 (Figure 7)
    (_IS, _S.INITIAL, _I.START): (("pass_request", "start_trying"), _S.PROCEEDING),
    (_IS, _S.PROCEEDING, _I.TIMER_TRYING): (("send_trying",), _S.PROCEEDING),
    (_IS, _S.PROCEEDING, _I.REQUEST): (("answer_retransmission",), _S.PROCEEDING),
    (_IS, _S.PROCEEDING, _I.TU_1XX): (("stop_timers", "send_response"), _S.PROCEEDING),
    (_IS, _S.PROCEEDING, _I.TU_2XX): (("stop_timers", "send_response", "start_L"), _S.ACCEPTED),
    (_IS, _S.PROCEEDING, _I.TU_FINAL): (("stop_timers", "send_response", "start_G", "start_H"), _S.COMPLETED),
    (_IS, _S.PROCEEDING, _I.TRANSPORT_ERROR): (("transport_failed",), _S.TERMINATED),
    (_IS, _S.COMPLETED, _I.REQUEST): (("resend_final",), _S.COMPLETED),
    (_IS, _S.COMPLETED, _I.TIMER_G): (("resend_final", "backoff_G"), _S.COMPLETED),
    (_IS, _S.COMPLETED, _I.TIMER_H): (("timed_out",), _S.TERMINATED),
    (_IS, _S.COMPLETED, _I.ACK): (("stop_timers", "start_I"), _S.CONFIRMED),
    (_IS, _S.COMPLETED, _I.TRANSPORT_ERROR): (("transport_failed",), _S.TERMINATED),
    (_IS, _S.CONFIRMED, _I.REQUEST): ((), _S.CONFIRMED),  # absorbed
    (_IS, _S.CONFIRMED, _I.ACK): ((), _S.CONFIRMED),  # absorbed
    (_IS, _S.CONFIRMED, _I.TIMER_I): ((), _S.TERMINATED),
    # RFC 6026 §8.7 (Figure 5 of RFC 6026); timer L = 0 (rfc6026=False) makes it RFC 3261's Terminated
    (_IS, _S.ACCEPTED, _I.REQUEST): ((), _S.ACCEPTED),  # absorbed: the TU retransmits its 2xx
    (_IS, _S.ACCEPTED, _I.ACK): (("pass_ack",), _S.ACCEPTED),  # the 2xx's ACK belongs to the TU
    (_IS, _S.ACCEPTED, _I.TU_2XX): (("send_response",), _S.ACCEPTED),  # 2xx retransmissions, forked 2xx
    (_IS, _S.ACCEPTED, _I.TIMER_L): ((), _S.TERMINATED),
    # ---- non-INVITE server, §17.2.2 (Figure 8)
    (_NIS, _S.INITIAL, _I.START): (("pass_request",), _S.TRYING),
    (_NIS, _S.TRYING, _I.REQUEST): ((), _S.TRYING),  # discarded
    (_NIS, _S.TRYING, _I.TU_1XX): (("send_response",), _S.PROCEEDING),
    (_NIS, _S.TRYING, _I.TU_2XX): (("send_response", "start_J"), _S.COMPLETED),
    (_NIS, _S.TRYING, _I.TU_FINAL): (("send_response", "start_J"), _S.COMPLETED),
    (_NIS, _S.TRYING, _I.TRANSPORT_ERROR): (("transport_failed",), _S.TERMINATED),
    (_NIS, _S.PROCEEDING, _I.REQUEST): (("resend_provisional",), _S.PROCEEDING),
    (_NIS, _S.PROCEEDING, _I.TU_1XX): (("send_response",), _S.PROCEEDING),
    (_NIS, _S.PROCEEDING, _I.TU_2XX): (("send_response", "start_J"), _S.COMPLETED),
    (_NIS, _S.PROCEEDING, _I.TU_FINAL): (("send_response", "start_J"), _S.COMPLETED),
    (_NIS, _S.PROCEEDING, _I.TRANSPORT_ERROR): (("transport_failed",), _S.TERMINATED),
    (_NIS, _S.COMPLETED, _I.REQUEST): (("resend_final",), _S.COMPLETED),
    (_NIS, _S.COMPLETED, _I.TU_1XX): ((), _S.COMPLETED),  # discarded
    (_NIS, _S.COMPLETED, _I.TU_2XX): ((), _S.COMPLETED),  # discarded
    (_NIS, _S.COMPLETED, _I.TU_FINAL): ((), _S.COMPLETED),  # discarded
    (_NIS, _S.COMPLETED, _I.TRANSPORT_ERROR): (("transport_failed",), _S.TERMINATED),
    (_NIS, _S.COMPLETED, _I.TIMER_J): ((), _S.TERMINATED),
}

_TIMER_INPUT = {
    "A": _I.TIMER_A,
    "B": _I.TIMER_B,
    "D": _I.TIMER_D,
    "E": _I.TIMER_E,
    "F": _I.TIMER_F,
    "G": _I.TIMER_G,
    "H": _I.TIMER_H,
    "I": _I.TIMER_I,
    "J": _I.TIMER_J,
    "K": _I.TIMER_K,
    "L": _I.TIMER_L,
    "trying": _I.TIMER_TRYING,
}


# --------------------------------------------------------------------------- steps

Step = Callable[[Any, float, Any, list], None]  # (transaction, now, message, outputs)


def _start(t: Transaction, name: str, duration: float, now: float) -> None:
    """Arm a timer; a zero duration (reliable transports) fires right after the current transition."""
    if duration > 0:
        t._timers[name] = now + duration
    else:
        t._immediate = name


def _send_request(t: ClientTransaction, now: float, msg: Any, out: list) -> None:
    out.append(SendMessage(t.request, t.destination, t))


def _retransmit_request(t: ClientTransaction, now: float, msg: Any, out: list) -> None:
    out.append(SendMessage(t.request, t.destination, t, True))


def _start_retransmit(name: str) -> Step:
    def step(t: Transaction, now: float, msg: Any, out: list) -> None:
        if not t.reliable:  # §17.1.1.2, §17.1.2.2, §17.2.1: no retransmissions over reliable transports
            t._interval = t.config.t1
            t._timers[name] = now + t._interval

    return step


def _double_a(t: Transaction, now: float, msg: Any, out: list) -> None:
    t._interval *= 2  # INVITE: doubles without a cap
    t._timers["A"] = now + t._interval


def _backoff(name: str) -> Step:
    def step(t: Transaction, now: float, msg: Any, out: list) -> None:
        t._interval = min(t._interval * 2, t.config.t2)  # non-INVITE requests and INVITE finals: cap T2
        t._timers[name] = now + t._interval

    return step


def _e_at_t2(t: Transaction, now: float, msg: Any, out: list) -> None:
    t._interval = t.config.t2
    t._timers["E"] = now + t._interval


def _start_timeout(name: str) -> Step:
    def step(t: Transaction, now: float, msg: Any, out: list) -> None:
        t._timers[name] = now + t.config.timeout

    return step


def _start_d(t: Transaction, now: float, msg: Any, out: list) -> None:
    _start(t, "D", 0.0 if t.reliable else t.config.timer_d, now)


def _start_t4(name: str) -> Step:
    def step(t: Transaction, now: float, msg: Any, out: list) -> None:
        _start(t, name, 0.0 if t.reliable else t.config.t4, now)

    return step


def _start_l(t: Transaction, now: float, msg: Any, out: list) -> None:
    _start(t, "L", t.config.timeout if t.config.rfc6026 else 0.0, now)


def _pass_ack(t: ServerTransaction, now: float, msg: Any, out: list) -> None:
    out.append(RequestReceived(msg, t.source, None))


def _start_j(t: Transaction, now: float, msg: Any, out: list) -> None:
    _start(t, "J", 0.0 if t.reliable else t.config.timeout, now)


def _stop_timers(t: Transaction, now: float, msg: Any, out: list) -> None:
    t._timers.clear()


def _pass_response(t: ClientTransaction, now: float, msg: Any, out: list) -> None:
    out.append(ResponseReceived(msg, t))


def _send_ack(t: ClientTransaction, now: float, msg: Any, out: list) -> None:
    again = t.ack is not None
    if t.ack is None:
        t.ack = t.ack_builder(t.request, msg)
    out.append(SendMessage(t.ack, t.destination, t, again))


def _timed_out(t: Transaction, now: float, msg: Any, out: list) -> None:
    out.append(TransactionTimedOut(t, t._firing))


def _transport_failed(t: Transaction, now: float, msg: Any, out: list) -> None:
    out.append(TransportFailed(t))


def _pass_request(t: ServerTransaction, now: float, msg: Any, out: list) -> None:
    out.append(RequestReceived(t.request, t.source, t))


def _start_trying(t: ServerTransaction, now: float, msg: Any, out: list) -> None:
    delay = t.config.trying_delay
    if delay is not None:
        _start(t, "trying", delay, now)


def _send_trying(t: ServerTransaction, now: float, msg: Any, out: list) -> None:
    if t.last_provisional is None:
        t.last_provisional = t.request.make_response(100, "Trying")
        out.append(SendMessage(t.last_provisional, t.source, t))


def _answer_retransmission(t: ServerTransaction, now: float, msg: Any, out: list) -> None:
    """INVITE retransmitted in Proceeding: repeat the latest provisional; if none went out yet, the
    peer is already retransmitting, so send the 100 Trying now instead of waiting for its timer."""
    if t.last_provisional is not None:
        out.append(SendMessage(t.last_provisional, t.source, t, True))
    elif t.config.trying_delay is not None:
        t._timers.pop("trying", None)
        _send_trying(t, now, msg, out)


def _send_response(t: ServerTransaction, now: float, msg: Any, out: list) -> None:
    if msg.status < 200:
        t.last_provisional = msg
    else:
        t.last_final = msg
    out.append(SendMessage(msg, t.source, t))


def _resend_provisional(t: ServerTransaction, now: float, msg: Any, out: list) -> None:
    if t.last_provisional is not None:
        out.append(SendMessage(t.last_provisional, t.source, t, True))


def _resend_final(t: ServerTransaction, now: float, msg: Any, out: list) -> None:
    out.append(SendMessage(t.last_final, t.source, t, True))


_STEPS: dict[str, Step] = {
    "send_request": _send_request,
    "retransmit_request": _retransmit_request,
    "start_A": _start_retransmit("A"),
    "double_A": _double_a,
    "start_B": _start_timeout("B"),
    "start_D": _start_d,
    "start_E": _start_retransmit("E"),
    "backoff_E": _backoff("E"),
    "E_at_T2": _e_at_t2,
    "start_F": _start_timeout("F"),
    "start_K": _start_t4("K"),
    "start_G": _start_retransmit("G"),
    "backoff_G": _backoff("G"),
    "start_H": _start_timeout("H"),
    "start_I": _start_t4("I"),
    "start_J": _start_j,
    "start_L": _start_l,
    "pass_ack": _pass_ack,
    "stop_timers": _stop_timers,
    "pass_response": _pass_response,
    "send_ack": _send_ack,
    "timed_out": _timed_out,
    "transport_failed": _transport_failed,
    "pass_request": _pass_request,
    "start_trying": _start_trying,
    "send_trying": _send_trying,
    "answer_retransmission": _answer_retransmission,
    "send_response": _send_response,
    "resend_provisional": _resend_provisional,
    "resend_final": _resend_final,
}

# The table compiled per machine: {(state, input): (step functions, next state)}.
_COMPILED: dict[Machine, dict[tuple[State, Input], tuple[tuple[Step, ...], State]]] = {m: {} for m in Machine}
for (_m, _st, _in), (_names, _next) in TRANSITIONS.items():
    _COMPILED[_m][(_st, _in)] = (tuple(_STEPS[n] for n in _names), _next)


# --------------------------------------------------------------------------- ACK for non-2xx


def build_ack(request: Request, response: Response) -> Request:
    """The ACK for a 300–699 answer to ``request`` (§17.1.1.3): the INVITE's Request-URI, top Via only,
    Route set, Max-Forwards, From, Call-ID and CSeq number, with the To of the response (its tag
    included) and method ACK. Sent to the same destination as the INVITE, by the transaction."""
    headers = request.headers
    entries = [["via", "Via", str(request.top_via)]]
    entries += [["route", "Route", value] for value in headers.get_fields("route")]
    entries.append(["max-forwards", "Max-Forwards", headers.get("max-forwards") or "70"])
    entries.append(["from", "From", headers.get("from") or ""])
    entries.append(["to", "To", response.headers.get("to") or ""])
    entries.append(["call-id", "Call-ID", request.call_id])
    entries.append(["cseq", "CSeq", f"{request.cseq[0]} ACK"])
    return Request("ACK", request.uri, Headers(entries))


# --------------------------------------------------------------------------- transactions


def is_reliable(transport: str) -> bool:
    return transport.upper() in RELIABLE_TRANSPORTS


class Transaction:
    """Common machinery: the state, the timers (name -> deadline) and the table-driven ``_fire``."""

    __slots__ = (
        "_firing",
        "_immediate",
        "_interval",
        "_table",
        "_timers",
        "config",
        "key",
        "machine",
        "method",
        "reliable",
        "request",
        "state",
        "timer_slot",
    )

    def __init__(self, machine: Machine, request: Any, reliable: bool, config: TimerConfig) -> None:
        self.machine = machine
        self.request = request
        self.method: str = request.method  # kept when the request is not (ServerTransaction.shrink)
        self.reliable = reliable
        self.config = config
        self.state = State.INITIAL
        self.key: Hashable = None
        self.timer_slot: int | None = None  # where the layer's TimerWheel files it
        self._table = _COMPILED[machine]
        self._timers: dict[str, float] = {}
        self._interval = 0.0
        self._immediate: str | None = None
        self._firing = ""

    def __repr__(self) -> str:
        return f"<{self.machine.value} transaction {self.key!r} {self.state.value}>"

    @property
    def terminated(self) -> bool:
        return self.state is _TERMINATED

    def timers(self) -> dict[str, float]:
        """Armed timers, name -> deadline (a copy, for inspection and tests)."""
        return dict(self._timers)

    def next_deadline(self) -> float | None:
        """When ``on_timer`` must next be called, or None if no timer is armed."""
        timers = self._timers
        return min(timers.values()) if timers else None

    def on_timer(self, now: float) -> list[Output]:
        """Fire every timer due at ``now``, earliest first. A timer re-armed while firing is measured
        from ``now``, so a late wake-up never bursts several retransmissions."""
        out: list[Output] = []
        timers = self._timers
        while timers:
            name = min(timers, key=timers.__getitem__)
            if timers[name] > now:
                break
            del timers[name]
            self._firing = name
            self._fire(_TIMER_INPUT[name], now, None, out)
        return out

    def on_transport_error(self, now: float) -> list[Output]:
        out: list[Output] = []
        self._fire(Input.TRANSPORT_ERROR, now, None, out)
        return out

    def _fire(self, inp: Input, now: float, msg: Any, out: list) -> bool:
        entry = self._table.get((self.state, inp))
        if entry is None:
            return False  # not in the table: ignored, as the RFC asks
        steps, next_state = entry
        for step in steps:
            step(self, now, msg, out)
        self.state = next_state
        if next_state is _TERMINATED:
            self._timers.clear()
            self._immediate = None
            out.append(TransactionTerminated(self))
        elif self._immediate is not None:
            name, self._immediate = self._immediate, None
            self._firing = name
            self._fire(_TIMER_INPUT[name], now, None, out)
        return True


def _response_input(status: int, tu: bool) -> Input:
    if not 100 <= status <= 699:
        raise ValueError(f"SIP status must be 100-699, not {status}")
    if status < 200:
        return Input.TU_1XX if tu else Input.RESPONSE_1XX
    if status < 300:
        return Input.TU_2XX if tu else Input.RESPONSE_2XX
    return Input.TU_FINAL if tu else Input.RESPONSE_FINAL


class ClientTransaction(Transaction):
    """§17.1: sends ``request`` to ``destination`` (opaque to us: the edge's address or flow)."""

    __slots__ = ("_kept", "ack", "ack_builder", "destination")

    def __init__(
        self,
        request: Any,
        destination: Any,
        config: TimerConfig = DEFAULT_TIMERS,
        *,
        reliable: bool | None = None,
        ack_builder: Callable[[Any, Any], Any] = build_ack,
    ) -> None:
        if request.method == "ACK":
            raise ValueError("ACK is never sent in a client transaction (§17.1.1.3, §13.2.2.4)")
        machine = Machine.INVITE_CLIENT if request.method == "INVITE" else Machine.NON_INVITE_CLIENT
        if reliable is None:
            reliable = is_reliable(request.top_via.transport)
        super().__init__(machine, request, reliable, config)
        self.destination = destination
        self.ack: Any = None
        self.ack_builder = ack_builder
        self._kept = False

    def shrink(self, keep: Callable[[Any], Any]) -> None:
        """Completed (Timer D, Timer K): only a final retransmission is left to absorb, or to answer
        with the ACK kept already. Hold what ``keep`` makes of the request and the ACK, not the full
        messages."""
        if not self._kept:
            self._kept = True
            self.request = keep(self.request)
            if self.ack is not None:
                self.ack = keep(self.ack)

    def start(self, now: float) -> list[Output]:
        """Send the request and arm A/B (INVITE) or E/F (non-INVITE)."""
        out: list[Output] = []
        self._fire(Input.START, now, None, out)
        return out

    def receive_response(self, response: Any, now: float) -> list[Output]:
        """A response already matched to this transaction (§17.1.3)."""
        out: list[Output] = []
        self._fire(_response_input(response.status, False), now, response, out)
        return out


class ServerTransaction(Transaction):
    """§17.2: created by a request received from ``source`` (opaque: the edge's address or flow)."""

    __slots__ = ("_kept", "last_final", "last_provisional", "lingering", "source")

    def __init__(
        self,
        request: Any,
        source: Any,
        config: TimerConfig = DEFAULT_TIMERS,
        *,
        reliable: bool | None = None,
    ) -> None:
        if request.method == "ACK":
            raise ValueError("an ACK never creates a server transaction (§17.2.3)")
        machine = Machine.INVITE_SERVER if request.method == "INVITE" else Machine.NON_INVITE_SERVER
        if reliable is None:
            reliable = is_reliable(request.top_via.transport)
        super().__init__(machine, request, reliable, config)
        self.source = source
        self.last_provisional: Any = None
        self.last_final: Any = None
        self._kept: Any = None  # the final response as kept by shrink
        self.lingering = False  # queued in the layer's lingering order (past its final response)

    def shrink(self, keep: Callable[[Any], Any]) -> None:
        """A final response went out (Completed, Confirmed, Accepted): what is left is answering
        retransmissions and matching the ACK, for up to 32 s. Matched by an RFC 3261 branch, it holds
        nothing of its request (the key matches); in Accepted (RFC 6026) nothing of its 2xx either:
        a retransmitted INVITE is absorbed and the TU sends its 2xx again itself. Otherwise it holds
        what ``keep`` makes of the request (an RFC 2543 match reads its To tag) and of the final
        response it repeats, not the full messages."""
        final = self.last_final
        if final is None or final is self._kept:
            return
        key = self.key
        if key is not None and key[0] is not None:  # type: ignore[index]
            self.request = self.last_provisional = None
            if self.state is State.ACCEPTED:
                self.last_final = self._kept = None
                return
        elif self._kept is None:
            self.request = keep(self.request)
            self.last_provisional = None
        self.last_final = self._kept = keep(final)

    def start(self, now: float) -> list[Output]:
        """Pass the request up (RequestReceived) and arm the 100 Trying timer for an INVITE."""
        out: list[Output] = []
        self._fire(Input.START, now, None, out)
        return out

    def receive_request(self, request: Any, now: float) -> list[Output]:
        """A retransmission of our request, or (INVITE) the ACK for our 300–699 final response."""
        out: list[Output] = []
        self._fire(Input.ACK if request.method == "ACK" else Input.REQUEST, now, request, out)
        return out

    def send_response(self, response: Any, now: float) -> list[Output]:
        """The TU's response; ignored once a final one went out (§17.2.2: discarded)."""
        out: list[Output] = []
        self._fire(_response_input(response.status, True), now, response, out)
        return out

    @property
    def last_response(self) -> Any:
        return self.last_final if self.last_final is not None else self.last_provisional

    def end_early(self) -> None:
        """Terminated before its timer: the table needs the room (``TransactionLayer``)."""
        self.state = _TERMINATED
        self._timers.clear()
        self._immediate = None


# --------------------------------------------------------------------------- matching


def _sent_by(via: Any) -> tuple[str, int]:
    port = via.port
    if port is None:
        port = 5061 if via.transport.upper() in ("TLS", "WSS", "TLS-SCTP") else 5060
    return via.host.lower(), port


def server_key(request: Any) -> Hashable:
    """§17.2.3 key for a request: (branch, sent-by, method) with ACK folded onto INVITE; for a branch
    without the magic cookie, the RFC 2543 fields (Request-URI, From tag, Call-ID, CSeq, top Via).
    The To tag is checked separately (``_rfc2543_match``) because an ACK carries the tag of *our*
    response, not the INVITE's."""
    via = request.top_via
    method = request.method
    if method == "ACK":
        method = "INVITE"
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return (branch, *_sent_by(via), method)
    return (
        None,
        request.uri,
        request.from_tag,
        request.call_id,
        request.cseq[0],
        method,
        via.transport.upper(),
        *_sent_by(via),
        branch,
    )


def _rfc2543_match(txn: ServerTransaction, request: Any) -> bool:
    if txn.key[0] is not None:  # type: ignore[index]
        return True
    if request.method == "ACK":
        response = txn.last_response
        return response is not None and request.to_tag == response.to_tag
    return request.to_tag == txn.request.to_tag


def client_key(message: Any) -> Hashable:
    """§17.1.3 key: top Via branch and CSeq method (a CANCEL shares the INVITE's branch)."""
    return (message.top_via.branch, message.cseq[1])


# --------------------------------------------------------------------------- the layer


class TransactionLayer:
    """All live transactions of one process, matched by key, woken from one timer wheel.

    The edge feeds it received messages and timer wake-ups; the TU sends through it. Every method
    returns the outputs in order. Terminated transactions are dropped at once from the key maps and
    the wheel.
    ``max_server`` caps the server transactions. A new request that finds the table full ends the
    oldest lingering one early (past its final response, it only waits up to 64*T1 for
    retransmissions: Completed, Confirmed, Accepted) and takes its place; only a table full of
    transactions still in progress answers ``TableFull`` instead of a transaction. So the cap bounds
    memory under a flood without capping the call rate at ``max_server`` / 64*T1 (two server
    transactions linger 32 s per call over UDP: 65,536 refused new calls from 1,024 calls/s on).
    Retransmissions of live transactions are still matched.
    """

    __slots__ = (
        "_client", "_lingering", "_server", "_wheel", "ack_builder", "config", "keep", "max_server", "stats",
    )  # fmt: skip

    def __init__(
        self,
        config: TimerConfig = DEFAULT_TIMERS,
        *,
        ack_builder: Callable[[Any, Any], Any] = build_ack,
        max_server: int | None = None,
        keep: Callable[[Any], Any] | None = None,
    ) -> None:
        self.config = config
        self.ack_builder = ack_builder
        self.max_server = max_server
        self.keep = keep  # message -> what a transaction past its final response holds of it
        self._server: dict[Hashable, ServerTransaction] = {}
        self._client: dict[Hashable, ClientTransaction] = {}
        self._wheel: TimerWheel[Transaction] = TimerWheel()
        # server transactions in the order they began to linger: the oldest is ended first when the
        # table is full (entries of those ended meanwhile are skipped, and compacted away)
        self._lingering: deque[ServerTransaction] = deque()
        self.stats = {
            "server_created": 0,
            "client_created": 0,
            "retransmissions_absorbed": 0,
            "timed_out": 0,
            "stray_responses": 0,
            "refused_table_full": 0,
            "ended_early": 0,
        }

    # ---- counts for the "transactions active" gauge
    @property
    def active_server(self) -> int:
        return len(self._server)

    @property
    def active_client(self) -> int:
        return len(self._client)

    def __len__(self) -> int:
        return len(self._server) + len(self._client)

    # ---- network side
    def on_request(self, request: Any, source: Any, now: float) -> list[Output]:
        """A request from the network: absorbed by its transaction, or a new one for the TU."""
        key = server_key(request)
        txn = self._server.get(key)
        if txn is not None and (key[0] is not None or _rfc2543_match(txn, request)):  # type: ignore[index]
            if request.method != "ACK":
                self.stats["retransmissions_absorbed"] += 1
            out = txn.receive_request(request, now)
            self._settle(txn)
            return out
        if request.method == "ACK":
            return [RequestReceived(request, source, None)]
        ended: TransactionTerminated | None = None
        if self.max_server is not None and len(self._server) >= self.max_server:
            ended = self._end_oldest_lingering()
            if ended is None:
                self.stats["refused_table_full"] += 1
                return [TableFull(request, source)]
        txn = ServerTransaction(request, source, self.config)
        txn.key = key
        self._server[key] = txn
        self.stats["server_created"] += 1
        out = txn.start(now)
        self._settle(txn)
        return out if ended is None else [ended, *out]

    def on_response(self, response: Any, now: float) -> list[Output]:
        """A response from the network: to its client transaction (§17.1.3), or up as stray."""
        txn = self._client.get(client_key(response))
        if txn is None:
            self.stats["stray_responses"] += 1
            return [ResponseReceived(response, None)]
        out = txn.receive_response(response, now)
        self._settle(txn)
        return out

    def on_transport_error(self, transaction: Transaction, now: float) -> list[Output]:
        """The edge could not send one of ``transaction``'s messages."""
        out = transaction.on_transport_error(now)
        self._settle(transaction)
        return out

    def transport_failed(self, request: Any, now: float) -> list[Output]:
        """The edge could not send ``request`` (a connection that could not be opened, a TLS peer
        that failed its certificate check): its client transaction fails now, not at Timer B/F."""
        txn = self._client.get(client_key(request))
        return [] if txn is None else self.on_transport_error(txn, now)

    def on_timer(self, now: float) -> list[Output]:
        out: list[Output] = []
        for txn in self._wheel.pop_due(now):
            fired = txn.on_timer(now)
            if txn.state is State.TERMINATED and any(type(o) is TransactionTimedOut for o in fired):
                self.stats["timed_out"] += 1
            out += fired
            self._settle(txn)
        return out

    def next_deadline(self) -> float | None:
        """When the edge must next call ``on_timer`` (None: nothing armed)."""
        return self._wheel.peek()

    # ---- TU side
    def send_request(
        self, request: Any, destination: Any, now: float, *, reliable: bool | None = None
    ) -> tuple[ClientTransaction, list[Output]]:
        """Start a client transaction. The request's top Via must carry a unique branch (``new_branch``)."""
        if not request.top_via.branch:
            raise ValueError("a client transaction needs a branch in the top Via (use new_branch())")
        key = client_key(request)
        if key in self._client:
            raise ValueError(f"branch {request.top_via.branch!r} already in use for {request.method}")
        txn = ClientTransaction(
            request, destination, self.config, reliable=reliable, ack_builder=self.ack_builder
        )
        txn.key = key
        self._client[key] = txn
        self.stats["client_created"] += 1
        out = txn.start(now)
        self._settle(txn)
        return txn, out

    def send_response(
        self, response: Any, now: float, transaction: ServerTransaction | None = None
    ) -> list[Output]:
        """Send the TU's response through its server transaction: the one given, or the one matching
        the response's top Via and CSeq method (RFC 3261 branches only)."""
        txn = transaction
        if txn is None:
            via = response.top_via
            branch = via.branch
            if branch is None or not branch.startswith(MAGIC_COOKIE):
                raise TransactionNotFound("pass the transaction for an RFC 2543 (cookie-less) branch")
            txn = self._server.get((branch, *_sent_by(via), response.cseq[1]))
            if txn is None:
                raise TransactionNotFound(f"no server transaction for branch {branch!r}")
        out = txn.send_response(response, now)
        self._settle(txn)
        return out

    def find_cancel_target(self, cancel: Any) -> ServerTransaction | None:
        """The INVITE server transaction a received CANCEL refers to (§9.2), if it can still be
        cancelled (Proceeding: no final response sent). None otherwise: the caller answers the CANCEL
        481, or 200 with no further effect once the final went out (§9.2)."""
        key = server_key(cancel)
        key = (*key[:-1], "INVITE") if key[0] is not None else (*key[:5], "INVITE", *key[6:])  # type: ignore[index]
        txn = self._server.get(key)
        if txn is None or txn.state is not State.PROCEEDING:
            return None
        if key[0] is None and cancel.to_tag != txn.request.to_tag:
            return None
        return txn

    def server_transaction(self, key: Hashable) -> ServerTransaction | None:
        return self._server.get(key)

    def client_transaction(self, key: Hashable) -> ClientTransaction | None:
        return self._client.get(key)

    # ---- bookkeeping
    def _end_oldest_lingering(self) -> TransactionTerminated | None:
        """End the server transaction that has lingered longest (None: none lingers)."""
        queue, server = self._lingering, self._server
        while queue:
            txn = queue.popleft()
            if txn.state in _LINGERING and server.get(txn.key) is txn:
                txn.end_early()
                del server[txn.key]
                self._wheel.cancel(txn)
                self.stats["ended_early"] += 1
                return TransactionTerminated(txn)
        return None

    def _settle(self, txn: Transaction) -> None:
        state = txn.state
        if state is not _TERMINATED:
            if state in _LINGERING:
                if type(txn) is ServerTransaction and not txn.lingering:
                    txn.lingering = True
                    queue = self._lingering
                    queue.append(txn)
                    if len(queue) > 2 * len(self._server) + 1024:
                        self._lingering = deque(t for t in queue if t.state in _LINGERING)
                if self.keep is not None:
                    txn.shrink(self.keep)  # type: ignore[attr-defined]
            self._wheel.schedule(txn)
            return
        table: dict = self._server if isinstance(txn, ServerTransaction) else self._client
        if table.get(txn.key) is txn:
            del table[txn.key]
        self._wheel.cancel(txn)


# --------------------------------------------------------------------------- outputs
# Defined after the transactions their fields name: a mypyc build (setup.py) resolves a dataclass
# field's class when the module loads, and a class defined further down is not there yet.


@fast_init
@dataclass(frozen=True, slots=True)
class SendMessage:
    """Hand ``message`` to the transport: to ``destination`` (client side: what the TU chose, §18.1.1)
    or back to the request's ``source`` (server side: the edge applies §18.2.2)."""

    message: Any
    destination: Any
    transaction: Transaction
    retransmission: bool = False


@fast_init
@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request for the TU. ``transaction`` is None for the ACK of a 2xx (it matched no
    transaction, or an INVITE server transaction in Accepted): dialog business, not a transaction's."""

    request: Any
    source: Any
    transaction: ServerTransaction | None


@fast_init
@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for the TU. ``transaction`` is None for a stray response (e.g. a 2xx
    retransmission after the INVITE client transaction ended), which a proxy forwards statelessly."""

    response: Any
    transaction: ClientTransaction | None


@fast_init
@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """Timer B or F (no final response: the TU treats it as 408) or H (no ACK for our final)."""

    transaction: Transaction
    timer: str


@fast_init
@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The transport reported a send failure (§17.1.4, §17.2.4); the TU treats it as 503."""

    transaction: Transaction


@fast_init
@dataclass(frozen=True, slots=True)
class TableFull:
    """A new request that would need a server transaction while the table holds ``max_server`` of
    them, none of them lingering: none was created (memory stays bounded under a flood); the edge
    refuses it statelessly."""

    request: Any
    source: Any


@fast_init
@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """The transaction reached Terminated and has been (or can be) forgotten."""

    transaction: Transaction


Output = (
    SendMessage
    | RequestReceived
    | ResponseReceived
    | TransactionTimedOut
    | TransportFailed
    | TableFull
    | TransactionTerminated
)
