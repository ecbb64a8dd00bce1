"""The C hot path (rating/_rater_c.c) against the Python Rater methods, its reference.

Contract: for any setup and call, `Rater(setup).authorise / .rate` (C first) return exactly what
`Rater(setup, accelerate=False)` returns -- same values, same types, same exceptions -- and the
everyday calls (prepaid or unlimited, rated, unblocked) are answered by the C code itself (or the
speed it exists for is gone without a failing test). The strategies and the comparison are in
fuzz/rater_cases.py, shared with the fuzz target `rater`.
"""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.rater_cases import START, agree, setups
from rating import rater as rater_module
from rating.model import (
    AccountBilling,
    BalanceMode,
    CallToRate,
    CustomerBilling,
    Direction,
    Package,
    Pulse,
    RateRow,
    RateTable,
    RatingSetup,
)
from rating.rater import Rater
from tests.extensions import require_extension

require_extension(rater_module._rater_c, "rating._rater_c")
C = rater_module._rater_c


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), setup=setups())
def test_c_hot_path_answers_what_the_reference_answers(data: Any, setup: RatingSetup) -> None:
    agree(data, setup, everyday=False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), setup=setups(everyday=True))
def test_c_hot_path_agrees_on_everyday_calls(data: Any, setup: RatingSetup) -> None:
    """The calls the C code answers itself: prices to the micro-unit, max durations at pulse edges."""
    agree(data, setup, everyday=True)


def _never(*args: Any) -> Any:
    raise AssertionError(f"the C path handed the everyday call {args} to the reference")


@pytest.mark.parametrize("mode", list(BalanceMode))
def test_everyday_calls_are_answered_in_c(mode: BalanceMode) -> None:
    rows = (
        RateRow("+33", "France", "fixed", D("0.005")),
        RateRow("+336", "France mobile", "mobile", D("0.009"), Pulse(30, 6), D("0.01")),
        RateRow("+33612", "France mobile X", "mobile", D("0.0123456")),
    )
    setup = RatingSetup(
        rate_tables={"t": RateTable("t", rows)},
        packages={"p": Package("p", "t", D("0.0025"), D(20), Pulse(30, 6), D("0.02"), free_minutes=10)},
        customers={"c": CustomerBilling("c", balance_mode=mode)},
        accounts={"a": AccountBilling("a", "c", "p")},
    )
    ref = Rater(setup, accelerate=False)
    terms = {"a": ref._plans["a"].fast_terms}
    for number in ("+3312345", "+33612345", "+3361", "+33"):
        for duration in (0, 1, 29, 30, 31, 36, 37, 600):
            call = CallToRate(Direction.OUTBOUND, "a", number, START, duration=duration)
            expected = ref.authorise(call, 5_000_000, 0, 3)
            assert C.authorise(terms, _never, call, 5_000_000, 0, 3) == expected
            assert type(C.authorise(terms, _never, call, 5_000_000)) is type(expected)
            for free in (0, 3, 20):
                rated = ref.rate(call, free, expected.route)
                assert C.rate(terms, _never, call, free, expected.route) == rated
                assert C.rate(terms, _never, call, free) == rated
                assert type(C.rate(terms, _never, call, free)) is type(rated)
