"""Daily spending caps (the customer's and the account's) at their edges: exactly at the cap, one
micro-unit below and over it, the smaller allowance binding, the hold a call takes never below its
price at the duration it is granted, and the day counted in the operator's time zone."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rating.counters import MemoryCounterStore
from rating.model import BalanceMode, Pulse, RateRow, Refusal
from rating.settlement import authorise_call, day_key
from tests.rating.builders import call, rater

PER_SECOND = {"pulse": Pulse(1, 1), "markup_fixed": D(0), "markup_percent": D(0)}
ROWS = (RateRow("+33700", "Expensive", "special", D("0.6")),)  # 0.01 / s = 10_000 micro-units / s
TO = "+33700123456"


def capped(account_cap: str | None = "0.05", customer_cap: str | None = None, **customer: object):
    return rater(
        package=PER_SECOND,
        rows=ROWS,
        account={"daily_cap": D(account_cap)} if account_cap else None,
        customer={**({"daily_cap": D(customer_cap)} if customer_cap else {}), **customer},
    )


def test_account_cap_exactly_reached_is_refused() -> None:
    auth = capped().authorise(call(TO), account_spent_micros=50_000)
    assert (auth.allowed, auth.reason) == (False, Refusal.ACCOUNT_DAILY_CAP_REACHED)


def test_one_micro_unit_over_the_cap_is_refused() -> None:
    auth = capped().authorise(call(TO), account_spent_micros=50_001)
    assert auth.reason is Refusal.ACCOUNT_DAILY_CAP_REACHED


def test_one_micro_unit_left_buys_nothing() -> None:
    auth = capped().authorise(call(TO), account_spent_micros=49_999)
    assert (auth.allowed, auth.reason) == (False, Refusal.ACCOUNT_DAILY_CAP_REACHED)


def test_what_is_left_is_the_granted_duration() -> None:
    r = capped()
    assert r.authorise(call(TO)).max_seconds == 5  # 0.05 at 0.01 / s
    assert r.authorise(call(TO), account_spent_micros=40_000).max_seconds == 1  # exactly one second
    assert r.authorise(call(TO), account_spent_micros=35_000).max_seconds == 1  # 1.5 s: whole pulses


def test_the_smaller_allowance_binds() -> None:
    both = capped("0.05", "0.03")
    assert both.authorise(call(TO)).max_seconds == 3  # the customer's
    assert both.authorise(call(TO), spent_today_micros=30_000).reason is Refusal.DAILY_CAP_REACHED
    assert both.authorise(call(TO), account_spent_micros=30_000).max_seconds == 2  # the account's
    refused = both.authorise(call(TO), spent_today_micros=0, account_spent_micros=49_000)
    assert refused.reason is Refusal.ACCOUNT_DAILY_CAP_REACHED  # 0.001 left on the account
    hard = capped("0.05", None, balance_mode=BalanceMode.HARD)
    assert hard.authorise(call(TO), balance_micros=20_000).max_seconds == 2  # the balance binds
    assert hard.authorise(call(TO), balance_micros=0).reason is Refusal.BALANCE_EXHAUSTED


def test_uncapped_account_of_a_soft_customer_is_unlimited() -> None:
    assert capped(None).authorise(call(TO), account_spent_micros=10**12).max_seconds is None
    assert not capped(None).capped("a") and capped().capped("a") and capped(None, "1").capped("a")


@given(
    spent=st.integers(0, 60_000),
    pulse=st.sampled_from([Pulse(1, 1), Pulse(30, 6), Pulse(60, 60), Pulse(60, 1)]),
    connect=st.sampled_from([D(0), D("0.003")]),
)
def test_the_price_at_the_granted_duration_never_passes_what_is_left(
    spent: int, pulse: Pulse, connect: D
) -> None:
    r = rater(
        package={**PER_SECOND, "pulse": pulse, "connect_fee": connect},
        rows=ROWS,
        account={"daily_cap": D("0.05")},
    )
    auth = r.authorise(call(TO), account_spent_micros=spent)
    left = 50_000 - spent
    if not auth.allowed:
        assert r.rate(call(TO, duration=pulse.initial)).price_micros > left  # not even one pulse fits
        return
    seconds = auth.max_seconds
    assert seconds is not None and seconds > 0
    assert r.rate(call(TO, duration=seconds)).price_micros <= left
    assert r.rate(call(TO, duration=seconds + pulse.subsequent)).price_micros > left  # the longest


# ---- the day, in the operator's time zone -----------------------------------------------------------
@pytest.mark.parametrize(
    ("instant", "zone", "day"),
    [
        ("2026-12-04T22:59:59+00:00", "Europe/Paris", "2026-12-04"),  # 23:59:59 in Paris
        ("2026-12-04T23:00:00+00:00", "Europe/Paris", "2026-12-05"),  # midnight in Paris
        ("2026-12-04T23:00:00+00:00", "UTC", "2026-12-04"),
        ("2026-12-05T04:59:59+00:00", "America/New_York", "2026-12-04"),
        ("2026-12-05T05:00:00+00:00", "America/New_York", "2026-12-05"),
        ("2026-03-29T00:59:59+00:00", "Europe/Paris", "2026-03-29"),  # the spring-forward day
    ],
)
def test_day_rolls_over_at_the_operators_midnight(instant: str, zone: str, day: str) -> None:
    assert day_key(datetime.fromisoformat(instant), zone) == day


async def test_authorise_call_counts_holds_and_the_larger_settled_spend() -> None:
    r = capped("0.05", "0.04")
    store = MemoryCounterStore()
    start = datetime(2026, 12, 4, 10, tzinfo=UTC)
    await store.debit_call("c", day_key(start), 10_000)  # this process's store: 0.01 today
    at = call(TO, start=start)
    assert (await authorise_call(r, store, at)).max_seconds == 3  # 0.04 - 0.01
    assert (await authorise_call(r, store, at, (25_000, 0, 0))).max_seconds == 1  # the tally knows more
    assert (await authorise_call(r, store, at, (5_000, 20_000, 0))).max_seconds == 1  # 0.01 + 0.02 held
    held = await authorise_call(r, store, at, (0, 0, 50_000))  # the account's spend and holds
    assert held.reason is Refusal.ACCOUNT_DAILY_CAP_REACHED
