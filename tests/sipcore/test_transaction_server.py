"""Server transactions, §17.2: every state and timer of the INVITE and non-INVITE machines, fake clock."""

from __future__ import annotations

import pytest

from sipcore.timers import TimerConfig
from sipcore.transaction import (
    RequestReceived,
    SendMessage,
    ServerTransaction,
    State,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from tests.sipcore.test_transaction_support import SOURCE, make_ack, make_request, names, sent

NO_TRYING = TimerConfig(trying_delay=None)


def started(method: str = "INVITE", cfg: TimerConfig | None = None, **kw: object) -> ServerTransaction:
    txn = ServerTransaction(make_request(method, **kw), SOURCE, cfg or TimerConfig())  # type: ignore[arg-type]
    out = txn.start(0.0)
    assert out[0] == RequestReceived(txn.request, SOURCE, txn)
    return txn


# ---------------------------------------------------------------- INVITE server, §17.2.1


def test_invite_sends_100_trying_after_200ms_without_a_tu_answer() -> None:
    txn = started()
    assert txn.state is State.PROCEEDING and txn.timers() == {"trying": 0.2}
    assert txn.on_timer(0.19) == []
    out = txn.on_timer(0.2)
    assert names(out) == ["SendMessage"]
    trying = out[0].message
    assert trying.status == 100 and trying.reason == "Trying" and trying.to_tag is None
    assert trying.top_via.branch == txn.request.top_via.branch and trying.cseq == (1, "INVITE")
    assert out[0].destination == SOURCE
    assert txn.next_deadline() is None


def test_invite_no_100_when_the_tu_answers_first() -> None:
    txn = started()
    ringing = txn.request.make_response(180, to_tag="t1")
    assert txn.send_response(ringing, 0.1) == [SendMessage(ringing, SOURCE, txn)]
    assert txn.timers() == {}  # the 100 Trying timer is gone
    assert txn.on_timer(1.0) == []


def test_invite_100_immediately_or_never_by_configuration() -> None:
    now = ServerTransaction(make_request(), SOURCE, TimerConfig(trying_delay=0))
    out = now.start(0.0)
    assert names(out) == ["RequestReceived", "SendMessage"] and sent(out)[0].status == 100
    never = ServerTransaction(make_request(), SOURCE, NO_TRYING)
    assert names(never.start(0.0)) == ["RequestReceived"] and never.next_deadline() is None


def test_invite_retransmission_in_proceeding_repeats_latest_provisional() -> None:
    txn = started(cfg=NO_TRYING)
    assert txn.receive_request(make_request(), 0.5) == []  # nothing sent yet, no 100 configured
    txn.send_response(txn.request.make_response(180, to_tag="t1"), 0.6)
    ring2 = txn.request.make_response(183, to_tag="t1")
    txn.send_response(ring2, 0.7)
    assert txn.receive_request(make_request(), 1.0) == [SendMessage(ring2, SOURCE, txn, True)]


def test_invite_retransmission_before_the_trying_timer_sends_100_at_once() -> None:
    txn = ServerTransaction(make_request(), SOURCE, TimerConfig(trying_delay=2.0))
    txn.start(0.0)
    out = txn.receive_request(make_request(), 0.5)
    assert len(out) == 1 and out[0].message.status == 100 and not out[0].retransmission
    assert txn.timers() == {}
    assert txn.receive_request(make_request(), 1.5)[0].retransmission


def test_invite_2xx_is_accepted_then_timer_l_ends_it() -> None:
    """RFC 6026 §8.7: after a 2xx the transaction absorbs INVITE retransmissions for 64*T1."""
    txn = started()
    ok = txn.request.make_response(200, to_tag="t1")
    assert txn.send_response(ok, 0.1) == [SendMessage(ok, SOURCE, txn)]
    assert txn.state is State.ACCEPTED and txn.timers() == {"L": 32.1}
    assert txn.receive_request(make_request(), 0.6) == []  # not a new call, and the TU resends its 2xx
    again = txn.request.make_response(200, to_tag="t1")
    assert txn.send_response(again, 0.6) == [SendMessage(again, SOURCE, txn)]  # TU's 2xx retransmission
    assert txn.send_response(txn.request.make_response(486, to_tag="t1"), 0.7) == []
    ack = make_ack(txn.request, ok)
    assert txn.receive_request(ack, 0.8) == [RequestReceived(ack, SOURCE, None)]  # the TU's ACK
    assert txn.on_timer(32.0) == []
    assert txn.on_timer(32.1) == [TransactionTerminated(txn)]


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
def test_invite_2xx_terminates_at_once_without_rfc6026(transport: str) -> None:
    txn = started(cfg=TimerConfig(rfc6026=False), transport=transport)
    ok = txn.request.make_response(200, to_tag="t1")
    assert txn.send_response(ok, 0.1) == [SendMessage(ok, SOURCE, txn), TransactionTerminated(txn)]
    assert txn.send_response(txn.request.make_response(200, to_tag="t1"), 0.2) == []


def test_invite_2xx_over_tcp_still_lingers_in_accepted() -> None:
    txn = started(transport="TCP")  # timer L is 64*T1 on every transport
    txn.send_response(txn.request.make_response(200, to_tag="t1"), 0.1)
    assert txn.state is State.ACCEPTED and txn.timers() == {"L": 32.1}


def test_invite_failure_retransmits_with_timer_g_capped_at_t2_until_h() -> None:
    txn = started()
    busy = txn.request.make_response(486, to_tag="t1")
    assert txn.send_response(busy, 1.0) == [SendMessage(busy, SOURCE, txn)]
    assert txn.state is State.COMPLETED and txn.timers() == {"G": 1.5, "H": 33.0}
    fired = []
    while (at := txn.timers().get("G")) is not None and at < 33.0:
        out = txn.on_timer(at)
        assert out == [SendMessage(busy, SOURCE, txn, True)]
        fired.append(at - 1.0)
    # intervals 0.5, 1, 2, 4, 4, 4, …
    assert fired == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert txn.on_timer(33.0) == [TransactionTimedOut(txn, "H"), TransactionTerminated(txn)]


def test_invite_failure_retransmitted_on_each_request_retransmission() -> None:
    txn = started()
    busy = txn.request.make_response(486, to_tag="t1")
    txn.send_response(busy, 1.0)
    assert txn.receive_request(make_request(), 1.2) == [SendMessage(busy, SOURCE, txn, True)]
    assert txn.send_response(txn.request.make_response(500), 1.3) == []  # only one final


def test_invite_ack_confirms_then_timer_i_ends_it() -> None:
    txn = started()
    busy = txn.request.make_response(486, to_tag="t1")
    txn.send_response(busy, 1.0)
    ack = make_ack(txn.request, busy)
    assert txn.receive_request(ack, 1.1) == []  # absorbed, not passed to the TU
    assert txn.state is State.CONFIRMED and txn.timers() == {"I": 6.1}  # T4
    assert txn.receive_request(ack, 2.0) == []
    assert txn.receive_request(make_request(), 2.0) == []
    assert txn.on_timer(6.0) == []
    assert txn.on_timer(6.1) == [TransactionTerminated(txn)]


def test_invite_over_tcp_no_g_and_zero_i() -> None:
    txn = started(transport="TCP")
    busy = txn.request.make_response(404, to_tag="t1")
    txn.send_response(busy, 1.0)
    assert txn.timers() == {"H": 33.0}
    out = txn.receive_request(make_ack(txn.request, busy), 1.1)
    assert out == [TransactionTerminated(txn)]


def test_invite_ack_in_proceeding_is_ignored() -> None:
    txn = started()
    assert txn.receive_request(make_request("ACK"), 0.1) == []
    assert txn.state is State.PROCEEDING


@pytest.mark.parametrize("final", [None, 486])
def test_invite_transport_error(final: int | None) -> None:
    txn = started()
    if final:
        txn.send_response(txn.request.make_response(final, to_tag="t"), 0.1)
    assert txn.on_transport_error(0.2) == [TransportFailed(txn), TransactionTerminated(txn)]


# ---------------------------------------------------------------- non-INVITE server, §17.2.2


def test_non_invite_trying_discards_retransmissions_and_sends_no_100() -> None:
    txn = started("REGISTER")
    assert txn.state is State.TRYING and txn.next_deadline() is None
    assert txn.receive_request(make_request("REGISTER"), 0.5) == []


def test_non_invite_proceeding_repeats_the_provisional() -> None:
    txn = started("SUBSCRIBE")
    trying = txn.request.make_response(100)
    assert txn.send_response(trying, 0.1) == [SendMessage(trying, SOURCE, txn)]
    assert txn.state is State.PROCEEDING
    assert txn.receive_request(make_request("SUBSCRIBE"), 0.5) == [SendMessage(trying, SOURCE, txn, True)]
    again = txn.request.make_response(100)
    txn.send_response(again, 0.6)
    assert txn.receive_request(make_request("SUBSCRIBE"), 0.7) == [SendMessage(again, SOURCE, txn, True)]


@pytest.mark.parametrize("status", [200, 401, 404, 500])
@pytest.mark.parametrize("provisional", [False, True])
def test_non_invite_final_then_timer_j(status: int, provisional: bool) -> None:
    txn = started("OPTIONS")
    if provisional:
        txn.send_response(txn.request.make_response(100), 0.1)
    final = txn.request.make_response(status, to_tag="t1")
    assert txn.send_response(final, 0.5) == [SendMessage(final, SOURCE, txn)]
    assert txn.state is State.COMPLETED and txn.timers() == {"J": 32.5}  # 64*T1
    assert txn.receive_request(make_request("OPTIONS"), 1.0) == [SendMessage(final, SOURCE, txn, True)]
    assert txn.send_response(txn.request.make_response(500), 1.0) == []  # discarded
    assert txn.send_response(txn.request.make_response(100), 1.0) == []
    assert txn.on_timer(32.4) == []
    assert txn.on_timer(32.5) == [TransactionTerminated(txn)]


def test_non_invite_over_tcp_terminates_with_the_final() -> None:
    txn = started("OPTIONS", transport="TCP")
    final = txn.request.make_response(200, to_tag="t1")
    assert txn.send_response(final, 0.5) == [SendMessage(final, SOURCE, txn), TransactionTerminated(txn)]


@pytest.mark.parametrize("stage", ["trying", "proceeding", "completed"])
def test_non_invite_transport_error(stage: str) -> None:
    txn = started("OPTIONS")
    if stage != "trying":
        txn.send_response(txn.request.make_response(100 if stage == "proceeding" else 200), 0.1)
    assert txn.on_transport_error(0.2) == [TransportFailed(txn), TransactionTerminated(txn)]


def test_ack_never_creates_a_server_transaction() -> None:
    with pytest.raises(ValueError, match="ACK"):
        ServerTransaction(make_request("ACK"), SOURCE)
