"""Inbound DIDs: to an account, a group (parallel / sequential), voicemail, hang up, conference."""

from __future__ import annotations

from dataclasses import replace

from routing import (
    BranchAnswered,
    BranchBusy,
    Caller,
    CallState,
    CancelBranch,
    ConnectBranch,
    FailCall,
    ForwardKind,
    ForwardRule,
    ForwardTarget,
    Group,
    GroupMember,
    GroupStrategy,
    plan_did,
    plan_incoming,
)

from .helpers import Driver, account, platform

CALLER = Caller("+442079460000")


def did(setup, number: str, state: CallState | None = None) -> Driver:
    plan = plan_did(setup, number, CALLER, state or CallState())
    assert plan is not None
    return Driver(plan)


def test_unknown_did_has_no_plan() -> None:
    assert plan_did(platform(), "+33199999999", CALLER, CallState()) is None


def test_did_to_account_applies_its_rules() -> None:
    fwd = ForwardRule(ForwardKind.PERMANENT, (ForwardTarget("2003"),))
    setup = platform(account("2001"), account("2002", forwards=(fwd,)), account("2003"))
    d = did(setup, "+33140002002")
    [ring] = d.start(0)
    assert d.ringing_labels() == {"2003"}
    assert ring.caller_id == CALLER.number


def test_group_parallel_rings_all_with_own_ring_times() -> None:
    d = did(platform(), "+33140009010")
    d.start(0)
    assert d.ringing_labels() == {"2002", "2003"}
    d.advance(10)
    assert d.ringing_labels() == {"2002"}
    assert d.advance(15) == [CancelBranch(d.log[0].branch_id), FailCall(480, "Temporarily Unavailable")]


def test_group_parallel_first_answer_wins() -> None:
    d = did(platform(), "+33140009010")
    d.start(0)
    first, second = d.branch_to("2002"), d.branch_to("2003")
    assert d.event(second, BranchAnswered(), 2) == [CancelBranch(first), ConnectBranch(second)]


def test_group_sequential_in_order_with_ring_times() -> None:
    base = platform()
    sales = replace(base.customers["acme"].groups["sales"], strategy=GroupStrategy.SEQUENTIAL)
    setup = platform(account("2001"), account("2002"), account("2003"), groups=(sales,))
    d = did(setup, "+33140009010")
    d.start(0)
    assert d.ringing_labels() == {"2002"}
    d.advance(15)
    assert d.ringing_labels() == {"2003"}
    d.event(d.branch_to("2003"), BranchBusy(), 17)
    assert d.plan.result == FailCall(486, "Busy Here")


def test_group_skips_unregistered_and_busy_members() -> None:
    sales = Group(
        "sales",
        "acme",
        (GroupMember("2001", 10), GroupMember("2002", 10), GroupMember("2003", 10)),
        GroupStrategy.SEQUENTIAL,
    )
    setup = platform(account("2001"), account("2002", call_waiting=False), account("2003"), groups=(sales,))
    state = CallState(registered={"acme-2002", "acme-2003"}, active_calls={"acme-2002": 1})
    d = did(setup, "+33140009010", state)
    d.start(0)
    assert d.ringing_labels() == {"2003"}
    assert d.plan.next_deadline() == 10


def test_group_fallback_after_nobody_answers() -> None:
    sales = Group("sales", "acme", (GroupMember("2002", 10),), fallback="2001")
    setup = platform(account("2001", voicemail=True), account("2002"), groups=(sales,))
    d = did(setup, "+33140009010")
    d.start(0)
    d.advance(10)
    assert d.ringing_labels() == {"2001"}


def test_group_called_directly() -> None:
    setup = platform()
    plan = plan_incoming(setup, setup.customers["acme"].groups["sales"], CALLER, CallState())
    d = Driver(plan)
    d.start(0)
    assert d.ringing_labels() == {"2002", "2003"}


def test_did_to_voicemail_hangup_conference() -> None:
    setup = platform()
    d = did(setup, "+33140009020")
    d.start(0)
    assert d.ringing_labels() == {"voicemail:acme-2001"}
    assert did(setup, "+33140009030").start(0) == [
        FailCall(603, "Decline", "+33140009030 is not taking calls")
    ]
    d = did(setup, "+33140009040")
    d.start(0)
    assert d.ringing_labels() == {"conference:+33140009040"}


def test_on_net_call_between_customers() -> None:
    """globex's DID reached from acme: the same DID plan runs with acme's caller ID."""
    setup = platform()
    plan = plan_incoming(setup, setup.dids["+33150003001"], Caller("+33140002001"), CallState())
    d = Driver(plan)
    [ring] = d.start(0)
    assert d.ringing_labels() == {"3001"}
    assert ring.caller_id == "+33140002001"


def test_empty_group_is_unavailable() -> None:
    empty = Group("sales", "acme", ())
    setup = platform(account("2001"), account("2002"), account("2003"), groups=(empty,))
    assert did(setup, "+33140009010").start(0) == [FailCall(480, "Temporarily Unavailable")]
