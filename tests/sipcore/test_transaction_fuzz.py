"""Property tests: random event sequences never raise, keep timers consistent with the state, and
every machine whose peer/TU did its part terminates within 64*T1 + T4 of quiet time."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipcore.timers import TimerConfig
from sipcore.transaction import (
    TRANSITIONS,
    ClientTransaction,
    Input,
    Machine,
    ServerTransaction,
    State,
    Transaction,
    TransactionLayer,
    TransactionTerminated,
)
from tests.sipcore.test_transaction_support import DEST, SOURCE, make_ack, make_request, reply

CFG = TimerConfig()
QUIET = 64 * CFG.t1 + CFG.t4
STATUSES = [100, 180, 183, 200, 202, 301, 404, 486, 500, 603]

# Which timers may be armed in each state (anything else is a leaked timer).
ALLOWED = {
    (Machine.INVITE_CLIENT, State.CALLING): {"A", "B"},
    (Machine.INVITE_CLIENT, State.COMPLETED): {"D"},
    (Machine.NON_INVITE_CLIENT, State.TRYING): {"E", "F"},
    (Machine.NON_INVITE_CLIENT, State.PROCEEDING): {"E", "F"},
    (Machine.NON_INVITE_CLIENT, State.COMPLETED): {"K"},
    (Machine.INVITE_SERVER, State.PROCEEDING): {"trying"},
    (Machine.INVITE_SERVER, State.COMPLETED): {"G", "H"},
    (Machine.INVITE_SERVER, State.CONFIRMED): {"I"},
    (Machine.INVITE_SERVER, State.ACCEPTED): {"L"},
    (Machine.NON_INVITE_SERVER, State.COMPLETED): {"J"},
}
# States where only the other side can move the machine on (RFC: no timer runs there).
WAITING = {
    (Machine.INVITE_CLIENT, State.PROCEEDING),  # the proxy's timer C is the TU's business
    (Machine.INVITE_SERVER, State.PROCEEDING),  # the TU owes a final response
    (Machine.NON_INVITE_SERVER, State.TRYING),
    (Machine.NON_INVITE_SERVER, State.PROCEEDING),
}

steps = st.lists(
    st.tuples(
        st.one_of(  # the RFC's edges (T1, T2, 64*T1) as well as arbitrary gaps
            st.sampled_from([0.0, 0.1, 0.2, 0.5, 4.0, 5.0, 32.0]), st.floats(min_value=0, max_value=6)
        ),
        st.sampled_from(["message", "message", "message", "timer", "other", "transport_error"]),
        st.sampled_from(STATUSES),
    ),
    max_size=25,
)


def check_timers(txn: Transaction) -> None:
    armed = set(txn.timers())
    if txn.state is State.TERMINATED:
        assert not armed and txn.next_deadline() is None
    else:
        assert armed <= ALLOWED.get((txn.machine, txn.state), set()), (txn, armed)


def run_quiet(txn: Transaction, last: float, outputs: list) -> float:
    """Wake the machine at each deadline until none is left; returns the time it last fired."""
    now = last
    for _ in range(200):
        at = txn.next_deadline()
        if at is None:
            break
        now = max(now, at)  # a deadline may already be overdue: the sequence did not wake it
        outputs += txn.on_timer(now)
        check_timers(txn)
    return now


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "OPTIONS"]),
    transport=st.sampled_from(["UDP", "TCP"]),
    events=steps,
)
def test_client_machines(method: str, transport: str, events: list) -> None:
    req = make_request(method, transport=transport)
    txn = ClientTransaction(req, DEST, CFG)
    outputs = txn.start(0.0)
    now = 0.0
    for dt, kind, status in events:
        now += dt
        if kind == "message":
            outputs += txn.receive_response(reply(req, status), now)
        elif kind == "timer":
            outputs += txn.on_timer(now)
        elif kind == "transport_error":
            outputs += txn.on_transport_error(now)
        else:
            outputs += txn.receive_response(reply(req, status), now)
        check_timers(txn)
    end = run_quiet(txn, now, outputs)
    assert sum(type(o) is TransactionTerminated for o in outputs) == (1 if txn.terminated else 0)
    if txn.terminated:
        assert end - now <= QUIET
    else:
        assert (txn.machine, txn.state) in WAITING and txn.next_deadline() is None


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "REGISTER"]),
    transport=st.sampled_from(["UDP", "TCP"]),
    trying=st.sampled_from([None, 0.0, 0.2]),
    events=steps,
    answer=st.sampled_from([200, 404, 486]),
)
def test_server_machines(
    method: str, transport: str, trying: float | None, events: list, answer: int
) -> None:
    cfg = TimerConfig(trying_delay=trying)
    txn = ServerTransaction(make_request(method, transport=transport), SOURCE, cfg)
    outputs = txn.start(0.0)
    now = 0.0
    for dt, kind, status in events:
        now += dt
        if kind == "message":
            outputs += txn.send_response(txn.request.make_response(status, to_tag="t"), now)
        elif kind == "timer":
            outputs += txn.on_timer(now)
        elif kind == "transport_error":
            outputs += txn.on_transport_error(now)
        elif method == "INVITE" and status >= 300 and txn.last_final is not None:
            outputs += txn.receive_request(make_ack(txn.request, txn.last_final), now)
        else:
            outputs += txn.receive_request(make_request(method, transport=transport), now)
        check_timers(txn)
    waited = run_quiet(txn, now, outputs)
    if not txn.terminated:  # the TU's part: one final answer, then the peer goes quiet
        assert (txn.machine, txn.state) in WAITING and txn.next_deadline() is None
        now = waited
        outputs += txn.send_response(txn.request.make_response(answer, to_tag="t"), now)
        waited = run_quiet(txn, now, outputs)
    assert txn.terminated and waited - now <= QUIET
    assert sum(type(o) is TransactionTerminated for o in outputs) == 1
    finals = [
        o.message.status
        for o in outputs
        if type(o).__name__ == "SendMessage" and not o.retransmission and o.message.status >= 200
    ]
    failures = [s for s in finals if s >= 300]
    # one final response, ever; only a 2xx may be sent again by the TU (RFC 6026 Accepted state)
    if failures or method != "INVITE":
        assert len(finals) <= 1


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=3, allow_nan=False),
            st.sampled_from(["request", "ack", "cancel", "answer", "send", "response", "timer"]),
            st.integers(min_value=0, max_value=3),
            st.sampled_from(STATUSES),
        ),
        max_size=40,
    )
)
def test_layer_random_traffic_drains(ops: list) -> None:
    layer = TransactionLayer(CFG)
    now = 0.0
    servers: list[ServerTransaction] = []
    sent_requests = []
    for dt, op, n, status in ops:
        now += dt
        branch = f"z9hG4bKf{n}"
        if op == "request":
            out = layer.on_request(make_request(["INVITE", "OPTIONS"][n % 2], branch=branch), SOURCE, now)
        elif op == "ack":
            out = layer.on_request(make_request("ACK", branch=branch, to_tag="t"), SOURCE, now)
        elif op == "cancel":
            out = layer.on_request(make_request("CANCEL", branch=branch), SOURCE, now)
        elif op == "answer" and servers:
            txn = servers[n % len(servers)]
            out = layer.send_response(txn.request.make_response(status, to_tag="t"), now, txn)
        elif op == "send":
            req = make_request(["INVITE", "BYE"][n % 2], branch=f"z9hG4bKc{len(sent_requests)}")
            _, out = layer.send_request(req, DEST, now)
            sent_requests.append(req)
        elif op == "response" and sent_requests:
            out = layer.on_response(reply(sent_requests[n % len(sent_requests)], status), now)
        else:
            out = layer.on_timer(now)
        servers += [o.transaction for o in out if type(o).__name__ == "RequestReceived" and o.transaction]
        assert layer.active_server == len({id(s) for s in servers if not s.terminated})
    # TU answers everything still open, then the network goes quiet
    for txn in servers:
        if not txn.terminated:
            layer.send_response(txn.request.make_response(486, to_tag="t"), now, txn)
    for _ in range(500):
        at = layer.next_deadline()
        if at is None:
            break
        now = max(now, at)
        layer.on_timer(now)
    clients_waiting = [
        t for t in layer._client.values() if (t.machine, t.state) == (Machine.INVITE_CLIENT, State.PROCEEDING)
    ]
    assert layer.active_server == 0
    assert layer.active_client == len(clients_waiting)  # only INVITEs that got a 1xx and no final
    assert layer.next_deadline() is None


def test_table_covers_transport_errors_and_has_no_transitions_out_of_terminated() -> None:
    for (_, state, inp), (_, nxt) in TRANSITIONS.items():
        assert state is not State.TERMINATED
        if inp is Input.TRANSPORT_ERROR:
            assert nxt is State.TERMINATED
    live = {(m, s) for (m, s, _) in TRANSITIONS if s is not State.INITIAL}
    for machine, state in live:
        has_error = (machine, state, Input.TRANSPORT_ERROR) in TRANSITIONS
        # Completed/Confirmed states that send nothing any more need no transport-error exit
        quiet = (machine, state) in {
            (Machine.NON_INVITE_CLIENT, State.COMPLETED),
            (Machine.INVITE_SERVER, State.CONFIRMED),
            (Machine.INVITE_SERVER, State.ACCEPTED),  # RFC 6026: a transport error changes nothing here
        }
        assert has_error != quiet, (machine, state)
