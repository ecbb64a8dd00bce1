"""The compiled per-package table answers exactly what three separate longest-prefix searches would."""

from __future__ import annotations

from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from rating.model import Package, Pricing, RateRow, RateTable
from rating.tariff import compile_package, row_terms

digits = st.text("0123", min_size=1, max_size=5).map(lambda s: "+" + s)


def _longest(prefixes: set[str], number: str) -> str | None:
    hits = [p for p in prefixes if number.startswith(p)]
    return max(hits, key=len) if hits else None


@settings(max_examples=150, deadline=None)
@given(
    rates=st.sets(digits, min_size=1, max_size=25),
    overrides=st.sets(digits, max_size=6),
    free=st.sets(digits, max_size=6),
    numbers=st.lists(st.text("0123", min_size=1, max_size=8).map(lambda s: "+" + s), min_size=1, max_size=20),
)
def test_merged_table_matches_separate_searches(
    rates: set[str], overrides: set[str], free: set[str], numbers: list[str]
) -> None:
    rows = tuple(RateRow(p, f"d{p}", "mobile" if len(p) % 2 else "fixed", D("0.01")) for p in rates)
    package = Package(
        "p",
        "t",
        overrides={p: D("0.5") for p in overrides},
        free_prefixes=frozenset(free),
        included_categories=frozenset({"fixed"}),
    )
    table = compile_package(package, row_terms(RateTable("t", rows)), frozenset())
    for number in numbers:
        route = table.match(number)
        rate = _longest(rates, number)
        if rate is None:
            assert route is None
            continue
        assert route is not None
        assert route.destination == f"d{rate}"
        if _longest(overrides, number) is not None:
            expected = Pricing.OVERRIDE
        elif _longest(free, number) is not None:
            expected = Pricing.FREE_ZONE
        elif route.category == "fixed":
            expected = Pricing.INCLUDED
        else:
            expected = Pricing.MARKUP
        assert route.pricing is expected, (number, route)


def test_longest_prefix_wins_among_many() -> None:
    rows = tuple(RateRow("+" + "3" * n, f"len{n}", "fixed", D("0.01")) for n in range(1, 10))
    table = compile_package(Package("p", "t"), row_terms(RateTable("t", rows)), frozenset())
    assert table.match("+333333333333").prefix == "+333333333"
    assert table.match("+3334").prefix == "+333"
    assert table.match("+4") is None
    assert len(table) == 9
