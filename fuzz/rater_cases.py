"""Setups and calls for holding the rater's C hot path (rating/_rater_c.c) to the Python Rater methods,
its reference: the Hypothesis strategies and the comparison, in one place because two drivers share
them: tests/rating/test_rater_c.py (Hypothesis' own search) and fuzz/target_rater.py (the fuzzer's bytes,
through `fuzz_one_input`)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from typing import Any

from hypothesis import strategies as st

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

START = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
CATEGORIES = ("fixed", "mobile", "international", "premium")

prefixes = st.text("0129", min_size=1, max_size=6).map(lambda s: "+" + s)
numbers = st.text("0129", min_size=0, max_size=9).map(lambda s: "+" + s)
cost = st.one_of(
    st.integers(0, 5_000_000).map(lambda n: D(n).scaleb(-6)),  # up to 6 decimals
    st.integers(0, 10**12).map(lambda n: D(n).scaleb(-9)),  # 9 decimals, up to 1000/min
)
pulses = st.builds(Pulse, st.integers(1, 90), st.integers(1, 60))
fee = st.one_of(st.just(D(0)), st.integers(0, 100_000).map(lambda n: D(n).scaleb(-6)))
cap = st.one_of(*[st.none()] * 6, st.integers(0, 5_000_000).map(lambda n: D(n).scaleb(-6)))
amount = st.one_of(
    st.integers(-1_000_000, 100_000_000),
    st.integers(1, 100_000_000),
    st.sampled_from([0, 1, -1, 10**15, 2**63 - 1, 2**63, 10**30, -(10**30)]),
)


@st.composite
def setups(draw: Any, everyday: bool = False) -> RatingSetup:
    """Any setup; `everyday`: none of the limits the C code hands to the reference (caps, ends, blocks)."""
    keys = draw(st.lists(prefixes, min_size=1, max_size=25, unique=True))
    rows = tuple(
        RateRow(k, f"dest {k}", draw(st.sampled_from(CATEGORIES)), draw(cost), draw(pulses), draw(fee))
        for k in keys
    )
    package = Package(
        "p",
        "t",
        markup_fixed=draw(st.integers(0, 10_000).map(lambda n: D(n).scaleb(-4))),
        markup_percent=draw(st.integers(0, 5_000).map(lambda n: D(n).scaleb(-2))),
        pulse=draw(pulses),
        connect_fee=draw(fee),
        overrides=draw(st.dictionaries(prefixes, cost, max_size=3)),
        free_country_codes=frozenset(draw(st.lists(st.text("0129", min_size=1, max_size=2), max_size=1))),
        free_prefixes=frozenset(draw(st.lists(prefixes, max_size=2))),
        free_cost_threshold=draw(st.one_of(st.none(), st.sampled_from([D("0.001"), D("0.0001")]))),
        included_categories=frozenset(draw(st.lists(st.sampled_from(CATEGORIES), max_size=2))),
        free_minutes=draw(st.sampled_from([0, 0, 5, 100])),
    )
    customer = CustomerBilling(
        "c",
        "REF",
        balance_mode=draw(st.sampled_from(BalanceMode)),
        internal=draw(st.booleans()) and draw(st.booleans()),
        daily_cap=None if everyday else draw(cap),
    )
    end = (
        None
        if everyday
        else draw(st.one_of(*[st.none()] * 6, st.sampled_from([date(2026, 11, 21), date(2026, 11, 22)])))
    )
    account = AccountBilling(
        "a",
        "c",
        "p",
        block_premium=not everyday and draw(st.booleans()) and draw(st.booleans()),
        block_out_of_plan=not everyday and draw(st.booleans()) and draw(st.booleans()),
        billing_end=end,
        daily_cap=None if everyday else draw(cap),
    )
    return RatingSetup(
        rate_tables={"t": RateTable("t", rows)},
        packages={"p": package},
        customers={"c": customer},
        accounts={"a": account},
    )


@st.composite
def calls(draw: Any, setup: RatingSetup, everyday: bool = False) -> CallToRate:
    """Any call; `everyday`: a rated number called from the account, off-net, outbound or forwarded."""
    keys = [r.prefix for r in setup.rate_tables["t"].rows]
    ext = st.text("0129", max_size=4)
    numbers_of = st.tuples(st.sampled_from(keys), ext).map("".join)
    number = draw(numbers_of if everyday else st.one_of(numbers, st.sampled_from(keys), numbers_of))
    package = setup.packages["p"]
    edges = [0, 1, package.pulse.initial, package.pulse.initial + 1, 59, 60, 61, 300, 6001]
    edges += [package.pulse.initial + k * package.pulse.subsequent + d for k in (1, 2) for d in (-1, 0, 1)]
    duration = draw(st.one_of(st.sampled_from(edges), st.integers(-2, 4000), st.just(2**62)))
    if everyday:
        direction, account, on_net = (
            draw(st.sampled_from([Direction.OUTBOUND, Direction.FORWARDED])),
            "a",
            False,
        )
    else:
        direction = draw(
            st.sampled_from([Direction.OUTBOUND] * 6 + [Direction.FORWARDED] * 2 + list(Direction))
        )
        account = draw(st.sampled_from(["a"] * 6 + ["nobody"]))
        on_net = draw(st.booleans()) and draw(st.booleans())
    return CallToRate(
        direction,
        account,
        number,
        START + timedelta(days=draw(st.integers(-1, 1))),
        on_net=on_net,
        answered=draw(st.booleans()) or draw(st.booleans()),
        duration=duration,
    )


def outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """What a call gives: (type, value) or (exception type, its args)."""
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:  # the reference's errors must be the C path's errors
        return ("raised", type(exc), exc.args)
    return (type(result), result)


def agree(data: Any, setup: RatingSetup, everyday: bool) -> None:
    """Eight calls drawn for ``setup``, each authorised and rated by the C path and the reference with
    the same arguments: any difference in value, type or exception raises AssertionError. Read
    `rating.rater._rater_c` now, not at import, so it is whatever build rating.rater loaded."""
    c = rater_module._rater_c
    assert c is not None, "rating._rater_c is not in use: there is nothing to compare"
    fast, ref = Rater(setup), Rater(setup, accelerate=False)
    assert fast.authorise.func is c.authorise  # type: ignore[attr-defined]
    balance = st.integers(1, 10**9) if everyday else amount
    for _ in range(8):
        call = data.draw(calls(setup, everyday))
        money = data.draw(st.tuples(balance, amount, st.integers(-2, 200), amount))
        n = data.draw(st.integers(0, 4))
        auth, expected = outcome(fast.authorise, call, *money[:n]), outcome(ref.authorise, call, *money[:n])
        assert auth == expected, ("authorise", call, money[:n], auth, expected)
        route = auth[1].route if auth[0] is not None and auth[0] != "raised" else None
        free = data.draw(st.one_of(st.integers(-1, 200), st.sampled_from([2**63, 10**20])))
        for args in ((call,), (call, free), (call, free, None), (call, free, route)):
            rated, expected = outcome(fast.rate, *args), outcome(ref.rate, *args)
            assert rated == expected, ("rate", args, rated, expected)
        # keyword arguments are the reference's to parse
        rated, expected = outcome(fast.rate, call, route=route), outcome(ref.rate, call, route=route)
        assert rated == expected, ("rate, route=", call, route, rated, expected)
