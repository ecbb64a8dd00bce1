"""CdrRecord validation, money rounding edges and the spool wire format."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdr.money import from_micros, to_micros, to_money
from cdr.record import CdrRecord, Direction, Disposition, record_from_wire, record_to_wire
from tests.cdr.factory import make_record


@pytest.mark.parametrize(
    ("given_", "expected"),
    [
        ("0.0000005", "0.000001"),  # half rounds up
        ("0.00000049", "0.000000"),
        ("-0.0000005", "-0.000001"),  # half-up is away from zero
        ("0.01518", "0.015180"),
        ("0.0138", "0.013800"),
        (7, "7.000000"),
    ],
)
def test_money_rounds_half_up_to_six_decimals(given_: str | int, expected: str) -> None:
    assert str(to_money(Decimal(given_) if isinstance(given_, str) else given_)) == expected


def test_money_refuses_float_nan_and_overflow() -> None:
    with pytest.raises(TypeError):
        to_money(0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        to_money(Decimal("NaN"))
    with pytest.raises(ValueError):
        to_money(Decimal("1000000000000"))  # 13 integer digits do not fit NUMERIC(18,6)
    assert to_money(Decimal("999999999999.999999")) == Decimal("999999999999.999999")


@given(st.integers(min_value=-(10**18) + 1, max_value=10**18 - 1))
def test_micros_round_trip_is_exact(micros: int) -> None:
    assert to_micros(from_micros(micros)) == micros


def test_margin_is_computed_and_checked() -> None:
    r = make_record(1, cost=Decimal("0.0135"), price=Decimal("0.0207"))
    assert r.margin == Decimal("0.007200")
    with pytest.raises(ValueError, match="margin"):
        make_record(1, cost=Decimal("1"), price=Decimal("2"), margin=Decimal("0.5"))


def test_times_must_be_aware_and_are_kept_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    r = make_record(1, start=datetime(2026, 1, 1, 10, 0, tzinfo=paris))
    assert r.start.utcoffset() == timedelta(0) and r.start.hour == 9
    with pytest.raises(ValueError, match="timezone-aware"):
        make_record(1, start=datetime(2026, 1, 1, 10, 0))


def test_end_before_start_and_negative_seconds_are_refused() -> None:
    r = make_record(3)
    with pytest.raises(ValueError, match="before start"):
        make_record(3, end=r.start - timedelta(seconds=1))
    with pytest.raises(ValueError):
        make_record(3, billed_seconds=-1)


def test_enums_accept_their_values_and_key_is_call_id_and_leg() -> None:
    r = make_record(4, direction="forwarded", disposition="busy", leg=2)
    assert r.direction is Direction.FORWARDED and r.disposition is Disposition.BUSY
    assert r.key == ("call-4@sip.example", 2)
    with pytest.raises(ValueError):
        make_record(4, disposition="hung")


@pytest.mark.parametrize("i", [0, 1, 2, 5, 17])
def test_wire_round_trip_is_lossless(i: int) -> None:
    r = make_record(i, cost=Decimal("0.123456"), price=Decimal("-0.5"), prefix=None, account_id=None)
    back = record_from_wire(msgpack.unpackb(msgpack.packb(record_to_wire(r))))
    assert back == r
    assert isinstance(back, CdrRecord) and back.cost == Decimal("0.123456")


def test_unknown_wire_version_is_refused() -> None:
    w = record_to_wire(make_record(1))
    w[0] = 99
    with pytest.raises(ValueError, match="version"):
        record_from_wire(w)


def test_a_version_1_wire_list_from_an_older_spool_is_still_read() -> None:
    r = make_record(3)
    old = record_to_wire(r)[:-1]  # version 1 had no hangup_by
    old[0] = 1
    assert record_from_wire(old) == r
    assert record_from_wire(record_to_wire(replace(r, hangup_by="callee"))).hangup_by == "callee"
