"""Calls restored after a crash (``CallController.restore``), in memory (tests/calls/sim.py): the
``DialogRecord`` a call's answer emits goes through its wire form into a fresh controller and
transaction layer (the restarted process), and then

- a BYE from either party is relayed to the other and ends the call with its real end time and
  ``hangup_by`` the party that sent it;
- nobody's BYE: at ``orphan_timeout`` the server BYEs both parties and ends the call at the last
  time it was known alive (``alive_until``), ``hangup_by: orphan``; a request of the call since the
  restart (INFO, re-INVITE) keeps it alive and moves the estimate;
- the cut-off deadline (max duration) survives the restart;
- the call counts against its account again until it ends.

The wire tests (kill -9 of ``sipcore serve``) are tests/server/test_call_journal_crash.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import msgpack

from calls.actions import Action, CallAnswered
from calls.controller import CallController
from calls.dialog_record import DialogRecord
from sipcore.transaction import TransactionLayer
from tests.calls.sim import Sim
from tests.calls.test_flows import finals, only, phone


class JournalSim(Sim):
    """The sim keeping what the journal would: each answered call's record."""

    def __init__(self, directory: Path, **kwargs: float) -> None:
        super().__init__(directory, **kwargs)  # type: ignore[arg-type]
        self.records: list[DialogRecord] = []

    def perform(self, actions: list[Action]) -> None:
        self.records += [a.record for a in actions if type(a) is CallAnswered]
        super().perform(actions)

    def crash_and_restore(
        self, alive_until: float | None = None, orphan_timeout: float | None = None
    ) -> None:
        """A new controller and transaction layer (the restarted process) given every call still
        open, through the records' wire form, as the journal keeps them."""
        ended = {e.call_id for e in self.ended}
        settings = self.settings
        if orphan_timeout is not None:
            settings = dataclasses.replace(settings, orphan_timeout=orphan_timeout)
        self.controller = CallController(settings, self.authenticate, is_local=self.is_local)
        self.txl = TransactionLayer()
        self.keys.clear()
        for call_id in list(self.accounts.busy_accounts()):
            while self.accounts.calls_of(call_id):
                self.accounts.call_ended(call_id)
        for record in self.records:
            if record.call_id in ended:
                continue
            wire = msgpack.unpackb(msgpack.packb(record.to_wire()))
            back = DialogRecord.from_wire(wire)
            assert back == record
            if alive_until is not None:
                back = dataclasses.replace(back, alive_until=alive_until)
            self.perform(self.controller.restore(back, self.now))


def test_a_bye_after_the_restart_ends_the_call_exactly(tmp_path: Path) -> None:
    sim = JournalSim(tmp_path)
    alice, bruno = phone(sim, "1001"), phone(sim, "1002")
    first, second = alice.call("1002"), alice.call("1002")
    sim.advance(1)
    assert finals(alice, first.call_id)[-1] == finals(alice, second.call_id)[-1] == 200
    answered = {r.call_id: r.answered_at for r in sim.records}
    sim.advance(10)
    sim.crash_and_restore(alive_until=sim.now)
    assert sim.accounts.calls_of("demo/1001") == 2  # they count again
    sim.advance(5)
    alice.in_dialog(first, "BYE")  # the caller hangs up one
    sim.advance(0)
    assert only(bruno.requests("BYE")).call_id == first.call_id
    assert finals(alice, first.call_id)[-1] == 200  # the BYE's 200, relayed back
    ended = only(sim.ended)
    assert (ended.call_id, ended.hangup_by, ended.disposition) == (first.call_id, "caller", "answered")
    assert (ended.answer, ended.end) == (answered[first.call_id], sim.now)
    bruno.in_dialog(bruno.callee_dialog(second.call_id), "BYE")  # the callee the other
    sim.advance(0)
    assert [b.call_id for b in alice.requests("BYE")] == [second.call_id]
    last = sim.ended[-1]
    assert (last.call_id, last.hangup_by, last.end) == (second.call_id, "callee", sim.now)
    assert sim.controller.calls == {}
    assert sim.accounts.busy_accounts() == {}


def test_a_call_whose_bye_never_comes_is_ended_as_an_orphan_at_its_last_sign_of_life(tmp_path: Path) -> None:
    sim = JournalSim(tmp_path)
    alice, bruno = phone(sim, "1001"), phone(sim, "1002")
    dlg = alice.call("1002")
    sim.advance(1)
    sim.advance(20)
    crashed_at = sim.now
    sim.advance(7)  # the restart
    sim.crash_and_restore(alive_until=crashed_at, orphan_timeout=60)
    sim.advance(59)
    assert sim.ended == [] and alice.requests("BYE") == []
    sim.advance(2)
    assert only(alice.requests("BYE")).call_id == only(bruno.requests("BYE")).call_id == dlg.call_id
    ended = only(sim.ended)
    assert (ended.hangup_by, ended.disposition, ended.end) == ("orphan", "answered", crashed_at)
    assert sim.controller.calls == {}


def test_a_request_since_the_restart_keeps_a_restored_call_alive(tmp_path: Path) -> None:
    sim = JournalSim(tmp_path)
    alice, bruno = phone(sim, "1001"), phone(sim, "1002")
    dlg = alice.call("1002")
    sim.advance(1)
    sim.crash_and_restore(alive_until=sim.now, orphan_timeout=60)
    sim.advance(50)
    alice.in_dialog(dlg, "INFO")  # relayed: the call is alive
    sim.advance(0)
    seen = sim.now
    assert len(bruno.requests("INFO")) == 1
    sim.advance(30)
    assert sim.ended == []  # 80 s after the restart, 30 s after the INFO
    sim.advance(31)
    ended = only(sim.ended)
    assert (ended.hangup_by, ended.end) == ("orphan", seen)


def test_the_cut_off_deadline_survives_the_restart(tmp_path: Path) -> None:
    sim = JournalSim(tmp_path, max_call_duration=100)
    alice, bruno = phone(sim, "1001"), phone(sim, "1002")
    dlg = alice.call("1002")
    sim.advance(1)
    answered = only(sim.records).answered_at
    sim.advance(30)
    sim.crash_and_restore(alive_until=sim.now)
    sim.advance(100)
    ended = only(sim.ended)
    assert (ended.call_id, ended.hangup_by, ended.end) == (dlg.call_id, "system", answered + 100)
    assert only(bruno.requests("BYE")).call_id == dlg.call_id
