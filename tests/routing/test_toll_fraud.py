"""Toll-fraud limits in routing (routing.toll_fraud, route_outgoing): destination blocklists layered
platform → customer → account, the call-rate limit at its edges (exactly at the limit, one over, the
window boundary), and the refusals' causes. Pure: tallies and the wall clock are arguments."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing import CallState, ForwardKind, ForwardRule, ForwardTarget
from routing.authorise import Authorisation, AuthoriseRequest
from routing.model import DialingRules
from routing.numbering import is_premium
from routing.outgoing import DecisionKind, route_outgoing
from routing.plan_events import FailCall
from routing.refusals import RefusalCause
from routing.toll_fraud import (
    SATELLITE_PREFIXES,
    Blocklist,
    RateLimit,
    estimated_rate,
    hold_keys,
    over_rate,
    placed_keys,
    rate_key,
    spent_day_of,
    spent_keys,
    stale_rate_key,
    window_of,
)
from tests.routing.helpers import account, platform
from tests.routing.test_plan_account import drive

PLATFORM = (SATELLITE_PREFIXES, ())


def test_default_blocklist_refuses_satellite_and_international_networks() -> None:
    blocklist = Blocklist.layered(PLATFORM)
    for number in ("+881612345678", "+88213012345", "+8835100123456", "+870772123456", "+979123456789"):
        assert blocklist.blocking_prefix(number) == number[:4], number
    for number in ("+33612345678", "+442071234567", "+8801712345678", "+88612345678"):
        assert blocklist.blocking_prefix(number) is None, number  # Bangladesh and Taiwan are not satellite


def test_longest_prefix_decides_across_levels() -> None:
    blocklist = Blocklist.layered(
        PLATFORM,
        (("+4420",), ("+8816",)),  # the customer blocks London, allows Iridium
        (("+88169",), ()),  # the account blocks one Iridium range again
    )
    assert blocklist.blocking_prefix("+442071234567") == "+4420"
    assert blocklist.blocking_prefix("+441612345678") is None
    assert blocklist.blocking_prefix("+881612345678") is None  # the customer's exception
    assert blocklist.blocking_prefix("+881691234567") == "+88169"  # the account's longer block
    assert blocklist.blocking_prefix("+881712345678") == "+881"  # the platform's, outside the exception


def test_the_narrower_level_wins_on_the_same_prefix() -> None:
    assert Blocklist.layered(PLATFORM, ((), ("+881",))).blocking_prefix("+881612345678") is None
    assert Blocklist.layered(((), ("+881",)), (("+881",), ())).blocking_prefix("+8816") == "+881"
    assert Blocklist.layered().blocking_prefix("+881612345678") is None


def test_a_number_shorter_than_a_prefix_is_not_matched_by_it() -> None:
    assert Blocklist.layered((("+4420712",), ())).blocking_prefix("+4420") is None


@given(st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True))
def test_blocklist_agrees_with_a_brute_force_longest_match(number: str) -> None:
    levels = (PLATFORM, (("+4420", "+33"), ("+8816", "+336")), (("+3361",), ("+881",)))
    entries: dict[str, bool] = {}
    for blocked, allowed in levels:
        entries.update(dict.fromkeys(blocked, True))
        entries.update(dict.fromkeys(allowed, False))
    matches = [p for p in entries if number.startswith(p)]
    best = max(matches, key=len) if matches else None
    expected = best if best is not None and entries[best] else None
    assert Blocklist.layered(*levels).blocking_prefix(number) == expected


def test_platform_premium_prefixes_of_any_country() -> None:
    fr = DialingRules(country_code=33)
    with_gb = replace(fr, extra_premium=("+449",))
    assert not is_premium(fr, "+449012345678")  # a French customer's own list says +338 only
    assert is_premium(with_gb, "+449012345678")
    assert is_premium(with_gb, "+33899123456") and not is_premium(with_gb, "+33612345678")


# ---- call rate --------------------------------------------------------------------------------------
def test_rate_limit_exactly_at_the_limit_and_one_over() -> None:
    two = RateLimit(2, 1)
    assert not over_rate(two, previous=0, current=1, into=0.3)  # the 2nd call of the second
    assert over_rate(two, previous=0, current=2, into=0.3)  # the 3rd
    assert not over_rate(two, previous=0, current=0, into=0.99)


def test_the_previous_window_counts_for_the_part_still_inside() -> None:
    two = RateLimit(2, 1)
    assert over_rate(two, previous=2, current=0, into=0.0)  # 2 calls a moment ago
    assert not over_rate(two, previous=2, current=0, into=0.5)  # half of them still count: 1
    assert over_rate(two, previous=2, current=1, into=0.5)  # 1 + 1 = the limit: no 3rd
    assert estimated_rate(4, 1, 0.75) == pytest.approx(2.0)


def test_windows_and_keys() -> None:
    minute = RateLimit(20, 60)
    assert window_of(minute, 1_000_000_050.0) == (16_666_667, pytest.approx(0.5))  # 30 s into it
    keys = placed_keys("acme-2001", (RateLimit(2, 1), minute), 1_000_000_050.5)
    assert keys == (rate_key("acme-2001", 1, 1_000_000_050), rate_key("acme-2001", 60, 16_666_667))
    assert not stale_rate_key(keys[0], 1_000_000_051.9)  # still the previous window at ...051
    assert stale_rate_key(keys[0], 1_000_000_052.0)
    assert not stale_rate_key(hold_keys("acme", "acme-2001")[0], 9e12)
    assert spent_day_of(spent_keys("acme", "acme-2001", "2026-12-04")[1]) == "2026-12-04"
    assert spent_day_of(hold_keys("acme", "acme-2001")[1]) is None
    with pytest.raises(ValueError):
        RateLimit(0, 1)


# ---- route_outgoing ---------------------------------------------------------------------------------
def _never(request: AuthoriseRequest) -> Authorisation:
    raise AssertionError(f"the rater is not asked about a refused call: {request}")


def test_simultaneous_call_limit_refuses_the_n_plus_first() -> None:
    caller = account("2001", max_calls=3)
    setup = platform(caller)
    assert route_outgoing(
        setup, caller, "0612345678", CallState(active_calls={caller.account_id: 2})
    ).kind is (DecisionKind.EXTERNAL)
    refused = route_outgoing(setup, caller, "0612345678", CallState(active_calls={caller.account_id: 3}))
    assert refused.refusal is not None and refused.refusal.cause is RefusalCause.CALL_LIMIT
    assert refused.refusal.status == 403 and "(3)" in refused.refusal.warning


def test_call_rate_limit_and_what_a_placed_call_counts() -> None:
    caller = account("2001", rate_limits=(RateLimit(2, 1),))
    setup = platform(caller, account("2002"))
    wall = 1_000_000_000.25
    counts: dict[str, int] = {}
    state = CallState(tally=lambda key: counts.get(key, 0), wall=wall)
    for _ in range(2):
        decision = route_outgoing(setup, caller, "2002" if _ else "0612345678", state)  # internal calls count
        assert decision.kind is not DecisionKind.REFUSED
        assert decision.admission is not None
        assert decision.admission.placed == (rate_key(caller.account_id, 1, 1_000_000_000),)
        for key in decision.admission.placed:  # what the proxy does with them
            counts[key] = counts.get(key, 0) + 1
    third = route_outgoing(setup, caller, "0612345678", state, _never)
    assert third.refusal is not None and third.refusal.cause is RefusalCause.CALL_RATE
    assert third.refusal.status == 403 and "2 per second" in third.refusal.warning
    later = replace(state, wall=wall + 1.5)  # the next second, half of the previous one still counts
    assert route_outgoing(setup, caller, "0612345678", later).kind is DecisionKind.EXTERNAL
    assert route_outgoing(setup, caller, "*21*0612345678#", state).kind is DecisionKind.FEATURE  # not a call


def test_blocked_destination_is_refused_before_the_rater() -> None:
    caller = account("2001", blocklist=Blocklist.layered(PLATFORM, (("+4420",), ())))
    setup = platform(caller)
    for dialed, prefix in (("00881612345678", "+881"), ("00442071234567", "+4420")):
        decision = route_outgoing(setup, caller, dialed, CallState(), _never)
        assert decision.refusal is not None and decision.refusal.cause is RefusalCause.DESTINATION_BLOCKED
        assert decision.refusal.status == 403 and prefix in decision.refusal.warning
        assert decision.refusal.label == "destination_blocked"
    assert route_outgoing(setup, caller, "00441612345678", CallState()).kind is DecisionKind.EXTERNAL


def test_the_raters_cause_is_the_refusals_label() -> None:
    caller = account("2001")
    answer = Authorisation(False, 403, "Daily Spending Cap Reached", "cap", cause="account_daily_cap_reached")
    decision = route_outgoing(platform(caller), caller, "0612345678", CallState(), lambda r: answer)
    assert decision.refusal is not None and decision.refusal.label == "account_daily_cap_reached"


def test_a_held_amount_reaches_the_decision() -> None:
    caller = account("2001")
    answer = Authorisation(True, max_duration=30, hold_micros=300_000)
    decision = route_outgoing(platform(caller), caller, "0612345678", CallState(), lambda r: answer)
    assert (decision.max_duration, decision.hold_micros) == (30, 300_000)


# ---- forwarded legs: paid by the forwarding account, its blocklist and holds apply ------------------
def test_forward_to_a_blocked_destination_fails_and_a_priced_one_carries_its_hold() -> None:
    blocked = account(
        "2002",
        blocklist=Blocklist.layered(PLATFORM),
        forwards=(ForwardRule(ForwardKind.PERMANENT, (ForwardTarget("00881612345678", None),)),),
    )
    d = drive(platform(blocked), "2002", authorise=_never)
    [fail] = d.start(0)
    assert isinstance(fail, FailCall) and fail.status == 403 and "+881" in fail.warning
    allowed = replace(
        blocked, forwards=(ForwardRule(ForwardKind.PERMANENT, (ForwardTarget("0612000000", None),)),)
    )
    d = drive(
        platform(allowed), "2002", authorise=lambda r: Authorisation(max_duration=60, hold_micros=12_000)
    )
    [ring] = d.start(0)
    assert (ring.max_duration, ring.hold_micros, ring.billed_account_id) == (60, 12_000, "acme-2002")
