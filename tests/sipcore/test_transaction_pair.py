"""Paired endpoints: a UAC layer and a UAS layer talking over an in-memory lossy wire (bytes and
parse on every hop, no sockets, fake clock). Retransmission and absorption must make every exchange
succeed despite a few lost datagrams, the UAS TU must see each request once, and both layers drain."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipcore.message import Request, parse
from sipcore.transaction import (
    RequestReceived,
    ResponseReceived,
    SendMessage,
    TransactionLayer,
    TransactionTimedOut,
)
from tests.sipcore.test_transaction_support import make_request

LATENCY = 0.05


@dataclass
class Run:
    drops: set[int]  # indexes (in send order) of the datagrams the wire loses
    status: int  # the UAS TU's final answer
    uac: TransactionLayer = field(default_factory=TransactionLayer)
    uas: TransactionLayer = field(default_factory=TransactionLayer)
    wire: list = field(default_factory=list)  # heap of (arrival, seq, to, bytes)
    sent: int = 0
    uas_seen: list = field(default_factory=list)  # requests the UAS TU was given, with their transaction
    uac_finals: list[int] = field(default_factory=list)
    timeouts: list[str] = field(default_factory=list)

    def carry(self, side: str, outputs: list, now: float) -> None:
        for out in outputs:
            if isinstance(out, SendMessage):
                if self.sent not in self.drops:
                    to = "uas" if side == "uac" else "uac"
                    heapq.heappush(self.wire, (now + LATENCY, self.sent, to, bytes(out.message)))
                self.sent += 1
            elif isinstance(out, RequestReceived):
                self.uas_seen.append((out.request.method, out.transaction))
                if out.transaction is not None:  # the TU answers at once
                    resp = out.request.make_response(self.status, to_tag="uas1")
                    self.carry("uas", self.uas.send_response(resp, now, out.transaction), now)
            elif isinstance(out, ResponseReceived) and out.transaction is not None:
                status = out.response.status
                if status >= 200:
                    self.uac_finals.append(status)
            elif isinstance(out, TransactionTimedOut):
                self.timeouts.append(f"{side}:{out.timer}")

    def run(self, request: Request) -> float:
        _, outs = self.uac.send_request(request, "uas", 0.0)
        self.carry("uac", outs, 0.0)
        now = 0.0
        for _ in range(10_000):
            candidates = [t for t in (self.uac.next_deadline(), self.uas.next_deadline()) if t is not None]
            if self.wire:
                candidates.append(self.wire[0][0])
            if not candidates:
                return now
            now = max(now, min(candidates))
            while self.wire and self.wire[0][0] <= now:
                _, _, to, data = heapq.heappop(self.wire)
                msg = parse(data)
                if to == "uas":
                    self.carry("uas", self.uas.on_request(msg, "uac", now), now)
                else:
                    self.carry("uac", self.uac.on_response(msg, now), now)
            self.carry("uac", self.uac.on_timer(now), now)
            self.carry("uas", self.uas.on_timer(now), now)
        raise AssertionError("the exchange did not settle")


@settings(max_examples=80, deadline=None)
@given(
    method=st.sampled_from(["OPTIONS", "REGISTER", "INVITE"]),
    status=st.sampled_from([200, 404, 486, 503]),
    drops=st.sets(st.integers(min_value=0, max_value=12), max_size=3),
)
def test_lossy_exchange_completes_once(method: str, status: int, drops: set[int]) -> None:
    if method == "INVITE" and status == 200:
        drops = set()  # a lost 2xx is the UA core's to retransmit (not a transaction's job)
    run = Run(drops, status)
    end = run.run(make_request(method, branch="z9hG4bKpair1"))
    assert [m for m, t in run.uas_seen if t is not None] == [method]  # retransmissions absorbed
    assert run.uac_finals == [status] and run.timeouts == []  # ACK reached the UAS: no timer H
    assert len(run.uac) == 0 and len(run.uas) == 0  # both sides drained, nothing leaked
    assert end <= 64 * 0.5 + 5.0 + 64 * 0.5  # Timer B/F window plus the longest lingering timer


@pytest.mark.parametrize("method", ["OPTIONS", "INVITE"])
def test_a_dead_peer_times_out_on_the_client(method: str) -> None:
    run = Run(set(range(100)), 200)
    end = run.run(make_request(method, branch="z9hG4bKpair2"))
    assert run.timeouts == ["uac:" + ("B" if method == "INVITE" else "F")]
    assert run.sent == (7 if method == "INVITE" else 11)  # the request and its retransmissions
    assert end == 32.0 and len(run.uac) == 0


def test_lost_ack_is_recovered_by_timer_g() -> None:
    # datagrams: 0 INVITE, 1 486, 2 ACK (lost), 3 486 again by timer G, 4 ACK again
    run = Run({2}, 486)
    run.run(make_request("INVITE", branch="z9hG4bKpair3"))
    assert run.sent == 5 and run.timeouts == [] and run.uac_finals == [486]
