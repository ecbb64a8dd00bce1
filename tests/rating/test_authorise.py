"""Authorisation at call setup: refusals with their reason, and the longest duration money pays."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rating.model import BalanceMode, DidBilling, Direction, Pulse, Refusal
from rating.money import rate_units, to_micros
from rating.rater import max_paid_seconds
from tests.rating.builders import START, call, rater

HARD = {"balance_mode": BalanceMode.HARD}


def test_soft_customer_is_allowed_without_limit_even_when_negative() -> None:
    auth = rater().authorise(call(), balance_micros=-5_000_000)
    assert (auth.allowed, auth.reason, auth.max_seconds) == (True, None, None)


def test_unrated_destination_is_refused() -> None:
    auth = rater().authorise(call("+8612345678"))
    assert (auth.allowed, auth.reason) == (False, Refusal.NO_RATE)


def test_blocked_premium_and_out_of_plan() -> None:
    r = rater(package={"included_categories": frozenset({"fixed"})}, account={"block_premium": True})
    assert r.authorise(call("+33891234567")).reason is Refusal.BLOCKED_CATEGORY
    assert r.authorise(call("+33612345678")).allowed  # out-of-plan but not blocked
    r = rater(package={"included_categories": frozenset({"fixed"})}, account={"block_out_of_plan": True})
    assert r.authorise(call("+33612345678")).reason is Refusal.OUT_OF_PLAN_BLOCKED
    assert r.authorise(call("+33891234567")).reason is Refusal.OUT_OF_PLAN_BLOCKED
    assert r.authorise(call("+33145678901")).allowed  # included
    both = rater(account={"block_out_of_plan": True, "block_premium": True})
    assert both.authorise(call("+33891234567")).reason is Refusal.BLOCKED_CATEGORY


def test_free_zone_and_zero_override_are_in_plan() -> None:
    r = rater(
        package={"free_prefixes": frozenset({"+44"}), "overrides": {"+336": D(0)}},
        account={"block_out_of_plan": True},
    )
    assert r.authorise(call("+442071234567")).allowed
    assert r.authorise(call("+33612345678")).allowed
    assert r.authorise(call("+33145678901")).reason is Refusal.OUT_OF_PLAN_BLOCKED


@pytest.mark.parametrize("balance", [0, -1])
def test_hard_balance_at_or_below_zero_is_refused(balance: int) -> None:
    auth = rater(customer=HARD).authorise(call(), balance_micros=balance)
    assert (auth.allowed, auth.reason) == (False, Refusal.BALANCE_EXHAUSTED)


def test_hard_balance_ignored_for_free_calls_and_internal_customers() -> None:
    r = rater(customer=HARD, package={"included_categories": frozenset({"fixed"})})
    assert r.authorise(call("+33145678901"), balance_micros=0).max_seconds is None
    assert r.authorise(call("1001", direction=Direction.INTERNAL)).allowed
    assert r.authorise(call(on_net=True)).allowed
    internal = rater(customer={**HARD, "internal": True})
    assert internal.authorise(call(), balance_micros=0).allowed


def test_max_duration_respects_the_pulse() -> None:
    # 0.0138/min, balance 0.05: 3 minutes cost 0.0414, 4 cost 0.0552 -> 180 s at pulse 60
    r = rater(customer=HARD)
    assert r.authorise(call(), balance_micros=50_000).max_seconds == 180
    # pulse 1: 0.05 / 0.00023 = 217.39 -> 217 s (price 0.04991 <= 0.05; 218 s = 0.05014)
    r1 = rater(customer=HARD, package={"pulse": Pulse(1, 1)})
    assert r1.authorise(call(), balance_micros=50_000).max_seconds == 217
    # 30/6: 217 s of money -> 30 + 31 x 6 = 216 s
    r2 = rater(customer=HARD, package={"pulse": Pulse(30, 6)})
    assert r2.authorise(call(), balance_micros=50_000).max_seconds == 216


def test_max_duration_is_exact_at_the_rounding_edge() -> None:
    # one pulse of 60 s at 0.0138 costs exactly 0.013800: a balance of 0.013800 pays it, 0.013799 does not
    r = rater(customer=HARD)
    assert r.authorise(call(), balance_micros=13_800).max_seconds == 60
    refused = r.authorise(call(), balance_micros=13_799)
    assert (refused.allowed, refused.reason) == (False, Refusal.BALANCE_EXHAUSTED)


def test_max_duration_adds_free_minutes_left() -> None:
    r = rater(customer=HARD, package={"free_minutes": 100})
    assert r.authorise(call(), balance_micros=50_000, free_minutes_left=2).max_seconds == 120 + 180
    # balance too low for one paid pulse, but free minutes still let the call run on them
    assert r.authorise(call(), balance_micros=1, free_minutes_left=2).max_seconds == 120


def test_connect_fee_comes_off_the_budget_first() -> None:
    r = rater(customer=HARD, package={"connect_fee": D("0.01")})
    assert r.authorise(call(), balance_micros=50_000).max_seconds == 120  # 0.04 left -> 2 min
    assert r.authorise(call(), balance_micros=5_000).reason is Refusal.BALANCE_EXHAUSTED


def test_daily_cap() -> None:
    r = rater(customer={"daily_cap": D("1.00")})
    assert r.authorise(call(), spent_today_micros=1_000_000).reason is Refusal.DAILY_CAP_REACHED
    # 0.05 left under the cap -> 180 s at 0.0138 / min, pulse 60
    assert r.authorise(call(), spent_today_micros=950_000).max_seconds == 180
    hard = rater(customer={**HARD, "daily_cap": D("1.00")})
    assert hard.authorise(call(), balance_micros=30_000, spent_today_micros=0).max_seconds == 120
    assert hard.authorise(call(), balance_micros=900_000, spent_today_micros=990_000).reason is (
        Refusal.DAILY_CAP_REACHED
    )


def test_billing_end_date_is_inclusive() -> None:
    r = rater(account={"billing_end": date(2026, 11, 22)})
    assert r.authorise(call()).allowed  # START is on the 22nd
    later = call(start=START.replace(day=23, hour=0))
    assert r.authorise(later).reason is Refusal.BILLING_ENDED


@pytest.mark.parametrize(
    "setup",
    [
        {"package": {"included_categories": frozenset({"fixed"})}},  # an included (free) call
        {"customer": {"internal": True}},  # a customer never billed
        {"package": {"overrides": {"+33": D(0)}}},  # priced 0 by an override
    ],
)
def test_calls_after_billing_end_are_refused_even_when_free(setup: dict[str, dict[str, object]]) -> None:
    """An ended contract must not keep costing the operator carrier money: the edge day is the
    last allowed one (UTC), its next second is refused, in plan or not."""
    r = rater(account={"billing_end": date(2026, 11, 22)}, **setup)  # type: ignore[arg-type]
    last = call("+33145678901", start=START.replace(hour=23, minute=59, second=59))
    first_after = call("+33145678901", start=START.replace(day=23, hour=0, minute=0, second=0))
    assert r.authorise(last).allowed
    assert r.authorise(first_after).reason is Refusal.BILLING_ENDED


def test_inbound_did_with_incoming_rate_and_hard_balance() -> None:
    did = DidBilling("+33184000001", "c", incoming_rate_per_minute=D("0.01"))
    r = rater(customer=HARD, dids=(did,))
    inbound = call("+33184000001", direction=Direction.INBOUND, account_id=None)
    assert r.authorise(inbound, balance_micros=25_000).max_seconds == 120
    assert r.authorise(inbound, balance_micros=0).reason is Refusal.BALANCE_EXHAUSTED


def test_route_token_skips_the_second_lookup_and_gives_the_same_answer() -> None:
    r = rater()
    auth = r.authorise(call())
    assert r.rate(call(), route=auth.route) == r.rate(call())


def test_max_paid_seconds_matches_a_brute_force_search() -> None:
    for cost in ("0.0138", "0.35", "0.000123", "1.5"):
        rate = rate_units(D(cost))
        for budget in (0, 1, 229, 230, 13_799, 13_800, 20_000):
            for initial, subsequent in ((60, 60), (1, 1), (30, 6)):
                got = max_paid_seconds(rate, budget, initial, subsequent)
                steps = [0] + [initial + k * subsequent for k in range(0, 12_000)]
                affordable = [b for b in steps if (2 * rate * b + 6 * 10**10) // (12 * 10**10) <= budget]
                assert max(affordable) < steps[-1]  # the search range was wide enough
                assert got == max(affordable), (cost, budget, initial, subsequent)


@settings(max_examples=200, deadline=None)
@given(
    balance=st.integers(min_value=1, max_value=5_000_000),
    pulse=st.sampled_from([Pulse(60, 60), Pulse(1, 1), Pulse(30, 6), Pulse(6, 6)]),
    free_left=st.integers(min_value=0, max_value=5),
    connect=st.sampled_from(["0", "0.01", "0.000001"]),
    number=st.sampled_from(["+33612345678", "+33891234567", "+442071234567"]),
)
def test_prepaid_fast_path_agrees_with_the_reference_formula(
    balance: int, pulse: Pulse, free_left: int, connect: str, number: str
) -> None:
    """The inlined prepaid path and the general one (via a far-away end date) give one answer."""
    package = {"pulse": pulse, "free_minutes": 5, "connect_fee": D(connect)}
    fast = rater(customer=HARD, package=package)
    general = rater(customer=HARD, package=package, account={"billing_end": date(2099, 1, 1)})
    a = fast.authorise(call(number), balance_micros=balance, free_minutes_left=free_left)
    b = general.authorise(call(number), balance_micros=balance, free_minutes_left=free_left)
    assert a == b
    route = fast.match("a", number)
    paid = max_paid_seconds(route.sell_rate, balance - to_micros(D(connect)), pulse.initial, pulse.subsequent)
    expected = max(paid, 0) + free_left * 60
    if expected > 0 and paid >= 0:
        assert a.max_seconds == expected
    else:
        assert a.reason is Refusal.BALANCE_EXHAUSTED
