"""Calling an account: DOMAIN.md's order of follow-me, forwardings, busy, no answer, voicemail."""

from __future__ import annotations

from routing import (
    Authorisation,
    BranchAnswered,
    BranchBusy,
    BranchFailed,
    BranchUnreachable,
    Caller,
    CallState,
    CancelBranch,
    ConnectBranch,
    Diversion,
    DiversionReason,
    FailCall,
    FollowMe,
    ForwardKind,
    ForwardRule,
    ForwardTarget,
    ShowCaller,
    plan_incoming,
)

from .helpers import Driver, account, platform

CALLER = Caller("+33612345678", "Outside Caller")
MOBILE = "+33699999999"


def drive(setup, ext: str, state: CallState | None = None, **kw) -> Driver:
    plan = plan_incoming(setup, setup.customers["acme"].accounts[ext], CALLER, state or CallState(), **kw)
    return Driver(plan)


def rule(kind: ForwardKind, *targets: str, ring: int = 20, **kw) -> ForwardRule:
    return ForwardRule(kind, tuple(ForwardTarget(t, ring) for t in targets), **kw)


def test_rings_own_phones_and_connects() -> None:
    d = drive(platform(), "2002")
    [ring] = d.start(0)
    assert (d.branch_to("2002"), ring.caller_id, ring.caller_display) == (1, CALLER.number, CALLER.display)
    assert ring.diversions == () and not ring.rated
    assert d.plan.next_deadline() == 30
    assert d.event(1, BranchAnswered(), 3) == [ConnectBranch(1)]
    assert d.plan.finished and d.plan.next_deadline() is None


def test_no_answer_without_voicemail_fails_480() -> None:
    d = drive(platform(), "2002")
    d.start(0)
    assert d.advance(29.9) == []
    assert d.advance(30) == [CancelBranch(1), FailCall(480, "Temporarily Unavailable")]


def test_no_answer_goes_to_voicemail_when_enabled() -> None:
    d = drive(platform(account("2002", voicemail=True, ring_seconds=25)), "2002")
    d.start(0)
    d.advance(25)
    assert d.ringing_labels() == {"voicemail:acme-2002"}
    assert d.event(d.branch_to("voicemail:acme-2002"), BranchAnswered(), 26) == [ConnectBranch(2)]


def test_busy_from_phone_goes_to_busy_target_with_diversion() -> None:
    setup = platform(account("2002", forwards=(rule(ForwardKind.BUSY, "2003"),)), account("2003"))
    d = drive(setup, "2002")
    d.start(0)
    d.event(d.branch_to("2002"), BranchBusy(), 1)
    [ring] = d.ringing.values()
    assert d.branch_to("2003") == ring.branch_id
    assert ring.diversions == (Diversion(DiversionReason.USER_BUSY, "+33140002002", 1, "acme-2002"),)
    assert ring.caller_id == CALLER.number


def test_busy_without_call_waiting_skips_the_phone() -> None:
    setup = platform(
        account("2002", call_waiting=False, forwards=(rule(ForwardKind.BUSY, "2003"),)), account("2003")
    )
    d = drive(setup, "2002", CallState(active_calls={"acme-2002": 1}))
    d.start(0)
    assert d.ringing_labels() == {"2003"}


def test_at_call_limit_is_busy_even_with_call_waiting() -> None:
    setup = platform(account("2002", max_calls=1), account("2003"))
    d = drive(setup, "2002", CallState(active_calls={"acme-2002": 1}))
    assert d.start(0) == [FailCall(486, "Busy Here")]


def test_busy_without_rule_or_voicemail_is_486() -> None:
    d = drive(platform(), "2002")
    d.start(0)
    assert d.event(1, BranchBusy(), 1) == [FailCall(486, "Busy Here")]


def test_unreachable_when_not_registered() -> None:
    setup = platform(
        account("2002", forwards=(rule(ForwardKind.UNREACHABLE, "0612000000"),)), account("2003")
    )
    d = drive(setup, "2002", CallState(registered={"acme-2003"}))
    [ring] = d.start(0)
    assert d.ringing_labels() == {"+33612000000"}
    assert ring.diversions[0].reason is DiversionReason.UNAVAILABLE
    assert ring.rated and ring.billed_account_id == "acme-2002"


def test_unreachable_when_every_contact_fails() -> None:
    setup = platform(account("2002", forwards=(rule(ForwardKind.UNREACHABLE, "2003"),)), account("2003"))
    d = drive(setup, "2002")
    d.start(0)
    d.event(1, BranchUnreachable(), 0.5)
    assert d.ringing_labels() == {"2003"}


def test_forwarding_to_2222_deposits_in_the_forwarders_box() -> None:
    """2222 dialed is the caller's own mailbox menu; as a forward target it is a deposit."""
    setup = platform(account("2002", voicemail=True, forwards=(rule(ForwardKind.BUSY, "2222"),)))
    d = drive(setup, "2002")
    d.start(0)
    d.event(1, BranchBusy(), 1)
    assert d.ringing_labels() == {"voicemail:acme-2002"}


def test_unreachable_without_rule_is_480_or_voicemail() -> None:
    d = drive(platform(), "2002", CallState(registered=set()))
    assert d.start(0) == [FailCall(480, "Temporarily Unavailable")]
    d = drive(platform(account("2002", voicemail=True)), "2002", CallState(registered=set()))
    d.start(0)
    assert d.ringing_labels() == {"voicemail:acme-2002"}


def test_no_answer_after_delay_staggered_targets_then_voicemail() -> None:
    na = ForwardRule(
        ForwardKind.NO_ANSWER,
        (ForwardTarget("0699999999", 15), ForwardTarget("2003", 10)),
        delay_seconds=10,
    )
    setup = platform(account("2002", voicemail=True, forwards=(na,)), account("2003"))
    d = drive(setup, "2002")
    d.start(0)
    assert d.ringing_labels() == {"2002"}
    assert d.plan.next_deadline() == 10
    d.advance(10)
    assert d.ringing_labels() == {MOBILE}
    mobile = d.ringing[d.branch_to(MOBILE)]
    assert mobile.diversions[0].reason is DiversionReason.NO_ANSWER
    assert mobile.billed_account_id == "acme-2002" and mobile.rated
    d.advance(24)
    assert d.ringing_labels() == {MOBILE}
    d.advance(25)
    assert d.ringing_labels() == {"2003"}
    d.advance(35)
    assert d.ringing_labels() == {"voicemail:acme-2002"}


def test_staggered_target_failing_early_moves_on_at_once() -> None:
    na = rule(ForwardKind.NO_ANSWER, "0699999999", "2003", ring=15, delay_seconds=5)
    setup = platform(account("2002", forwards=(na,)), account("2003"))
    d = drive(setup, "2002")
    d.start(0)
    d.advance(5)
    d.event(d.branch_to(MOBILE), BranchBusy(), 6)
    assert d.ringing_labels() == {"2003"}
    assert d.plan.next_deadline() == 21
    assert d.advance(21)[-1] == FailCall(486, "Busy Here")  # busy beats no answer


def test_follow_me_staggered_own_phones_silent_voicemail_last() -> None:
    fm = FollowMe((ForwardTarget("0699999999", 20, start_after=0), ForwardTarget("2003", 20, start_after=10)))
    setup = platform(account("2002", voicemail=True, follow_me=fm), account("2003"))
    d = drive(setup, "2002")
    d.start(0)
    assert d.ringing_labels() == {MOBILE}
    d.advance(10)
    assert d.ringing_labels() == {MOBILE, "2003"}
    d.advance(20)
    assert d.ringing_labels() == {"2003"}
    d.advance(30)
    assert d.ringing_labels() == {"voicemail:acme-2002"}
    assert "2002" not in {
        r.target.extension for r in d.log if hasattr(r, "target") and hasattr(r.target, "extension")
    }
    rung = [a for a in d.log if hasattr(a, "diversions") and a.diversions]
    assert {a.diversions[0].reason for a in rung} == {DiversionReason.FOLLOW_ME}


def test_follow_me_switches_forwardings_off() -> None:
    fm = FollowMe((ForwardTarget("2003", 20),), voicemail_last_resort=False)
    setup = platform(
        account("2002", follow_me=fm, forwards=(rule(ForwardKind.PERMANENT, "0612000000"),)), account("2003")
    )
    d = drive(setup, "2002")
    d.start(0)
    assert d.ringing_labels() == {"2003"}
    d.event(d.branch_to("2003"), BranchAnswered(), 2)
    assert d.plan.result == ConnectBranch(1)


def test_answer_on_one_follow_me_branch_cancels_the_others() -> None:
    fm = FollowMe((ForwardTarget("0699999999", 20, 0), ForwardTarget("2003", 20, 0)))
    d = drive(platform(account("2002", follow_me=fm), account("2003")), "2002")
    d.start(0)
    mobile = d.branch_to(MOBILE)
    desk = d.branch_to("2003")
    assert d.event(mobile, BranchAnswered(), 4) == [CancelBranch(desk), ConnectBranch(mobile)]
    assert d.plan.on_branch_event(desk, BranchBusy(), 5) == []


def test_permanent_forward_never_rings_the_phone() -> None:
    setup = platform(account("2002", forwards=(rule(ForwardKind.PERMANENT, "0612000000"),)), account("2003"))
    d = drive(setup, "2002", CallState(registered=set()))
    [ring] = d.start(0)
    assert d.ringing_labels() == {"+33612000000"}
    assert ring.diversions == (Diversion(DiversionReason.UNCONDITIONAL, "+33140002002", 1, "acme-2002"),)


def test_caller_number_shown_per_rule() -> None:
    shows_account = rule(ForwardKind.PERMANENT, "0612000000", show_caller=ShowCaller.ACCOUNT)
    d = drive(platform(account("2002", forwards=(shows_account,))), "2002")
    [ring] = d.start(0)
    assert (ring.caller_id, ring.caller_display) == ("+33140002002", "User 2002")
    shows_original = rule(ForwardKind.PERMANENT, "0612000000", show_caller=ShowCaller.ORIGINAL)
    d = drive(platform(account("2002", forwards=(shows_original,))), "2002")
    [ring] = d.start(0)
    assert (ring.caller_id, ring.caller_display) == (CALLER.number, CALLER.display)


def test_loop_a_b_a_is_stopped() -> None:
    setup = platform(
        account("2002", forwards=(rule(ForwardKind.PERMANENT, "2003"),)),
        account("2003", forwards=(rule(ForwardKind.PERMANENT, "2002"),)),
    )
    d = drive(setup, "2002")
    assert d.start(0) == [FailCall(482, "Loop Detected", "Forwarding loop: 2002 already rung")]


def test_loop_ends_in_voicemail_of_the_last_account_that_has_one() -> None:
    setup = platform(
        account("2002", forwards=(rule(ForwardKind.PERMANENT, "2003"),)),
        account("2003", voicemail=True, forwards=(rule(ForwardKind.BUSY, "2002"),)),
    )
    d = drive(setup, "2002")
    d.start(0)
    d.event(d.branch_to("2003"), BranchBusy(), 1)
    assert d.ringing_labels() == {"voicemail:acme-2003"}


def test_nested_forwards_stack_diversions_most_recent_first() -> None:
    setup = platform(
        account("2001", forwards=(rule(ForwardKind.NO_ANSWER, "2002", delay_seconds=5),)),
        account("2002", forwards=(rule(ForwardKind.PERMANENT, "0612000000"),)),
    )
    d = drive(setup, "2001")
    d.start(0)
    [ring] = d.advance(5)[1:]
    assert ring.diversions == (
        Diversion(DiversionReason.UNCONDITIONAL, "+33140002002", 2, "acme-2002"),
        Diversion(DiversionReason.NO_ANSWER, "+33140002001", 1, "acme-2001"),
    )
    assert ring.billed_account_id == "acme-2002"


def test_hop_limit() -> None:
    chain = [
        account("2001", forwards=(rule(ForwardKind.PERMANENT, "2002"),)),
        account("2002", forwards=(rule(ForwardKind.PERMANENT, "2003"),)),
        account("2003"),
    ]
    d = drive(platform(*chain, hop_limit=1), "2001")
    assert d.start(0) == [FailCall(483, "Too Many Hops", "More than 1 forwards")]
    d = drive(platform(*chain, hop_limit=2), "2001")
    d.start(0)
    assert d.ringing_labels() == {"2003"}


def test_forward_to_blocked_premium_falls_back_to_voicemail() -> None:
    setup = platform(
        account(
            "2002", block_premium=True, voicemail=True, forwards=(rule(ForwardKind.PERMANENT, "0892680000"),)
        )
    )
    d = drive(setup, "2002")
    d.start(0)
    assert d.ringing_labels() == {"voicemail:acme-2002"}


def test_forward_outside_asks_the_rater_for_the_forwarding_account() -> None:
    setup = platform(account("2002", forwards=(rule(ForwardKind.PERMANENT, "0612000000"),)))
    d = drive(setup, "2002", authorise=lambda r: Authorisation(False, 402, "Payment Required", "No credit"))
    assert d.start(0) == [FailCall(402, "Payment Required", "No credit")]
    d = drive(setup, "2002", authorise=lambda r: Authorisation(max_duration=60))
    [ring] = d.start(0)
    assert ring.max_duration == 60


def test_declined_goes_to_voicemail_or_back_to_caller() -> None:
    d = drive(platform(account("2002", voicemail=True)), "2002")
    d.start(0)
    d.event(1, BranchFailed(603, "Decline"), 1)
    assert d.ringing_labels() == {"voicemail:acme-2002"}
    d = drive(platform(account("2002")), "2002")
    d.start(0)
    assert d.event(1, BranchFailed(603, "Decline"), 1) == [FailCall(603, "Decline")]


def test_caller_cancel_stops_every_branch() -> None:
    fm = FollowMe((ForwardTarget("0699999999", 20, 0), ForwardTarget("2003", 20, 0)))
    d = drive(platform(account("2002", follow_me=fm), account("2003")), "2002")
    d.start(0)
    assert sorted(a.branch_id for a in d.plan.cancel()) == [1, 2]
    assert d.plan.result == FailCall(487, "Request Terminated")
    assert d.plan.next_deadline() is None
    assert d.plan.on_timer(100) == []


def test_forward_back_to_the_calling_account_is_a_loop() -> None:
    setup = platform(
        account("2001"), account("2002", voicemail=True, forwards=(rule(ForwardKind.BUSY, "2001"),))
    )
    plan = plan_incoming(
        setup, setup.accounts["acme-2002"], Caller("2001", account_id="acme-2001"), CallState()
    )
    d = Driver(plan)
    d.start(0)
    d.event(1, BranchBusy(), 1)
    assert d.ringing_labels() == {"voicemail:acme-2002"}


def test_no_answer_rule_without_targets_sets_the_delay_before_voicemail() -> None:
    delay_only = ForwardRule(ForwardKind.NO_ANSWER, (), delay_seconds=12)
    d = drive(platform(account("2002", voicemail=True, forwards=(delay_only,))), "2002")
    d.start(0)
    assert d.plan.next_deadline() == 12
    d.advance(12)
    assert d.ringing_labels() == {"voicemail:acme-2002"}
