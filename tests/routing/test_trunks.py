"""Which trunks an outside call tries (priority, weight, trunks down) and the number formats carriers
want (routing.trunks)."""

from __future__ import annotations

from collections import Counter
from itertools import cycle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing import TrunkChoice, format_number, order_trunks

A, B, C = TrunkChoice("a", 1, 1), TrunkChoice("b", 2, 1), TrunkChoice("c", 3, 1)


def _draws(*values: float):  # type: ignore[no-untyped-def]
    it = cycle(values)
    return lambda: next(it)


def test_lowest_priority_first_then_the_rest_in_order() -> None:
    assert order_trunks([C, A, B], {"a", "b", "c"}, _draws(0.0)) == ("a", "b", "c")


def test_a_trunk_down_is_skipped_while_another_is_up() -> None:
    assert order_trunks([A, B, C], {"b", "c"}, _draws(0.0)) == ("b", "c")


def test_every_trunk_down_tries_them_all_in_order() -> None:
    assert order_trunks([B, A], set(), _draws(0.0)) == ("a", "b")


def test_weights_share_calls_among_equal_priorities() -> None:
    light, heavy = TrunkChoice("light", 1, 1), TrunkChoice("heavy", 1, 3)
    # draw x total 4: below 1 picks light, above picks heavy; the other follows as the failover
    assert order_trunks([light, heavy], {"light", "heavy"}, _draws(0.2)) == ("light", "heavy")
    assert order_trunks([light, heavy], {"light", "heavy"}, _draws(0.3)) == ("heavy", "light")
    firsts = Counter(
        order_trunks([light, heavy], {"light", "heavy"}, _draws(i / 1000))[0] for i in range(1000)
    )
    assert firsts == {"light": 250, "heavy": 750}


@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 5)), min_size=1, max_size=6),
    st.sets(st.integers(0, 5)),
    st.floats(0, 0.999),
)
def test_order_is_a_permutation_of_the_live_trunks_by_priority(
    spec: list[tuple[int, int]], up_idx: set[int], draw: float
) -> None:
    choices = [TrunkChoice(f"t{i}", p, w) for i, (p, w) in enumerate(spec)]
    up = {f"t{i}" for i in up_idx}
    order = order_trunks(choices, up, lambda: draw)
    live = [c for c in choices if c.trunk in up] or choices
    assert sorted(order) == sorted(c.trunk for c in live)
    priority = {c.trunk: c.priority for c in choices}
    assert [priority[t] for t in order] == sorted(priority[t] for t in order)


@pytest.mark.parametrize(
    ("fmt", "number", "expected"),
    [
        ("e164", "+33612345678", "+33612345678"),
        ("e164_no_plus", "+33612345678", "33612345678"),
        ("international_00", "+33612345678", "0033612345678"),
        ("national", "+33612345678", "0612345678"),
        ("national", "+442079460000", "00442079460000"),  # another country: international form
        ("national", "2222", "2222"),  # not E.164: unchanged
    ],
)
def test_number_formats(fmt: str, number: str, expected: str) -> None:
    assert format_number(number, fmt, 33) == expected
