"""The drain (SIGTERM) in the call controller, in memory (tests/calls/sim.py): once draining, a new
call is answered 503 with Retry-After while calls in progress and their in-dialog requests go on;
at the deadline ``end_all`` ends every call left with its EndCall — BYE to both parties of an
answered call (ended by ``system``), CANCEL to the branches and 503 to the caller of a ringing one,
487 to a caller whose CANCEL was already answered. The wire tests are tests/server/test_drain.py."""

from __future__ import annotations

from pathlib import Path

from tests.calls.sim import Sim
from tests.calls.test_flows import finals, only, phone


def test_draining_refuses_new_calls_and_keeps_calls_in_progress(tmp_path: Path) -> None:
    sim = Sim(tmp_path)
    alice, bruno, chloe = phone(sim, "1001"), phone(sim, "1002"), phone(sim, "1003")
    dlg = alice.call("1002")
    sim.advance(1)
    assert finals(alice, dlg.call_id)[-1] == 200
    sim.controller.start_draining(30)
    late = chloe.call("1001")
    sim.advance(0)
    refusal = [r for r in chloe.responses(late.call_id) if r.status >= 200]
    assert [r.status for r in refusal] == [503]
    assert refusal[0].headers.get("retry-after") == "30"
    assert alice.requests("INVITE") == []  # nobody rang
    alice.in_dialog(dlg, "BYE")  # the phones still end their own calls
    sim.advance(0)
    assert len(bruno.requests("BYE")) == 1
    ended = only(sim.ended)
    assert (ended.call_id, ended.hangup_by, ended.disposition) == (dlg.call_id, "caller", "answered")
    assert sim.controller.end_all(sim.now) == []  # nothing left


def test_end_all_hangs_up_answered_calls_and_fails_ringing_ones(tmp_path: Path) -> None:
    sim = Sim(tmp_path)
    alice, bruno = phone(sim, "1001"), phone(sim, "1002")
    chloe, dave = phone(sim, "1003"), phone(sim, "1005", mode="ring")
    answered = alice.call("1002")
    ringing = chloe.call("1005")
    sim.advance(2)
    assert finals(alice, answered.call_id)[-1] == 200
    assert finals(chloe, ringing.call_id)[-1] == 180
    sim.controller.start_draining(5)
    sim.perform(sim.controller.end_all(sim.now))
    sim.advance(0)
    assert only(alice.requests("BYE")).call_id == only(bruno.requests("BYE")).call_id == answered.call_id
    assert only(dave.requests("CANCEL")).call_id == ringing.call_id
    assert finals(chloe, ringing.call_id)[-1] == 503
    ended = {e.call_id: e for e in sim.ended}
    assert sorted(ended) == sorted([answered.call_id, ringing.call_id])  # one EndCall each
    assert (ended[answered.call_id].hangup_by, ended[answered.call_id].disposition) == ("system", "answered")
    assert (ended[ringing.call_id].hangup_by, ended[ringing.call_id].sip_status) == ("system", 503)
    assert sim.controller.calls == {}
    assert sim.accounts.busy_accounts() == {}
    sim.advance(40)  # the callee's late 487 and the BYEs' answers change nothing
    assert len(sim.ended) == 2
