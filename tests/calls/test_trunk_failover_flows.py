"""Failover between trunks in memory (the controller, the real transaction layer, a test clock): a
5xx or a silent trunk moves the call to the next trunk, a final 4xx does not, a trunk left behind
that answers 1xx late is CANCELled, a trunk out of rotation is skipped, and when every trunk fails
the caller gets the best answer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from calls.actions import TrunkFailover
from calls.model import Destination
from routing import TrunkChoice
from sipcore.message import Request
from tests.calls.sim import CARRIER, Party, Sim
from tests.calls.test_flows import finals, phone

BACKUP = ("192.0.2.4", 5060)


@pytest.fixture
def sim(tmp_path: Path) -> Sim:
    sim = Sim(tmp_path)
    s = sim.settings
    carrier = dataclasses.replace(s.trunks["carrier"], failover_timeout=2.0)
    backup = dataclasses.replace(carrier, name="backup", dest=Destination("udp", *BACKUP), username=None)
    setup = dataclasses.replace(s.setup, trunks=(TrunkChoice("carrier", 1), TrunkChoice("backup", 2)))
    sim.settings = dataclasses.replace(s, setup=setup, trunks={"carrier": carrier, "backup": backup})
    sim.controller.update(sim.settings)
    return sim


def _failovers(sim: Sim) -> list[TrunkFailover]:
    return [a for a in sim.performed if isinstance(a, TrunkFailover)]


def _reply(party: Party, req: Request, status: int) -> None:
    party.send(req.make_response(status, None, party.tag))


def test_a_5xx_moves_the_call_to_the_next_trunk(sim: Sim) -> None:
    alice = phone(sim, "1001")
    carrier, backup = Party(sim, "carrier", CARRIER, mode="silent"), Party(sim, "backup", BACKUP)
    dlg = alice.call("0612345678")
    sim.advance(0)
    (first,) = carrier.requests("INVITE")
    _reply(carrier, first, 503)
    sim.advance(0)
    (second,) = backup.requests("INVITE")
    assert second.uri == "sip:+33612345678@192.0.2.4:5060" and second.call_id == first.call_id
    assert finals(alice, dlg.call_id)[-1] == 200
    assert [(f.trunk, f.status, f.next_trunk) for f in _failovers(sim)] == [("carrier", 503, "backup")]


def test_a_final_answer_about_the_number_is_not_failed_over(sim: Sim) -> None:
    alice = phone(sim, "1001")
    carrier, backup = Party(sim, "carrier", CARRIER, mode="silent"), Party(sim, "backup", BACKUP)
    dlg = alice.call("0612345678")
    sim.advance(0)
    _reply(carrier, carrier.requests("INVITE")[0], 404)
    sim.advance(5)
    assert backup.requests("INVITE") == []
    assert finals(alice, dlg.call_id)[-1] == 404


def test_a_silent_trunk_is_left_after_its_timeout_and_cancelled_if_it_wakes_up(sim: Sim) -> None:
    alice = phone(sim, "1001")
    carrier, backup = Party(sim, "carrier", CARRIER, mode="silent"), Party(sim, "backup", BACKUP, mode="ring")
    alice.call("0612345678")
    sim.advance(1.9)
    assert backup.requests("INVITE") == []
    sim.advance(0.2)  # failover_timeout: 2 s
    assert len(backup.requests("INVITE")) == 1
    assert [(f.trunk, f.status) for f in _failovers(sim)] == [("carrier", 408)]
    first = carrier.requests("INVITE")[0]
    carrier.send(first.make_response(180, None, carrier.tag))  # too late: CANCELled
    sim.advance(0)
    assert len(carrier.requests("CANCEL")) == 1


def test_when_every_trunk_fails_the_caller_gets_the_best_answer(sim: Sim) -> None:
    alice = phone(sim, "1001")
    carrier, backup = (
        Party(sim, "carrier", CARRIER, mode="silent"),
        Party(sim, "backup", BACKUP, mode="silent"),
    )
    dlg = alice.call("0612345678")
    sim.advance(0)
    _reply(carrier, carrier.requests("INVITE")[0], 503)
    sim.advance(0)
    _reply(backup, backup.requests("INVITE")[0], 502)
    sim.advance(0)
    assert finals(alice, dlg.call_id)[-1] == 502  # §16.7: a 503 ranks below another 5xx
    assert sim.ended[-1].disposition != "answered"


def test_a_trunk_out_of_rotation_is_skipped_and_back_when_up(sim: Sim) -> None:
    alice = phone(sim, "1001")
    carrier, backup = Party(sim, "carrier", CARRIER), Party(sim, "backup", BACKUP)
    sim.controller.on_trunk_state("carrier", False)
    alice.call("0612345678")
    sim.advance(0)
    assert (len(carrier.requests("INVITE")), len(backup.requests("INVITE"))) == (0, 1)
    sim.controller.on_trunk_state("carrier", True)
    phone(sim, "1002").call("0612345679")
    sim.advance(0)
    assert (len(carrier.requests("INVITE")), len(backup.requests("INVITE"))) == (1, 1)
