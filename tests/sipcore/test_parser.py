"""Parser and serializer: RFC 3261 §7/§20/§25 behaviour on hand-written messages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.samples import INVITE, REGISTER
from sipcore.errors import SipParseError
from sipcore.message import Request, Response, error_response, parse, validate_request


def req(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


BASIC = req(
    "OPTIONS sip:pbx.example.com SIP/2.0\n"
    "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport\n"
    "Max-Forwards: 70\n"
    "From: <sip:1001@pbx.example.com>;tag=a\n"
    "To: <sip:pbx.example.com>\n"
    "Call-ID: c1\n"
    "CSeq: 1 OPTIONS\n"
    "X-Custom:   keep   this  \n"
    "Content-Length: 0\n\n"
)


def test_request_fields() -> None:
    msg = parse(INVITE)
    assert isinstance(msg, Request)
    validate_request(msg)
    assert msg.method == "INVITE"
    assert msg.ruri.user == "+33612345678"
    assert msg.top_via.branch == "z9hG4bK776asdhds"
    assert msg.top_via.param("rport") == ""
    assert msg.top_via.sent_by == ("192.168.1.20", 5060)
    assert msg.cseq == (314159, "INVITE")
    assert msg.from_tag == "1928301774"
    assert msg.from_.display == '"Alice Martin"'
    assert msg.to_tag is None
    assert msg.max_forwards == 70
    assert msg.content_type == "application/sdp"
    assert msg.body.startswith(b"v=0") and len(msg.body) == 141
    assert msg.option_tags("supported") == ["replaces", "timer"]


def test_unmodified_message_serializes_byte_exact() -> None:
    assert parse(REGISTER).serialize() == REGISTER
    assert parse(INVITE).serialize() == INVITE


def test_rebuilt_message_keeps_unknown_headers_and_order() -> None:
    msg = parse(BASIC)
    msg.headers.add("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKtop", first=True)
    msg.invalidate()
    out = msg.serialize().decode()
    lines = out.split("\r\n")
    assert lines[1] == "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKtop"
    assert lines[2].startswith("Via: SIP/2.0/UDP 10.0.0.1:5060")
    assert "X-Custom: keep   this\r\n" in out
    again = parse(out.encode())
    assert [v.branch for v in again.vias] == ["z9hG4bKtop", "z9hG4bK1"]


def test_compact_forms_and_case_insensitive_names() -> None:
    data = req(
        "MESSAGE sip:a@b.example SIP/2.0\nv: SIP/2.0/TCP h.example;branch=z9hG4bKx\n"
        "f: <sip:c@d.example>;tag=1\nt: sip:a@b.example\ni: xyz\nCSEQ: 2 MESSAGE\n"
        "c: text/plain\nl: 5\n\nhello"
    )
    msg = parse(data)
    validate_request(msg)  # type: ignore[arg-type]
    assert msg.call_id == "xyz"
    assert msg.headers.get("Call-ID") == "xyz"
    assert msg.headers.get("content-type") == "text/plain"
    assert msg.body == b"hello"


def test_line_folding_is_unfolded() -> None:
    data = req(
        "OPTIONS sip:x.example SIP/2.0\nVia: SIP/2.0/UDP h.example\n ;branch=z9hG4bKf\n"
        "From: <sip:a@x.example>\n ;tag=9\nTo: <sip:x.example>\nCall-ID: f\nCSeq: 1\n  OPTIONS\n\n"
    )
    msg = parse(data)
    validate_request(msg)  # type: ignore[arg-type]
    assert msg.top_via.branch == "z9hG4bKf"
    assert msg.from_tag == "9"
    assert msg.cseq == (1, "OPTIONS")


def test_multi_value_headers_split_outside_quotes_and_brackets() -> None:
    data = req(
        "REGISTER sip:x.example SIP/2.0\nVia: SIP/2.0/UDP h.example;branch=z9hG4bKm\n"
        "From: <sip:a@x.example>;tag=1\nTo: <sip:a@x.example>\nCall-ID: m\nCSeq: 1 REGISTER\n"
        'Contact: "Doe, John" <sip:a@10.0.0.1;x=1,2>;q=0.5, <sip:a@10.0.0.2>;expires=60\n\n'
    )
    msg = parse(data)
    contacts = msg.contacts
    assert len(contacts) == 2
    assert contacts[0].display == '"Doe, John"'
    assert contacts[0].q == 500
    assert contacts[1].expires == 60


def test_contact_star() -> None:
    data = req(
        "REGISTER sip:x.example SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bKs\nFrom: <sip:a@x>;tag=1\n"
        "To: <sip:a@x>\nCall-ID: s\nCSeq: 1 REGISTER\nContact: *\nExpires: 0\n\n"
    )
    assert parse(data).contacts[0].star


def test_ipv6_uri_and_via() -> None:
    data = req(
        "OPTIONS sip:[2001:db8::10]:5070;transport=tcp SIP/2.0\n"
        "Via: SIP/2.0/UDP [2001:db8::9:1]:5062;branch=z9hG4bK6;received=[2001:db8::9:255]\n"
        "From: <sip:a@[2001:db8::9:1]>;tag=1\nTo: <sip:b@[2001:db8::10]>\nCall-ID: v6\nCSeq: 1 OPTIONS\n\n"
    )
    msg = parse(data)
    validate_request(msg)  # type: ignore[arg-type]
    assert msg.ruri.host == "[2001:db8::10]" and msg.ruri.port == 5070
    assert msg.ruri.transport == "tcp"
    assert msg.top_via.host == "[2001:db8::9:1]" and msg.top_via.port == 5062


def test_response_parsing_and_make_response() -> None:
    msg = parse(BASIC)
    resp = msg.make_response(200, to_tag="srv")  # type: ignore[union-attr]
    assert resp.to_tag == "srv"
    assert resp.headers.get_all("via") == msg.headers.get_all("via")
    back = parse(resp.serialize())
    assert isinstance(back, Response)
    assert back.status == 200 and back.reason == "OK"
    assert back.cseq == (1, "OPTIONS")


@pytest.mark.parametrize(
    ("mutation", "status"),
    [
        (lambda t: t.replace("SIP/2.0\r\n", "SIP/3.0\r\n", 1), 505),
        (lambda t: t.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE"), 400),
        (lambda t: t.replace("CSeq: 1 OPTIONS", "CSeq: 99999999999 OPTIONS"), 400),
        (lambda t: t.replace("Call-ID: c1\r\n", ""), 400),
        (lambda t: t.replace("Max-Forwards: 70", "Max-Forwards: abc"), 400),
        (lambda t: t.replace("Content-Length: 0", "Content-Length: 10"), 400),
        (lambda t: t.replace("Content-Length: 0", "Content-Length: -1"), 400),
        (lambda t: t.replace("OPTIONS sip:pbx.example.com", "OPTIONS  sip:pbx.example.com"), 400),
        (lambda t: t.replace("X-Custom:", "Bad Header:"), 400),
        (lambda t: t.replace("From: <sip:1001@pbx.example.com>", 'From: "unterminated <sip:a@b>'), 400),
        (lambda t: t.replace("To: <sip:pbx.example.com>", "To: < sip:pbx.example.com >"), 400),
    ],
)
def test_malformed_requests_carry_their_status(mutation, status) -> None:  # type: ignore[no-untyped-def]
    data = mutation(BASIC.decode()).encode()
    with pytest.raises(SipParseError) as info:
        msg = parse(data)
        validate_request(msg)  # type: ignore[arg-type]
    assert info.value.status == status


def test_error_response_from_unparseable_bytes() -> None:
    bad = BASIC.replace(b"SIP/2.0\r\n", b"SIP/2.0 trailing\r\n", 1)
    with pytest.raises(SipParseError):
        parse(bad)
    resp = error_response(bad, 400, "malformed Request-Line", "t1")
    assert resp is not None and resp.status == 400
    assert resp.headers.get("call-id") == "c1"
    assert resp.to_tag == "t1"
    assert error_response(b"garbage\r\n\r\n", 400, "x") is None


def test_datagram_with_trailing_bytes_is_cut_at_content_length() -> None:
    msg = parse(BASIC + b"INVITE sip:x SIP/2.0\r\n\r\n")
    assert msg.body == b""


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_parser_raises_only_sip_errors_on_random_bytes(data: bytes) -> None:
    try:
        msg = parse(data)
        if isinstance(msg, Request):
            validate_request(msg)
    except SipParseError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(BASIC) - 1), st.binary(min_size=1, max_size=8))
def test_parser_survives_mutated_messages(pos: int, junk: bytes) -> None:
    data = BASIC[:pos] + junk + BASIC[pos + len(junk) :]
    try:
        msg = parse(data)
        if isinstance(msg, Request):
            validate_request(msg)
            msg.contacts, msg.expires  # noqa: B018
            msg.invalidate()
            msg.serialize()
    except SipParseError:
        pass


def test_invalidate_keeps_the_attached_transaction() -> None:
    msg = parse(BASIC)
    marker = object()
    msg._cache["txn"] = marker
    msg.top_via  # noqa: B018
    msg.invalidate()
    assert msg._cache == {"txn": marker}
    assert msg.raw is None
