"""TransactionLayer: §17.1.3/§17.2.3 matching, RFC 2543 fallback, absorption, timers, counts."""

from __future__ import annotations

import pytest

from sipcore.timers import TimerConfig
from sipcore.transaction import (
    RequestReceived,
    ResponseReceived,
    SendMessage,
    ServerTransaction,
    State,
    TransactionLayer,
    TransactionNotFound,
    TransactionTerminated,
    new_branch,
)
from tests.sipcore.test_transaction_support import DEST, SOURCE, make_ack, make_request, names, reply


def new_server(layer: TransactionLayer, method: str = "INVITE", **kw: object) -> ServerTransaction:
    out = layer.on_request(make_request(method, **kw), SOURCE, 0.0)  # type: ignore[arg-type]
    assert isinstance(out[0], RequestReceived) and out[0].transaction is not None
    return out[0].transaction


# ---------------------------------------------------------------- server matching, §17.2.3


def test_retransmission_is_absorbed_by_its_transaction() -> None:
    layer = TransactionLayer()
    txn = new_server(layer, "OPTIONS")
    ok = txn.request.make_response(200, to_tag="t")
    layer.send_response(ok, 0.1)
    out = layer.on_request(make_request("OPTIONS"), SOURCE, 0.5)
    assert out == [SendMessage(ok, SOURCE, txn, True)]
    assert layer.active_server == 1 and layer.stats["retransmissions_absorbed"] == 1


@pytest.mark.parametrize(
    "change",
    [
        {"branch": "z9hG4bKother"},
        {"host": "192.0.2.11"},
        {"port": 5080},
        {"method": "OPTIONS"},
    ],
)
def test_a_different_branch_sent_by_or_method_is_a_new_transaction(change: dict) -> None:
    layer = TransactionLayer()
    first = new_server(layer, "INFO")
    kw = {"method": "INFO", **change}
    second = new_server(layer, **kw)
    assert second is not first and layer.active_server == 2


def test_sent_by_host_case_and_default_port_match() -> None:
    layer = TransactionLayer()
    txn = new_server(layer, "OPTIONS", host="PBX.example.com", port=None)
    txn_again = layer.on_request(make_request("OPTIONS", host="pbx.EXAMPLE.com", port=5060), SOURCE, 0.1)
    assert txn_again == [] and layer.active_server == 1 and txn.state is State.TRYING


def test_ack_for_a_failure_matches_the_invite_transaction() -> None:
    layer = TransactionLayer()
    txn = new_server(layer)
    busy = txn.request.make_response(486, to_tag="t1")
    layer.send_response(busy, 0.1)
    assert layer.on_request(make_ack(txn.request, busy), SOURCE, 0.2) == []
    assert txn.state is State.CONFIRMED


def test_ack_for_a_2xx_goes_to_the_tu_without_a_transaction() -> None:
    layer = TransactionLayer()
    txn = new_server(layer)
    ok = txn.request.make_response(200, to_tag="t1")
    assert names(layer.send_response(ok, 0.1)) == ["SendMessage"]
    ack = make_request("ACK", branch="z9hG4bKnewbranch", to_tag="t1")  # a 2xx's ACK: new branch
    assert layer.on_request(ack, SOURCE, 0.2) == [RequestReceived(ack, SOURCE, None)]
    assert layer.on_timer(32.1) == [TransactionTerminated(txn)]
    assert layer.active_server == 0


def test_invite_retransmitted_after_the_2xx_is_not_a_new_call() -> None:
    layer = TransactionLayer()
    txn = new_server(layer)
    layer.send_response(txn.request.make_response(200, to_tag="t1"), 0.1)
    assert layer.on_request(make_request(), SOURCE, 0.5) == []
    assert layer.active_server == 1 and layer.stats["server_created"] == 1
    # RFC 3261 as written: the retransmission would reach the TU as a new INVITE
    plain = TransactionLayer(TimerConfig(rfc6026=False))
    first = new_server(plain)
    plain.send_response(first.request.make_response(200, to_tag="t1"), 0.1)
    out = plain.on_request(make_request(), SOURCE, 0.5)
    assert names(out) == ["RequestReceived"] and out[0].transaction is not first


def test_cancel_is_its_own_transaction_and_finds_its_invite() -> None:
    layer = TransactionLayer()
    invite = new_server(layer)
    cancel_req = make_request("CANCEL", cseq_method="CANCEL")
    cancel = layer.on_request(cancel_req, SOURCE, 0.5)[0].transaction
    assert cancel is not invite and layer.active_server == 2
    assert layer.find_cancel_target(cancel_req) is invite
    assert layer.find_cancel_target(make_request("CANCEL", branch="z9hG4bKnope")) is None
    layer.send_response(invite.request.make_response(200, to_tag="t1"), 0.6, invite)
    assert layer.find_cancel_target(cancel_req) is None  # answered: too late to cancel (Accepted)


def test_rfc2543_requests_match_on_uri_tags_call_id_cseq_and_via() -> None:
    layer = TransactionLayer()
    txn = new_server(layer, branch=None)
    retransmission = layer.on_request(make_request(branch=None), SOURCE, 0.1)
    assert names(retransmission) == ["SendMessage"] and retransmission[0].message.status == 100
    assert layer.active_server == 1
    assert layer.find_cancel_target(make_request("CANCEL", branch=None, cseq_method="CANCEL")) is txn
    other = layer.on_request(make_request(branch=None, cseq=2), SOURCE, 0.1)
    assert names(other) == ["RequestReceived"] and layer.active_server == 2
    other_tag = layer.on_request(make_request(branch=None, from_tag="x"), SOURCE, 0.1)
    assert names(other_tag) == ["RequestReceived"] and layer.active_server == 3
    # the ACK carries the To tag of our response, not the INVITE's
    busy = txn.request.make_response(486, to_tag="srv")
    layer.send_response(busy, 0.2, txn)
    wrong = make_request("ACK", branch=None, to_tag="not-ours")
    assert layer.on_request(wrong, SOURCE, 0.3) == [RequestReceived(wrong, SOURCE, None)]
    assert layer.on_request(make_request("ACK", branch=None, to_tag="srv"), SOURCE, 0.3) == []
    assert txn.state is State.CONFIRMED
    assert layer.find_cancel_target(make_request("CANCEL", branch=None, cseq_method="CANCEL")) is None


def test_rfc2543_branch_without_cookie_is_part_of_the_via() -> None:
    layer = TransactionLayer()
    new_server(layer, "OPTIONS", branch="oldstyle1")
    assert layer.on_request(make_request("OPTIONS", branch="oldstyle1"), SOURCE, 0.1) == []
    assert names(layer.on_request(make_request("OPTIONS", branch="oldstyle2"), SOURCE, 0.1)) == [
        "RequestReceived"
    ]


def test_send_response_needs_the_transaction_for_rfc2543() -> None:
    layer = TransactionLayer()
    txn = new_server(layer, "OPTIONS", branch=None)
    with pytest.raises(TransactionNotFound):
        layer.send_response(txn.request.make_response(200), 0.1)
    assert names(layer.send_response(txn.request.make_response(200), 0.1, txn)) == ["SendMessage"]


def test_send_response_for_a_gone_transaction_is_an_error() -> None:
    layer = TransactionLayer()
    with pytest.raises(TransactionNotFound):
        layer.send_response(make_request("OPTIONS").make_response(200), 0.1)


# ---------------------------------------------------------------- client matching, §17.1.3


def test_responses_match_branch_and_cseq_method() -> None:
    layer = TransactionLayer()
    invite_req = make_request(branch=new_branch())
    invite, out = layer.send_request(invite_req, DEST, 0.0)
    assert out == [SendMessage(invite_req, DEST, invite)]
    cancel_req = make_request("CANCEL", branch=invite_req.top_via.branch)
    cancel, _ = layer.send_request(cancel_req, DEST, 0.1)
    assert layer.active_client == 2
    ok_cancel = reply(cancel_req, 200)
    assert layer.on_response(ok_cancel, 0.2) == [ResponseReceived(ok_cancel, cancel)]
    terminated = reply(invite_req, 487)
    assert names(layer.on_response(terminated, 0.3)) == ["ResponseReceived", "SendMessage"]
    assert invite.state is State.COMPLETED


def test_stray_response_goes_up_without_a_transaction() -> None:
    layer = TransactionLayer()
    req = make_request(branch=new_branch())
    layer.send_request(req, DEST, 0.0)
    layer.on_response(reply(req, 200), 0.1)
    again = reply(req, 200)  # 2xx retransmission after the INVITE transaction ended
    assert layer.on_response(again, 0.5) == [ResponseReceived(again, None)]
    assert layer.stats["stray_responses"] == 1 and layer.active_client == 0


def test_send_request_rejects_missing_or_reused_branches() -> None:
    layer = TransactionLayer()
    with pytest.raises(ValueError, match="branch"):
        layer.send_request(make_request(branch=None), DEST, 0.0)
    layer.send_request(make_request("OPTIONS"), DEST, 0.0)
    with pytest.raises(ValueError, match="already in use"):
        layer.send_request(make_request("OPTIONS"), DEST, 0.0)


# ---------------------------------------------------------------- timers and bookkeeping


def test_layer_wakes_transactions_in_deadline_order() -> None:
    layer = TransactionLayer()
    a, _ = layer.send_request(make_request("OPTIONS", branch="z9hG4bKa"), DEST, 0.0)
    b, _ = layer.send_request(make_request("OPTIONS", branch="z9hG4bKb"), DEST, 0.2)
    assert layer.next_deadline() == 0.5
    out = layer.on_timer(0.5)
    assert [o.transaction for o in out] == [a]
    assert layer.next_deadline() == 0.7
    assert [o.transaction for o in layer.on_timer(0.7)] == [b]
    assert layer.next_deadline() == 1.5


def test_a_deadline_that_moves_later_is_followed() -> None:
    layer = TransactionLayer(TimerConfig(trying_delay=None))
    txn = new_server(layer, "OPTIONS")
    assert layer.next_deadline() is None
    layer.send_response(txn.request.make_response(200), 1.0)
    assert layer.next_deadline() == 33.0
    assert layer.on_timer(32.9) == []
    assert layer.on_timer(33.0) == [TransactionTerminated(txn)]
    assert len(layer) == 0 and layer.next_deadline() is None


def test_terminated_transactions_are_dropped_and_counted() -> None:
    layer = TransactionLayer()
    for i in range(5):
        layer.on_request(make_request("OPTIONS", branch=f"z9hG4bK{i}"), SOURCE, 0.0)
        layer.send_request(make_request("OPTIONS", branch=f"z9hG4bKc{i}"), DEST, 0.0)
    assert (layer.active_server, layer.active_client, len(layer)) == (5, 5, 10)
    out = layer.on_timer(100.0)
    assert names(out).count("TransactionTimedOut") == 5
    assert (layer.active_server, layer.active_client) == (5, 0)
    assert layer.stats["timed_out"] == 5


def test_ended_transactions_leave_nothing_filed() -> None:
    layer = TransactionLayer()
    for i in range(3000):
        req = make_request(branch=f"z9hG4bKx{i}")
        layer.send_request(req, DEST, 0.0)
        layer.on_response(reply(req, 200), 0.01)  # terminates with Timer A/B armed
    assert len(layer) == 0
    assert len(layer._wheel) == 0  # a heap kept 3000 stale entries until compacted
    assert layer.next_deadline() is None


def test_transport_error_through_the_layer() -> None:
    layer = TransactionLayer()
    txn, _ = layer.send_request(make_request("OPTIONS"), DEST, 0.0)
    assert names(layer.on_transport_error(txn, 0.1)) == ["TransportFailed", "TransactionTerminated"]
    assert len(layer) == 0


def test_invite_trying_timer_is_driven_by_the_layer() -> None:
    layer = TransactionLayer()
    txn = new_server(layer)
    assert layer.next_deadline() == 0.2
    out = layer.on_timer(0.2)
    assert names(out) == ["SendMessage"] and out[0].message.status == 100 and out[0].transaction is txn
