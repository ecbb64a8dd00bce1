"""The server transaction cap (``TransactionLayer(max_server=...)``): a full table makes room by ending
its oldest lingering transaction (past its final response, only waiting for retransmissions), and
refuses (``TableFull``) only when every transaction in it is still in progress. Before, lingering
ones counted like the rest: two per call for 32 s over UDP, so 65,536 refused new calls from 1,024
calls/s on (a one-process search failed there with the CPU 75 % busy)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipcore.transaction import (
    ServerTransaction,
    State,
    TableFull,
    TransactionLayer,
    TransactionTerminated,
)
from tests.sipcore.test_transaction_support import SOURCE, make_request, names, reply


def _answered(layer: TransactionLayer, branch: str, now: float, method: str = "BYE") -> ServerTransaction:
    """A server transaction that got its final response: Completed (non-INVITE) or Accepted (2xx)."""
    request = make_request(method, branch=branch, call_id=f"{branch}@x")
    out = layer.on_request(request, SOURCE, now)
    txn = out[-1].transaction  # RequestReceived
    layer.send_response(reply(request, 200), now, txn)
    assert txn.state in (State.COMPLETED, State.ACCEPTED)
    return txn


def _pending(layer: TransactionLayer, branch: str, now: float) -> ServerTransaction:
    """A server transaction the TU has not answered yet (Trying / Proceeding)."""
    out = layer.on_request(make_request("OPTIONS", branch=branch, call_id=f"{branch}@x"), SOURCE, now)
    return out[-1].transaction


def test_a_full_table_ends_its_oldest_lingering_transaction_for_a_new_request() -> None:
    layer = TransactionLayer(max_server=3)
    first = _answered(layer, "z9hG4bK1", 0.0)
    second = _answered(layer, "z9hG4bK2", 1.0, method="INVITE")  # Accepted (RFC 6026)
    _pending(layer, "z9hG4bK3", 2.0)
    new = make_request("OPTIONS", branch="z9hG4bK4", call_id="4@x")
    out = layer.on_request(new, SOURCE, 3.0)
    assert names(out) == ["TransactionTerminated", "RequestReceived"]
    assert out[0] == TransactionTerminated(first) and first.state is State.TERMINATED
    assert first.timers() == {}
    assert layer.server_transaction(first.key) is None and layer.active_server == 3
    assert layer.stats["ended_early"] == 1 and layer.stats["refused_table_full"] == 0
    # the next one takes the INVITE's place: the oldest lingering, not the pending one
    out = layer.on_request(make_request("OPTIONS", branch="z9hG4bK5", call_id="5@x"), SOURCE, 4.0)
    assert out[0] == TransactionTerminated(second) and layer.stats["ended_early"] == 2
    # a retransmission of a transaction still held is matched as before
    assert layer.on_request(new, SOURCE, 4.5) == []


def test_a_table_full_of_transactions_in_progress_refuses() -> None:
    layer = TransactionLayer(max_server=2)
    _answered(layer, "z9hG4bK1", 0.0)
    _pending(layer, "z9hG4bK2", 0.0)
    _pending(layer, "z9hG4bK3", 0.0)  # took the lingering one's place
    other = make_request("OPTIONS", branch="z9hG4bK4", call_id="4@x")
    assert layer.on_request(other, SOURCE, 0.0) == [TableFull(other, SOURCE)]
    assert layer.stats == {**layer.stats, "ended_early": 1, "refused_table_full": 1}
    assert layer.active_server == 2


def test_one_that_already_ended_on_its_timer_is_skipped_not_ended_twice() -> None:
    layer = TransactionLayer(max_server=2)
    first = _answered(layer, "z9hG4bK1", 0.0)
    second = _answered(layer, "z9hG4bK2", 10.0)
    ended = layer.on_timer(40.0)  # timer J (32 s) of the first only
    assert names(ended) == ["TransactionTerminated"] and first.state is State.TERMINATED
    _answered(layer, "z9hG4bK3", 41.0)  # room without ending anyone
    assert layer.stats["ended_early"] == 0
    out = layer.on_request(make_request("OPTIONS", branch="z9hG4bK4", call_id="4@x"), SOURCE, 42.0)
    assert out[0] == TransactionTerminated(second) and layer.stats["ended_early"] == 1
    # its timer entry is still queued: when it comes due it wakes nothing
    assert [o for o in layer.on_timer(43.0) if type(o) is TransactionTerminated] == []


def test_the_lingering_order_stays_bounded_by_the_table() -> None:
    """Entries of transactions that ended on their own are dropped from the order as it grows."""
    layer = TransactionLayer(max_server=100_000)
    now = 0.0
    for i in range(20_000):
        _answered(layer, f"z9hG4bK{i}", now)
        now += 0.01
        layer.on_timer(now)  # each ends 32 s after its answer
    assert layer.active_server < 3_300
    assert len(layer._lingering) <= 2 * layer.active_server + 1024


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["answer", "pending", "tick"]), st.floats(0, 5)), max_size=60))
def test_the_cap_holds_and_only_lingering_ones_are_ended(steps: list[tuple[str, float]]) -> None:
    """Whatever the order: never more than the cap, nothing in progress ended, a refusal only when
    nothing lingers, and every early end is the oldest lingering one."""
    cap = 4
    layer = TransactionLayer(max_server=cap)
    now, lingering, pending = 0.0, [], set()  # the model: lingering in the order they began to
    for i, (what, dt) in enumerate(steps):
        now += dt
        for out in layer.on_timer(now):
            if type(out) is TransactionTerminated:
                lingering = [t for t in lingering if t is not out.transaction]
        branch = f"z9hG4bK{i}"
        if what == "tick":
            continue
        method = "BYE" if what == "answer" else "OPTIONS"
        request = make_request(method, branch=branch, call_id=f"{branch}@x")
        out = layer.on_request(request, SOURCE, now)
        if type(out[0]) is TableFull:
            assert not lingering and len(pending) == cap
            continue
        if type(out[0]) is TransactionTerminated:
            assert out[0].transaction is lingering.pop(0)
        txn = out[-1].transaction
        if what == "answer":
            layer.send_response(reply(request, 200), now, txn)
            lingering.append(txn)
        else:
            pending.add(txn)
        assert layer.active_server <= cap
        assert all(t.state is not State.TERMINATED for t in pending)
