"""Dialed digits → E.164 (DOMAIN.md "Calls" examples), premium detection, and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing import DialingRules, normalise
from routing.numbering import is_premium

FR = DialingRules(country_code=33, national_prefix="0", international_prefix="00")


@pytest.mark.parametrize(
    ("dialed", "expected"),
    [
        ("0612345678", "+33612345678"),
        ("0044 20 7946 0000", "+442079460000"),
        ("00442079460000", "+442079460000"),
        ("+442079460000", "+442079460000"),
        ("0033612345678", "+33612345678"),
        ("06.12.34.56.78", "+33612345678"),
        ("(01) 40-00-20-01", "+33140002001"),
    ],
)
def test_domain_examples(dialed: str, expected: str) -> None:
    assert normalise(FR, dialed) == expected


@pytest.mark.parametrize("dialed", ["", "12", "06", "+33", "0", "00", "00123", "612345678", "06123x5678"])
def test_not_a_number(dialed: str) -> None:
    assert normalise(FR, dialed) is None


def test_too_long_for_e164() -> None:
    assert normalise(FR, "+1234567890123456") is None
    assert normalise(FR, "+123456789012345") == "+123456789012345"


def test_outbound_prefix_is_stripped() -> None:
    rules = DialingRules(outbound_prefix="9")
    assert normalise(rules, "90612345678") == "+33612345678"
    assert normalise(rules, "900442079460000") == "+442079460000"
    assert normalise(rules, "9+442079460000") == "+442079460000"


def test_outbound_prefix_equal_to_national_prefix() -> None:
    """With outbound 0 and national 0, the line prefix is taken when the rest still makes a number."""
    rules = DialingRules(outbound_prefix="0")
    assert normalise(rules, "00612345678") == "+33612345678"
    assert normalise(rules, "0612345678") == "+33612345678"
    assert normalise(rules, "000442079460000") == "+442079460000"


def test_country_without_national_prefix() -> None:
    italy = DialingRules.for_region("IT")
    assert (italy.country_code, italy.national_prefix, italy.international_prefix) == (39, "", "00")
    assert normalise(italy, "0612345678") == "+390612345678"
    assert normalise(italy, "0033612345678") == "+33612345678"


def test_rules_from_region() -> None:
    assert DialingRules.for_region("fr") == FR
    with pytest.raises(ValueError, match="unknown region"):
        DialingRules.for_region("XX")


def test_premium_france_is_08() -> None:
    assert is_premium(FR, normalise(FR, "0892 68 00 00"))
    assert is_premium(FR, "+33812345678")
    assert not is_premium(FR, "+33612345678")
    assert not is_premium(FR, "+442079460000")


def test_premium_elsewhere_uses_metadata_or_configured_prefixes() -> None:
    uk = DialingRules.for_region("GB")
    assert is_premium(uk, "+449098790000")
    assert not is_premium(uk, "+442079460000")
    custom = DialingRules(country_code=49, premium_prefixes=("+49900",))
    assert is_premium(custom, "+499001234567")
    assert not is_premium(custom, "+4930123456")


national = st.from_regex(r"[1-9][0-9]{8}", fullmatch=True)


@given(national)
def test_national_and_international_forms_agree(number: str) -> None:
    e164 = "+33" + number
    assert normalise(FR, "0" + number) == e164
    assert normalise(FR, "0033" + number) == e164
    assert normalise(FR, e164) == e164


@given(st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True))
def test_e164_is_a_fixed_point(e164: str) -> None:
    assert normalise(FR, e164) == e164
    assert normalise(FR, normalise(FR, e164)) == e164


@given(st.text(alphabet="0123456789+*# .-", max_size=20))
def test_result_is_always_e164_or_none(dialed: str) -> None:
    out = normalise(FR, dialed)
    assert out is None or (out[0] == "+" and out[1:].isdigit() and 7 <= len(out) - 1 <= 15)
