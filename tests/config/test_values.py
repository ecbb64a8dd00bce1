"""Scalar parsers: addresses, exact money, pulses, durations, numbers and DID destinations."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.values import (
    Destination,
    HostPort,
    Pulse,
    parse_destination,
    parse_dial_or_uri,
    parse_duration,
    parse_e164,
    parse_extension,
    parse_host_port,
    parse_money,
    parse_prefix,
    parse_pulse,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:5060", HostPort("0.0.0.0", 5060)),
        ("[::]:5060", HostPort("::", 5060)),
        ("[2001:db8::1]:5070", HostPort("2001:db8::1", 5070)),
        ("sip.example.net:5090", HostPort("sip.example.net", 5090)),
    ],
)
def test_host_port(text: str, expected: HostPort) -> None:
    assert parse_host_port(text) == expected


def test_ipv6_host_port_prints_with_brackets() -> None:
    assert str(HostPort("::", 5060)) == "[::]:5060"
    assert str(HostPort("10.0.0.1", 5060)) == "10.0.0.1:5060"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0.0.0.0", "needs a port"),
        ("0.0.0.0:0", "port must be 1-65535"),
        ("0.0.0.0:65536", "port must be 1-65535"),
        ("::1:5060", "IPv6 addresses need brackets"),
        ("[10.0.0.1]:5060", "only IPv6"),
        ("[::1", "unclosed"),
        ("bad_host!:5060", "neither an IP address nor a host name"),
    ],
)
def test_bad_host_port(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_host_port(text)


def test_listen_addresses_must_be_ip_and_sip_addresses_default_the_port() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        parse_host_port("example.net:5060", require_ip=True)
    assert parse_host_port("carrier.example.net", default_port=5060) == HostPort("carrier.example.net", 5060)


def test_money_is_exact_decimal_from_text() -> None:
    assert parse_money("0.1") == Decimal("0.1")
    assert str(parse_money("0.1")) == "0.1"
    assert parse_money("0.0138") + parse_money("0.0002") == Decimal("0.0140")
    assert parse_money(3) == Decimal(3)
    assert parse_money("-5.00") == Decimal("-5.00")


@pytest.mark.parametrize("text", ["abc", "NaN", "Infinity", "", "1,5"])
def test_bad_money(text: str) -> None:
    with pytest.raises(ValueError):
        parse_money(text)


def test_money_refuses_floats_so_no_binary_rounding_can_sneak_in() -> None:
    with pytest.raises(ValueError, match="expected an amount"):
        parse_money(0.1)


def test_pulse() -> None:
    assert parse_pulse("60") == Pulse(60, 60)
    assert parse_pulse("1") == Pulse(1, 1)
    assert parse_pulse("30/6") == Pulse(30, 6)
    assert str(Pulse(30, 6)) == "30/6"
    assert str(Pulse(60, 60)) == "60"
    for bad in ("0", "30/0", "a/6", "1/2/3", "-6"):
        with pytest.raises(ValueError):
            parse_pulse(bad)


def test_duration_units() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("90s") == 90
    assert parse_duration("5m") == 300
    assert parse_duration("4h") == 14400
    assert parse_duration("1d") == 86400
    with pytest.raises(ValueError):
        parse_duration("5 minutes")


def test_numbers() -> None:
    assert parse_e164("+33184000001") == "+33184000001"
    for bad in ("33184000001", "+0123456", "+33 1 84", "+1234"):
        with pytest.raises(ValueError):
            parse_e164(bad)
    assert parse_extension("0123") == "0123"  # leading zero kept: YAML never made it octal
    with pytest.raises(ValueError):
        parse_extension("1")
    assert parse_prefix("336") == "+336"
    assert parse_prefix("+336") == "+336"
    with pytest.raises(ValueError):
        parse_prefix("33x")


def test_destinations() -> None:
    assert parse_destination("1001") == Destination("account", "1001")
    assert parse_destination("account:1001") == Destination("account", "1001")
    assert parse_destination("group:sales") == Destination("group", "sales")
    assert parse_destination("voicemail:1001") == Destination("voicemail", "1001")
    assert parse_destination("hangup") == Destination("hangup")
    assert parse_destination("conference") == Destination("conference")
    for bad in ("fax:1", "nowhere", "voicemail:x"):
        with pytest.raises(ValueError):
            parse_destination(bad)


def test_support_destination_takes_numbers_or_sip_uris() -> None:
    assert parse_dial_or_uri("sip:support@example.net") == "sip:support@example.net"
    assert parse_dial_or_uri("01 84 00 00 01") == "0184000001"
    with pytest.raises(ValueError):
        parse_dial_or_uri("support")


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_any_written_decimal_is_read_back_exactly(value: Decimal) -> None:
    parsed = parse_money(str(value))
    assert parsed == value
    assert parsed.as_tuple() == value.as_tuple()  # same digits and exponent: nothing was rounded
