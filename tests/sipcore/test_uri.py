"""URIs: RFC 3261 §19.1 parsing, comparison, byte-exact round trip."""

from __future__ import annotations

import pytest

from sipcore.errors import SipParseError
from sipcore.uri import AbsoluteUri, SipUri, TelUri, parse_uri


def test_full_sip_uri() -> None:
    u = parse_uri("sips:alice:secret@Atlanta.example.com:5061;transport=tcp;lr?subject=x%20y")
    assert isinstance(u, SipUri)
    assert (u.scheme, u.user, u.password, u.host, u.port) == (
        "sips",
        "alice",
        "secret",
        "Atlanta.example.com",
        5061,
    )
    assert u.transport == "tcp" and u.lr
    assert u.headers == "subject=x%20y"
    assert str(u) == "sips:alice:secret@Atlanta.example.com:5061;transport=tcp;lr?subject=x%20y"


def test_user_part_may_hold_question_mark_and_semicolon() -> None:
    u = parse_uri("sip:user;par=u%40example.net@example.com")
    assert isinstance(u, SipUri) and u.user == "user;par=u%40example.net" and u.params == []


def test_comparison_rules() -> None:
    assert parse_uri("sip:%61lice@ATLANTA.example.com;transport=TCP") == parse_uri(
        "sip:alice@atlanta.example.com;transport=tcp"
    )
    assert parse_uri("sip:alice@a.example") != parse_uri("sip:ALICE@a.example")
    assert parse_uri("sip:a@b.example;transport=tcp") != parse_uri("sip:a@b.example")
    assert parse_uri("sip:a@b.example:5060") != parse_uri("sip:a@b.example")


def test_tel_and_other_schemes() -> None:
    t = parse_uri("tel:+33612345678;phone-context=example.com")
    assert isinstance(t, TelUri) and t.number == "+33612345678"
    assert isinstance(parse_uri("urn:service:sos"), AbsoluteUri)


@pytest.mark.parametrize(
    "bad",
    ["sip:user@2001:db8::10", "sip:a@b:99999", "sip:a@[::1", "sip:a b@c", "nocolon", "sip:@h", "sip:a@b;=x"],
)
def test_invalid(bad: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(bad)


def test_aor_is_canonical() -> None:
    u = parse_uri("sip:%31001@PBX.Example.com:5060;transport=udp")
    assert isinstance(u, SipUri) and u.aor() == "sip:1001@pbx.example.com"
