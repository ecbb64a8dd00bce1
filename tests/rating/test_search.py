"""The pivot search of CompiledTable (and its copy inlined in Rater.authorise) is a plain longest-prefix match."""

from __future__ import annotations

from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from rating.model import Package, Pricing, RateRow, RateTable, Refusal
from rating.money import marked_up_rate_units, rate_units
from rating.tariff import CompiledTable, compile_package, row_terms, search_plan
from tests.rating.builders import call, rater

# few digits and many lengths: deeply nested prefixes, and a pivot that is not the longest length
prefixes = st.text("012", min_size=1, max_size=7).map(lambda s: "+" + s)
numbers = st.text("012", min_size=0, max_size=9).map(lambda s: "+" + s)


def _longest(keys: set[str], number: str) -> str | None:
    hits = [k for k in keys if number.startswith(k)]
    return max(hits, key=len) if hits else None


def _table(keys: set[str]) -> CompiledTable:
    rows = tuple(RateRow(k, f"d{k}", "mobile", D("0.01")) for k in keys)
    return compile_package(Package("p", "t"), row_terms(RateTable("t", rows)), frozenset())


@settings(max_examples=300, deadline=None)
@given(keys=st.sets(prefixes, min_size=1, max_size=60), probes=st.lists(numbers, min_size=1, max_size=30))
def test_find_and_authorise_agree_with_a_brute_force_longest_prefix(
    keys: set[str], probes: list[str]
) -> None:
    table = _table(keys)
    rows = tuple(RateRow(k, f"d{k}", "mobile", D("0.01")) for k in keys)
    r = rater(rows=rows)
    for number in [*probes, *keys, *(k + "0" for k in keys)]:
        expected = _longest(keys, number)
        entry = table.find(number)
        assert (entry[0] if entry else None) == expected, (number, sorted(keys))
        auth = r.authorise(call(number))
        if expected is None:
            assert (auth.allowed, auth.reason, auth.route) == (False, Refusal.NO_RATE, None)
        else:
            assert auth.allowed and auth.route[0] == expected  # type: ignore[index]
            assert r.rate(call(number), route=auth.route).matched_prefix == expected


def test_pivot_below_the_longest_length_with_marker_only_heads() -> None:
    # many mid-length keys pull the pivot down; +9876543 has no shorter key, so its head is a bare marker
    keys = {f"+{a}{b}{c}" for a in "123" for b in "0123456789" for c in "0123456789"}
    keys |= {"+9876543", "+1234567"}
    table = _table(keys)
    pivot, extended = search_plan(sorted(keys))
    assert table.pivot.stop == pivot == 4 < 8
    assert "+987" in extended and "+123" in extended and "+124" not in extended
    assert table.find("+98765439")[0] == "+9876543"  # type: ignore[index]
    assert table.find("+98761111") is None  # marker hit, no longer key, nothing shorter
    assert table.find("+9") is None
    assert table.find("+12345678")[0] == "+1234567"  # type: ignore[index]
    assert table.find("+12349999")[0] == "+123"  # type: ignore[index]
    assert table.find("+1249")[0] == "+124"  # type: ignore[index]
    assert table.match("+98761111") is None


def test_empty_and_single_length_tables() -> None:
    assert _table(set()).find("+33612345678") is None
    assert len(_table(set())) == 0
    one = _table({"+33", "+44"})
    assert one.pivot.stop == 3
    assert one.find("+336")[0] == "+33"  # type: ignore[index]
    assert one.find("+3") is None


def test_route_view_keeps_the_tariff_terms() -> None:
    rows = (RateRow("+44", "UK", "premium", D("0.0065")),)
    package = Package("p", "t", markup_fixed=D("0.0025"), markup_percent=D(20))
    route = compile_package(package, row_terms(RateTable("t", rows)), frozenset({"premium"})).match("+4420")
    assert route is not None
    assert (route.prefix, route.destination, route.category) == ("+44", "UK", "premium")
    assert route.pricing is Pricing.MARKUP
    assert route.cost_rate == rate_units(D("0.0065"))
    assert route.sell_rate == marked_up_rate_units(D("0.0065"), D("0.0025"), D(20))
    assert route.premium and route.out_of_plan
