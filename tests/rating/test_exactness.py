"""The integer hot path agrees with a plain Decimal reference of the documented rules."""

from __future__ import annotations

from decimal import ROUND_HALF_UP
from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from rating.model import Pulse, RateRow
from rating.pulse import billed_seconds, split_free
from tests.rating.builders import call, rater

money9 = st.integers(min_value=0, max_value=10**9).map(lambda n: D(n).scaleb(-9))  # 0..1 with 9 decimals
percent = st.integers(min_value=0, max_value=100_0000).map(lambda n: D(n).scaleb(-4))  # 0..100 %, 4 dp
pulses = st.sampled_from([Pulse(60, 60), Pulse(1, 1), Pulse(30, 6), Pulse(6, 6), Pulse(60, 1)])


def _round(x: D) -> D:
    return x.quantize(D("0.000001"), rounding=ROUND_HALF_UP)


@settings(max_examples=300, deadline=None)
@given(
    cost=money9,
    fixed=money9,
    pct=percent,
    pulse=pulses,
    carrier=pulses,
    duration=st.integers(min_value=0, max_value=7200),
    bundle_left=st.integers(min_value=0, max_value=130),
    connect=st.integers(min_value=0, max_value=10**5).map(lambda n: D(n).scaleb(-6)),
)
def test_price_and_cost_match_the_decimal_reference(
    cost: D, fixed: D, pct: D, pulse: Pulse, carrier: Pulse, duration: int, bundle_left: int, connect: D
) -> None:
    rows = (RateRow("+44", "UK", "international", cost, carrier, connect),)
    r = rater(
        rows=rows,
        package={"markup_fixed": fixed, "markup_percent": pct, "pulse": pulse, "free_minutes": 100},
    )
    rated = r.rate(call("+442071234567", duration), free_minutes_left=bundle_left)

    sell = (cost + fixed) * (1 + pct / 100)  # exact in Decimal's default 28 digits for these ranges
    used, rest = split_free(duration, bundle_left) if sell else (0, duration)
    billed = billed_seconds(rest, pulse.initial, pulse.subsequent)
    price = _round(sell * billed / 60) if sell else D(0)
    expected_cost = (
        _round(cost * billed_seconds(duration, carrier.initial, carrier.subsequent) / 60) + connect
    )

    assert rated.free_minutes_used == used
    assert rated.billed_seconds == billed
    assert rated.price == price
    assert rated.cost == expected_cost
    assert rated.margin == rated.price - rated.cost
