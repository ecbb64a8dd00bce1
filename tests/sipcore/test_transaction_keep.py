"""Transactions past their final response hold kept copies (``TransactionLayer(keep=...)``): what
they send and how they match stays that of the full messages, with a handful of objects for the
cyclic collector instead of every parsed header (``Message.kept_copy``, ``KeptHeaders``)."""

from __future__ import annotations

import gc
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sipcore.message import Message, Request, Response, parse
from sipcore.timers import TimerConfig
from sipcore.transaction import (
    RequestReceived,
    SendMessage,
    ServerTransaction,
    State,
    TransactionLayer,
)
from tests.sipcore.test_transaction_support import DEST, SOURCE, make_ack, make_request, reply

CFG = TimerConfig()
STATUSES = [100, 180, 200, 202, 404, 486, 603]


def _reachable(roots: list[object], stop: set[int] = frozenset()) -> set[int]:  # type: ignore[assignment]
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or id(obj) in stop or not gc.is_tracked(obj) or isinstance(obj, type):
            continue
        seen.add(id(obj))
        stack.extend(gc.get_referents(obj))
    return seen


def _own_tracked(txn: ServerTransaction) -> int:
    """GC-tracked objects reachable from one transaction and not shared with every other one (its
    state table, timer settings): what a full collection walks for it."""
    shared = _reachable([txn._table, txn.config, txn.state, txn.machine])
    return len(_reachable([txn], shared))


def _lingering(layer: TransactionLayer, method: str) -> ServerTransaction:
    out = layer.on_request(make_request(method), SOURCE, 0.0)
    txn = out[0].transaction  # type: ignore[union-attr]
    status = 486 if method == "INVITE" else 200
    layer.send_response(txn.request.make_response(status, to_tag="t1"), 0.1, txn)
    return txn


def test_a_lingering_transaction_holds_a_handful_of_objects() -> None:
    for method in ("INVITE", "BYE"):
        full = _lingering(TransactionLayer(CFG), method)
        kept = _lingering(TransactionLayer(CFG, keep=Message.kept_copy), method)
        gc.collect()  # as the server's young pass: tuples of strings stop being tracked
        assert kept.state is full.state is State.COMPLETED
        kept.source = full.source = None  # the edge's flow: not the transaction's to shrink
        # measured: 35 objects without keep (these messages are short: a phone's are longer), 5 with it
        counts = _own_tracked(kept), _own_tracked(full)
        assert counts[0] <= 6 < 30 <= counts[1], (method, counts)


def test_an_invite_client_transaction_ended_by_a_2xx_is_let_go_at_once() -> None:
    """A 2xx ends an INVITE client transaction at once (§17.1.1.2): the layer holds nothing of it
    after that (its Timer B entry in the old deadline heap held it, kept, for up to 32 s)."""
    layer = TransactionLayer(CFG, keep=Message.kept_copy)
    invite = make_request("INVITE", branch="z9hG4bKc2xx")
    txn, _ = layer.send_request(invite, DEST, 0.0)
    assert txn.timer_slot is not None and layer.next_deadline() == 0.5  # Timer A
    out = layer.on_response(reply(invite, 200), 0.1)
    kinds = [type(o).__name__ for o in out]
    assert txn.state is State.TERMINATED and kinds == ["ResponseReceived", "TransactionTerminated"]
    assert txn.timer_slot is None and len(layer._wheel) == 0 and len(layer) == 0
    assert layer.next_deadline() is None and layer.on_timer(40.0) == []
    assert txn.request is invite  # not shrunk: nothing keeps it any longer


def test_a_kept_copy_sends_the_same_bytes_and_reads_the_same_identity() -> None:
    invite = make_request("INVITE")
    resp = invite.make_response(486, to_tag="t1", extra=(("Warning", '399 pbx "busy"'),))
    for msg in (invite, resp, reply(invite, 200)):
        data = msg.serialize()
        copy = msg.kept_copy()
        assert type(copy) is type(msg) and copy.serialize() == data and msg.raw == data
        for field in ("call_id", "cseq", "from_tag", "to_tag"):
            assert getattr(copy, field) == getattr(msg, field)
        assert copy.top_via.branch == msg.top_via.branch and copy.top_via.host == msg.top_via.host
        assert copy.headers.get_all("contact") == msg.headers.get_all("contact")  # split again when read
        fields = [list(e) for e in msg.headers.entries if e[0] != "content-length"]  # serialize adds one
        assert [e for e in copy.headers.entries if e[0] != "content-length"] == fields
    assert isinstance(invite.kept_copy(), Request) and isinstance(resp.kept_copy(), Response)


def _fingerprint(outputs: list[Any], index: dict[int, tuple[int, object]]) -> list[tuple]:
    """Outputs as comparable values: kind, bytes sent, retransmission flag, which transaction (in
    order of first appearance; the index holds each one, so no id is reused)."""
    rows = []
    for o in outputs:
        txn = getattr(o, "transaction", None)
        which = index.setdefault(id(txn), (len(index), txn))[0] if txn is not None else None
        if type(o) is SendMessage:
            rows.append(("send", o.message.serialize(), o.destination, o.retransmission, which))
        elif type(o) is RequestReceived:
            rows.append(("request", o.request.serialize(), which))
        else:
            rows.append((type(o).__name__, which))
    return rows


class _Side:
    """One layer and the TU's view of it, fed the same events as the other side."""

    def __init__(self, keep: Any) -> None:
        self.layer = TransactionLayer(CFG, keep=keep)
        self.index: dict[int, tuple[int, object]] = {}
        self.servers: list[tuple[ServerTransaction, Request]] = []
        self.clients: list[Request] = []

    def run(self, op: str, n: int, status: int, now: float) -> list[tuple]:
        layer, branch = self.layer, f"z9hG4bKk{n}"
        if op == "request":
            out = layer.on_request(make_request(["INVITE", "BYE"][n % 2], branch=branch), SOURCE, now)
        elif op == "ack":
            invite = make_request("INVITE", branch=branch)
            out = layer.on_request(make_ack(invite, reply(invite, 486, "t1")), SOURCE, now)
        elif op == "answer" and self.servers:
            txn, request = self.servers[n % len(self.servers)]  # the TU answers from its own request
            out = layer.send_response(request.make_response(status, to_tag="t1"), now, txn)
        elif op == "send":
            req = make_request(["INVITE", "OPTIONS"][n % 2], branch=f"z9hG4bKc{len(self.clients)}")
            _, out = layer.send_request(req, DEST, now)
            self.clients.append(req)
        elif op == "response" and self.clients:
            out = layer.on_response(reply(self.clients[n % len(self.clients)], status), now)
        else:
            out = layer.on_timer(now)
        self.servers += [
            (o.transaction, o.request) for o in out if type(o) is RequestReceived and o.transaction
        ]
        return _fingerprint(out, self.index)


@settings(max_examples=80, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.1, 0.5, 4.0, 5.0, 32.0, 1.7]),
            st.sampled_from(["request", "request", "ack", "answer", "answer", "send", "response", "timer"]),
            st.integers(min_value=0, max_value=3),
            st.sampled_from(STATUSES),
        ),
        max_size=40,
    )
)
def test_kept_copies_change_nothing_the_layer_does(ops: list) -> None:
    """Differential: the same traffic through a layer keeping full messages and one keeping copies
    gives the same outputs, byte for byte, retransmissions and absorbed ACKs included."""
    full, kept = _Side(None), _Side(Message.kept_copy)
    now = 0.0
    for dt, op, n, status in ops:
        now += dt
        assert full.run(op, n, status, now) == kept.run(op, n, status, now), (op, n, status)
        assert [t.state for t, _ in full.servers] == [t.state for t, _ in kept.servers]


def test_an_accepted_invite_holds_neither_message() -> None:
    """RFC 6026 Accepted: a retransmitted INVITE is absorbed and the TU sends its 2xx again itself,
    so the transaction holds neither its request nor its 2xx (its key matches): a 2xx sent again
    goes out as given and is not held either; the 2xx's ACK still passes to the TU."""
    layer = TransactionLayer(CFG, keep=Message.kept_copy)
    out = layer.on_request(make_request("INVITE"), SOURCE, 0.0)
    txn, invite = out[0].transaction, out[0].request  # type: ignore[union-attr]
    first = invite.make_response(200, to_tag="t1")
    assert layer.send_response(first, 0.1, txn) == [SendMessage(first, SOURCE, txn)]
    assert txn.state is State.ACCEPTED and txn.method == "INVITE"
    assert txn.request is None and txn.last_final is None and txn.last_response is None
    assert layer.on_request(make_request("INVITE"), SOURCE, 0.5) == []  # absorbed
    again = parse(first.serialize())  # a forked or retransmitted 2xx relayed from downstream
    assert isinstance(again, Response)
    assert layer.send_response(again, 0.6, txn) == [SendMessage(again, SOURCE, txn)]
    assert txn.last_final is None
    ack = make_ack(invite, first)
    out = layer.on_request(ack, SOURCE, 0.7)
    assert [type(o) for o in out] == [RequestReceived]  # the 2xx's ACK: the TU's (§17.1.1.3)


def test_an_rfc2543_transaction_keeps_what_its_matching_reads() -> None:
    """Without the magic cookie a retransmission is matched by the To tag too (§17.2.3): such a
    transaction keeps copies of its request and final response, and still matches."""
    layer = TransactionLayer(CFG, keep=Message.kept_copy)
    invite = make_request("INVITE", branch="old2543")
    txn = layer.on_request(invite, SOURCE, 0.0)[0].transaction  # type: ignore[union-attr]
    busy = invite.make_response(486, to_tag="t1")
    layer.send_response(busy, 0.1, txn)
    assert txn.request is not None and txn.request is not invite
    assert txn.last_final is not None and txn.last_final.serialize() == busy.serialize()
    again = layer.on_request(make_request("INVITE", branch="old2543"), SOURCE, 0.2)
    assert [o.message.serialize() for o in again] == [busy.serialize()]  # type: ignore[union-attr]


def test_retransmissions_repeat_the_bytes_of_the_full_response() -> None:
    """Timer G (INVITE, non-2xx over UDP) and a retransmitted BYE are answered from the kept copy
    with exactly what went out first; the ACK still moves the INVITE to Confirmed."""
    layer = TransactionLayer(CFG, keep=Message.kept_copy)
    invite, bye = make_request("INVITE"), make_request("BYE", branch="z9hG4bKbye")
    sent: dict[str, bytes] = {}
    for request, status in ((invite, 486), (bye, 200)):
        txn = layer.on_request(request, SOURCE, 0.0)[0].transaction  # type: ignore[union-attr]
        response = request.make_response(status, to_tag="t1", extra=(("Warning", '399 pbx "gone"'),))
        first = layer.send_response(response, 0.0, txn)
        sent[request.method] = first[0].message.serialize()  # type: ignore[union-attr]
        assert txn.last_final is not response and txn.request is not request
    again = layer.on_timer(CFG.t1)  # Timer G
    assert [o.message.serialize() for o in again] == [sent["INVITE"]]  # type: ignore[union-attr]
    again = layer.on_request(make_request("BYE", branch="z9hG4bKbye"), SOURCE, 1.0)
    assert [o.message.serialize() for o in again] == [sent["BYE"]]  # type: ignore[union-attr]
    assert b"Warning: 399" in sent["BYE"] and b"Warning: 399" in sent["INVITE"]
    txn = layer.server_transaction(("z9hG4bKtest1", "192.0.2.10", 5060, "INVITE"))
    assert txn is not None
    layer.on_request(make_ack(invite, reply(invite, 486, "t1")), SOURCE, 1.2)
    assert txn.state is State.CONFIRMED
