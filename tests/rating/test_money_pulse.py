"""Money units, the one half-up rounding, the markup formula and pulse arithmetic at their edges."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from rating.money import (
    MoneyError,
    amount_micros,
    from_micros,
    marked_up_rate_units,
    parse_decimal,
    rate_units,
    rate_units_to_decimal,
    to_micros,
)
from rating.pulse import billed_seconds, free_minutes_needed, split_free


def test_markup_formula_domain_vector() -> None:
    # (0.009 + 0.0025) x 1.20 = 0.0138 per minute, exactly
    assert rate_units_to_decimal(marked_up_rate_units(D("0.009"), D("0.0025"), D(20))) == D("0.0138")


def test_markup_keeps_all_digits_of_the_rate() -> None:
    # 0.009123 x 1.175 = 0.010719525: more than 6 decimals per minute, never rounded itself
    assert rate_units_to_decimal(marked_up_rate_units(D("0.009123"), D(0), D("17.5"))) == D("0.010719525")


@pytest.mark.parametrize(
    ("per_minute", "seconds", "micros"),
    [
        ("0.0138", 120, 27600),
        ("0.0138", 66, 15180),
        ("0.0138", 61, 14030),
        ("0.000001", 30, 1),  # 0.0000005 -> half-up to 0.000001
        ("0.000001", 29, 0),  # 0.00000048333 -> 0
        ("0.000003", 10, 1),  # 0.0000005 exactly -> up
        ("0.00000299", 10, 0),  # 0.000000498333 -> down
        ("1", 0, 0),
    ],
)
def test_amount_rounds_once_half_up(per_minute: str, seconds: int, micros: int) -> None:
    assert amount_micros(rate_units(D(per_minute)), seconds) == micros


def test_to_micros_is_exact_or_fails() -> None:
    assert to_micros(D("12.345678")) == 12_345_678
    assert from_micros(-1_500_000) == D("-1.500000")
    with pytest.raises(MoneyError):
        to_micros(D("0.0000001"))
    with pytest.raises(MoneyError):
        rate_units(D("0.0000000001"))  # 10 decimals per minute


def test_parse_decimal_accepts_comma_and_refuses_junk() -> None:
    assert parse_decimal("0,0138") == D("0.0138")
    for bad in ("abc", "NaN", "inf", ""):
        with pytest.raises(MoneyError):
            parse_decimal(bad)


@pytest.mark.parametrize(
    ("duration", "initial", "subsequent", "billed"),
    [
        (0, 60, 60, 0),
        (1, 60, 60, 60),
        (60, 60, 60, 60),  # exactly on the boundary
        (61, 60, 60, 120),  # one second over
        (61, 6, 6, 66),
        (61, 1, 1, 61),
        (30, 30, 6, 30),
        (31, 30, 6, 36),
        (36, 30, 6, 36),
        (37, 30, 6, 42),
        (5, 30, 6, 30),
    ],
)
def test_billed_seconds(duration: int, initial: int, subsequent: int, billed: int) -> None:
    assert billed_seconds(duration, initial, subsequent) == billed


def test_free_minutes_round_up_and_split() -> None:
    assert free_minutes_needed(191) == 4  # 3 min 11 s
    assert free_minutes_needed(180) == 3
    assert free_minutes_needed(0) == 0
    assert split_free(191, 2) == (2, 71)  # DOMAIN: last 2 minutes, 71 s billed
    assert split_free(191, 4) == (4, 0)
    assert split_free(191, 0) == (0, 191)
