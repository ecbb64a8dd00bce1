"""Client transactions, §17.1: every state and timer of the INVITE and non-INVITE machines, fake clock."""

from __future__ import annotations

import pytest

from sipcore.message import parse
from sipcore.timers import TimerConfig
from sipcore.transaction import (
    ClientTransaction,
    ResponseReceived,
    SendMessage,
    State,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from tests.sipcore.test_transaction_support import DEST, make_request, names, reply


def retransmit_times(txn: ClientTransaction, until: float, timer: str) -> list[float]:
    """Wake the transaction exactly at each deadline of ``timer`` and record when it retransmitted."""
    times = []
    while (at := txn.timers().get(timer)) is not None and at <= until:
        out = txn.on_timer(at)
        if any(isinstance(o, SendMessage) and o.retransmission for o in out):
            times.append(at)
    return times


# ---------------------------------------------------------------- INVITE client, §17.1.1


def test_invite_start_sends_and_arms_a_and_b() -> None:
    req = make_request()
    txn = ClientTransaction(req, DEST)
    out = txn.start(10.0)
    assert out == [SendMessage(req, DEST, txn, False)]
    assert txn.state is State.CALLING
    assert txn.timers() == {"A": 10.5, "B": 42.0}
    assert txn.next_deadline() == 10.5


def test_invite_timer_a_doubles_without_cap_until_b_times_out() -> None:
    txn = ClientTransaction(make_request(), DEST)
    txn.start(0.0)
    # A fires at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 (intervals 0.5, 1, 2, 4, 8, 16: no T2 cap for INVITE)
    assert retransmit_times(txn, 31.9, "A") == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert txn.timers() == {"B": 32.0, "A": 63.5}
    out = txn.on_timer(32.0)
    assert out == [TransactionTimedOut(txn, "B"), TransactionTerminated(txn)]
    assert txn.state is State.TERMINATED and txn.next_deadline() is None


def test_invite_over_tcp_never_retransmits_but_still_times_out() -> None:
    txn = ClientTransaction(make_request(transport="TCP"), DEST)
    txn.start(0.0)
    assert txn.timers() == {"B": 32.0}
    assert names(txn.on_timer(31.99)) == []
    assert names(txn.on_timer(32.0)) == ["TransactionTimedOut", "TransactionTerminated"]


def test_invite_provisional_moves_to_proceeding_and_stops_retransmissions() -> None:
    req = make_request()
    txn = ClientTransaction(req, DEST)
    txn.start(0.0)
    ringing = reply(req, 180)
    assert txn.receive_response(ringing, 0.2) == [ResponseReceived(ringing, txn)]
    assert txn.state is State.PROCEEDING
    assert txn.next_deadline() is None  # neither A nor B runs in Proceeding (Figure 5)
    again = reply(req, 183)
    assert txn.receive_response(again, 5.0) == [ResponseReceived(again, txn)]
    assert txn.state is State.PROCEEDING


@pytest.mark.parametrize("first", [None, 180])
def test_invite_2xx_terminates_and_leaves_the_ack_to_the_tu(first: int | None) -> None:
    req = make_request()
    txn = ClientTransaction(req, DEST)
    txn.start(0.0)
    if first:
        txn.receive_response(reply(req, first), 0.1)
    ok = reply(req, 200)
    out = txn.receive_response(ok, 0.3)
    assert out == [ResponseReceived(ok, txn), TransactionTerminated(txn)]
    assert txn.ack is None
    assert txn.receive_response(reply(req, 200), 0.4) == []  # a retransmission is not ours any more


@pytest.mark.parametrize("status", [300, 404, 486, 503, 603, 699])
@pytest.mark.parametrize("first", [None, 183])
def test_invite_failure_completes_with_an_ack_and_timer_d(status: int, first: int | None) -> None:
    req = make_request(routes=["<sip:edge1.example.com;lr>", "<sip:edge2.example.com;lr>"])
    txn = ClientTransaction(req, DEST)
    txn.start(0.0)
    if first:
        txn.receive_response(reply(req, first), 0.1)
    busy = reply(req, status)
    out = txn.receive_response(busy, 0.4)
    assert names(out) == ["ResponseReceived", "SendMessage"]
    ack = out[1].message
    assert out[1].destination == DEST and not out[1].retransmission
    assert txn.state is State.COMPLETED
    assert txn.timers() == {"D": 32.4}
    # §17.1.1.3 ACK construction, checked on the wire form
    wire = parse(bytes(ack))
    assert wire.method == "ACK" and wire.uri == req.uri
    assert wire.headers.get_all("via") == [str(req.top_via)]  # only the top Via
    assert wire.headers.get_all("route") == ["<sip:edge1.example.com;lr>", "<sip:edge2.example.com;lr>"]
    assert wire.headers.get("from") == req.headers.get("from")
    assert wire.headers.get("to") == busy.headers.get("to") and wire.to_tag == "callee9"
    assert wire.call_id == req.call_id and wire.cseq == (1, "ACK")
    assert wire.headers.get("max-forwards") == "69" and wire.body == b""


def test_invite_completed_answers_each_failure_retransmission_with_the_same_ack() -> None:
    req = make_request()
    txn = ClientTransaction(req, DEST)
    txn.start(0.0)
    first = txn.receive_response(reply(req, 486), 1.0)[1]
    again = txn.receive_response(reply(req, 486), 2.0)
    assert again == [SendMessage(first.message, DEST, txn, True)]  # not passed up again
    assert txn.receive_response(reply(req, 180), 3.0) == []
    assert txn.receive_response(reply(req, 200), 3.0) == []
    assert txn.on_timer(32.99) == []
    assert txn.on_timer(33.0) == [TransactionTerminated(txn)]


def test_invite_over_tcp_terminates_at_once_on_failure() -> None:
    req = make_request(transport="TCP")
    txn = ClientTransaction(req, DEST)
    txn.start(0.0)
    out = txn.receive_response(reply(req, 404), 1.0)
    assert names(out) == ["ResponseReceived", "SendMessage", "TransactionTerminated"]  # timer D = 0
    assert txn.state is State.TERMINATED


@pytest.mark.parametrize("status", [None, 180, 486])
def test_invite_transport_error_terminates(status: int | None) -> None:
    req = make_request()
    txn = ClientTransaction(req, DEST)
    txn.start(0.0)
    if status:
        txn.receive_response(reply(req, status), 0.1)
    assert txn.on_transport_error(0.2) == [TransportFailed(txn), TransactionTerminated(txn)]
    assert txn.on_transport_error(0.3) == []


def test_timer_d_and_retransmission_intervals_follow_the_configuration() -> None:
    cfg = TimerConfig(t1=0.1, t2=0.4, t4=1.0, timer_d=40.0)
    req = make_request()
    txn = ClientTransaction(req, DEST, cfg)
    txn.start(0.0)
    assert txn.timers() == {"A": 0.1, "B": pytest.approx(6.4)}
    txn.receive_response(reply(req, 500), 1.0)
    assert txn.timers() == {"D": 41.0}


def test_late_wakeup_retransmits_once_not_in_a_burst() -> None:
    txn = ClientTransaction(make_request(), DEST)
    txn.start(0.0)
    out = txn.on_timer(10.0)  # A was due at 0.5; we were woken late
    assert names(out) == ["SendMessage"]
    assert txn.timers()["A"] == 11.0  # re-armed from now with the doubled interval


def test_ack_is_never_a_client_transaction() -> None:
    with pytest.raises(ValueError, match="ACK"):
        ClientTransaction(make_request("ACK"), DEST)


# ---------------------------------------------------------------- non-INVITE client, §17.1.2


def test_non_invite_timer_e_doubles_then_caps_at_t2_until_f() -> None:
    txn = ClientTransaction(make_request("OPTIONS"), DEST)
    out = txn.start(0.0)
    assert names(out) == ["SendMessage"] and txn.state is State.TRYING
    assert txn.timers() == {"E": 0.5, "F": 32.0}
    # intervals 0.5, 1, 2, 4, 4, 4, …: fires at 0.5, 1.5, 3.5, 7.5, 11.5, …, 31.5
    assert retransmit_times(txn, 31.9, "E") == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    out = txn.on_timer(32.0)
    assert out == [TransactionTimedOut(txn, "F"), TransactionTerminated(txn)]


def test_non_invite_proceeding_retransmits_every_t2() -> None:
    req = make_request("REGISTER")
    txn = ClientTransaction(req, DEST)
    txn.start(0.0)
    txn.on_timer(0.5)  # E now 1.0 s away
    trying = reply(req, 100, to_tag=None)
    assert txn.receive_response(trying, 0.6) == [ResponseReceived(trying, txn)]
    assert txn.state is State.PROCEEDING
    assert txn.timers()["E"] == 1.5  # not reset by the 1xx; once it fires, it runs at T2
    assert retransmit_times(txn, 20.0, "E") == [1.5, 5.5, 9.5, 13.5, 17.5]
    assert names(txn.receive_response(reply(req, 100, None), 20.0)) == ["ResponseReceived"]
    assert retransmit_times(txn, 31.9, "E") == [21.5, 25.5, 29.5]
    assert names(txn.on_timer(32.0)) == ["TransactionTimedOut", "TransactionTerminated"]


@pytest.mark.parametrize("status", [200, 202, 401, 404, 500, 603])
@pytest.mark.parametrize("first", [None, 100])
def test_non_invite_final_completes_absorbs_retransmissions_then_k(status: int, first: int | None) -> None:
    req = make_request("BYE", to_tag="callee9")
    txn = ClientTransaction(req, DEST)
    txn.start(0.0)
    if first:
        txn.receive_response(reply(req, first), 0.1)
    final = reply(req, status)
    assert txn.receive_response(final, 0.7) == [ResponseReceived(final, txn)]
    assert txn.state is State.COMPLETED and txn.timers() == {"K": 5.7}  # T4
    assert txn.receive_response(reply(req, status), 1.0) == []  # absorbed
    assert txn.receive_response(reply(req, 180), 1.0) == []
    assert txn.on_timer(5.69) == []
    assert txn.on_timer(5.7) == [TransactionTerminated(txn)]


def test_non_invite_over_tcp_has_no_e_and_zero_k() -> None:
    req = make_request("OPTIONS", transport="TCP")
    txn = ClientTransaction(req, DEST)
    txn.start(0.0)
    assert txn.timers() == {"F": 32.0}
    out = txn.receive_response(reply(req, 200), 0.1)
    assert names(out) == ["ResponseReceived", "TransactionTerminated"]


def test_reliable_flag_overrides_the_via_transport() -> None:
    txn = ClientTransaction(make_request("OPTIONS", transport="UDP"), DEST, reliable=True)
    txn.start(0.0)
    assert txn.timers() == {"F": 32.0}


@pytest.mark.parametrize("status", [None, 100, 200])
def test_non_invite_transport_error(status: int | None) -> None:
    req = make_request("OPTIONS")
    txn = ClientTransaction(req, DEST)
    txn.start(0.0)
    if status:
        txn.receive_response(reply(req, status), 0.1)
    out = txn.on_transport_error(0.2)
    if status == 200:
        assert out == []  # Completed: nothing left to send, K ends it
    else:
        assert out == [TransportFailed(txn), TransactionTerminated(txn)]


def test_status_out_of_range_is_refused() -> None:
    req = make_request("OPTIONS")
    txn = ClientTransaction(req, DEST)
    txn.start(0.0)
    resp = reply(req, 200)
    resp.status = 99
    with pytest.raises(ValueError, match="100-699"):
        txn.receive_response(resp, 0.1)
