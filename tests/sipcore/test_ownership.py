"""Which worker owns a message: the Call-ID (or, for REGISTER, the To user) found by a bytes scan that
must give the same key for every spelling a peer may use, and never raise."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipcore.message import parse
from sipcore.ownership import call_id_of, conn_prefix, owner_of, owner_of_call_id, to_user_of, worker_of_conn


def message(start: str, *headers: str, body: str = "") -> bytes:
    return (start + "\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n" + body).encode()


INVITE = "INVITE sip:1002@example.com SIP/2.0"
REGISTER = "REGISTER sip:example.com SIP/2.0"


@pytest.mark.parametrize(
    "header",
    [
        "Call-ID: abc-123@host",
        "call-id: abc-123@host",
        "CALL-ID:abc-123@host",
        "i: abc-123@host",
        "I:abc-123@host",
        "Call-ID :  abc-123@host  ",
        "Call-ID:\tabc-123@host",
        "Call-ID:\r\n abc-123@host",  # folded onto the next line
        "i:\r\n\tabc-123@host",
    ],
)
def test_call_id_spellings_give_one_key(header: str) -> None:
    data = message(INVITE, "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1", header, "CSeq: 1 INVITE")
    assert call_id_of(data) == b"abc-123@host"


def test_bare_lf_line_endings() -> None:
    data = b"INVITE sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\ni: lf-only@h\n\n"
    assert call_id_of(data) == b"lf-only@h"


def test_call_id_value_is_case_sensitive() -> None:
    assert call_id_of(message(INVITE, "Call-ID: AbC@h")) == b"AbC@h"


def test_headers_that_only_start_like_call_id_do_not_count() -> None:
    data = message(INVITE, "If-Match: x", "Info: y", "X-Call-ID: decoy", "Call-ID: real@h")
    assert call_id_of(data) == b"real@h"


def test_folded_line_of_another_header_is_not_a_header() -> None:
    data = message(INVITE, "Subject: hello", " i: decoy", "Call-ID: real@h")
    assert call_id_of(data) == b"real@h"


def test_missing_or_empty_call_id() -> None:
    assert call_id_of(message(INVITE, "Via: SIP/2.0/UDP h;branch=z9hG4bK1")) is None
    assert call_id_of(message(INVITE, "Call-ID:   ")) is None
    assert owner_of(message(INVITE, "To: <sip:b@h>"), 4) is None  # handled where read: its 400 there


def test_a_call_id_in_the_body_is_not_the_header() -> None:
    data = message(INVITE, "Content-Type: message/sipfrag", body="Call-ID: inner@h\r\n")
    assert call_id_of(data) is None
    data = message(INVITE, "i: outer@h", body="Call-ID: inner@h\r\n")
    assert call_id_of(data) == b"outer@h"


@pytest.mark.parametrize(
    ("header", "user"),
    [
        ("To: <sip:1001@example.com>", b"1001"),
        ("t: <sip:1001@example.com>;tag=x", b"1001"),
        ('To: "Alice <boss>" <sip:1001@example.com:5060;transport=udp>', b"1001"),
        ("To: sip:1001@example.com;tag=abc", b"1001"),
        ("TO :\r\n <sips:1001@example.com>", b"1001"),
        ("To: <sip:%31%30%30%31@example.com>", b"1001"),  # percent-decoded, as the registrar compares
        ('To: "a \\" <b@c>" <sip:1001@example.com>', b"1001"),  # escaped quote in the name
        ("To: <sip:example.com>", b"sip:example.com"),  # no user part: the whole URI
    ],
)
def test_register_to_user(header: str, user: bytes) -> None:
    assert to_user_of(message(REGISTER, header, "Call-ID: c@h")) == user


def test_register_is_owned_by_its_to_user_whatever_the_call_id() -> None:
    owners = {
        owner_of(message(REGISTER, "To: <sip:1001@example.com>", f"Call-ID: {n}@h"), 8) for n in range(50)
    }
    assert owners == {zlib.crc32(b"1001") % 8}


def test_other_messages_are_owned_by_call_id() -> None:
    for n in range(50):
        cid = f"call-{n}@h"
        req = message(INVITE, "To: <sip:1001@example.com>", f"Call-ID: {cid}")
        resp = message("SIP/2.0 200 OK", "To: <sip:1001@example.com>;tag=1", f"i: {cid}", "CSeq: 1 REGISTER")
        assert owner_of(req, 3) == owner_of(resp, 3) == zlib.crc32(cid.encode()) % 3


def test_register_without_to_falls_back_to_the_call_id() -> None:
    assert owner_of(message(REGISTER, "Call-ID: abc@h"), 5) == zlib.crc32(b"abc@h") % 5


def test_one_worker_owns_everything() -> None:
    assert owner_of(b"garbage", 1) == 0


@pytest.mark.parametrize("data", [b"", b"\r\n\r\n", b"\x00\xff" * 100, b"REGISTER ", b"Call-ID:", b"i:\r\n"])
def test_garbage_never_raises(data: bytes) -> None:
    assert owner_of(data, 2) in (None, 0, 1)


def test_connection_ids_carry_the_worker() -> None:
    assert worker_of_conn(conn_prefix(3) + "17") == 3
    assert worker_of_conn(conn_prefix(12) + "1") == 12
    assert worker_of_conn("tcp-5") is None  # a single-process id
    assert worker_of_conn(None) is None
    assert worker_of_conn("wx-tcp-1") is None


@given(
    value=st.binary(min_size=1, max_size=60).filter(
        lambda b: all(c > 0x20 and c != 0x7F for c in b) and b"," not in b
    ),
    workers=st.integers(2, 9),
)
@settings(max_examples=400, deadline=None)
def test_the_bytes_scan_and_the_parsed_call_id_name_the_same_owner(value: bytes, workers: int) -> None:
    """The call journal and the admin API own a call by its parsed Call-ID (`owner_of_call_id`), the
    workers by the bytes (`owner_of`): the same worker for every value, long or short, UTF-8 or not."""
    data = b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: " + value + b"\r\n\r\n"
    parsed = parse(data)
    assert owner_of(data, workers) == owner_of_call_id(parsed.call_id, workers)
