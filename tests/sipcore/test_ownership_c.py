"""The C owner reader (sipcore/_ownership_c.c `owner`) against `ownership.owner_py`, its reference.

Contract: for any bytes and any number of workers, `_c_owner(data, workers)` returns exactly the
index `owner_py(data, workers)` returns, or -1 (the Python code decides, including "no key"). Checked
on everyday messages, which the C code must decide itself (Call-IDs of every length around the hash's
16- and 32-byte edges, REGISTERs by their To user), on the spellings it must pass on, on messages
built from pieces with the characters that make the scan's edges, on random mutations of everyday
messages and on random bytes.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipcore import ownership
from sipcore.ownership import owner_of, owner_py
from tests.extensions import require_extension

require_extension(ownership._c_owner, "sipcore._ownership_c")
c_owner = ownership._c_owner


def agrees(data: bytes, workers: int) -> bool:
    """Assert the contract; True when the C reader decided."""
    slot = c_owner(data, workers)
    assert slot == -1 or slot == owner_py(data, workers), (data, workers, slot)
    assert owner_of(data, workers) == owner_py(data, workers)
    return slot != -1


def invite(call_id: str, *, to: str = "<sip:1002@example.com>", end: str = "\r\n") -> bytes:
    lines = [
        "INVITE sip:1002@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:45061;branch=z9hG4bK-1-1",
        "Max-Forwards: 70",
        "From: <sip:1001@example.com>;tag=12140SIPpTag001",
        f"To: {to}",
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
        "Contact: <sip:1001@127.0.0.1:45061>",
        "Content-Length: 0",
    ]
    return (end.join(lines) + end + end).encode("utf-8", "surrogateescape")


def register(to: str, call_id: str = "7-12140@127.0.0.1") -> bytes:
    return (
        "REGISTER sip:example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:45061;branch=z9hG4bK-7-1\r\n"
        "From: <sip:u10007@example.com>;tag=12140SIPpTag07\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 2 REGISTER\r\n"
        'Authorization: Digest username="u10007", realm="example.com", nonce="n", uri="sip:example.com", '
        'response="0123456789abcdef0123456789abcdef"\r\n'
        "Content-Length: 0\r\n\r\n"
    ).encode()


RESPONSE = (
    b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKab12\r\n"
    b"From: <sip:1001@example.com>;tag=a\r\nTo: <sip:1002@example.com>;tag=b\r\n"
    b"Call-ID: 1-12140@127.0.0.1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)


@pytest.mark.parametrize("length", range(1, 65))
@pytest.mark.parametrize("workers", [2, 3, 4, 7])
def test_everyday_call_ids_of_every_length_are_decided_in_c(length: int, workers: int) -> None:
    for seed in range(8):
        rng = random.Random(length * 100 + seed)
        call_id = "".join(rng.choice("abcdef0123456789-@.") for _ in range(length))
        assert agrees(invite(call_id), workers)


@pytest.mark.parametrize(
    "data",
    [
        invite("1-12140@127.0.0.1"),
        invite("a84b4c76e66710@pc33.atlanta.example.com"),
        invite("  spaced-around@host  "),
        invite("one space@host"),
        invite("lf-only-call-id-0123456789@host", end="\n"),
        RESPONSE,
        b"ACK sip:1002@127.0.0.1:45090 SIP/2.0\r\nCall-ID: x\r\n\r\n",
    ],
)
def test_everyday_messages_are_decided_in_c(data: bytes) -> None:
    assert agrees(data, 2)


@pytest.mark.parametrize(
    "to",
    [
        "<sip:1001@example.com>",
        "<sip:u10007@127.0.0.1:5060>",
        "sip:1001@example.com;tag=abc",
        "<sips:+4930123456@example.com;user=phone>",
        "Alice <sip:alice@example.com>",
        "<sip:@example.com>",  # an empty user: crc32 of nothing
        "<sip:1001@example.com",  # no ">": up to the end, as Python reads it
        "<1001@example.com>",  # no scheme
    ],
)
def test_everyday_registers_are_decided_in_c_by_their_to_user(to: str) -> None:
    for workers in (2, 3, 5):
        assert agrees(register(to), workers)
    assert c_owner(register(to, "a"), 4) == c_owner(register(to, "b" * 40), 4)  # not the Call-ID


@pytest.mark.parametrize(
    "data",
    [
        invite("x", to="<sip:b@h>").replace(b"Call-ID:", b"i:"),  # compact form
        invite("x").replace(b"Call-ID:", b"call-id:"),  # another case
        invite("x").replace(b"Call-ID: x", b"Call-ID:\r\n x"),  # folded
        invite("abc-0123456789abcdef\r\n def@h"),  # folded after a value: one value of two lines
        b"INVITE sip:a@h SIP/2.0\nVia: v\n\nCall-ID: in-the-body-0123456789@h\n",  # LF-only section
        invite("two  spaces@host"),
        invite("tab\there@host"),
        invite("").replace(b"Call-ID: ", b"Call-ID:"),  # empty
        invite("x").replace(b"Call-ID: x\r\n", b""),  # none
        register('"Alice" <sip:1001@example.com>'),  # quoted display name
        register("<sip:%31001@example.com>"),  # percent-decoded by Python
        register("<sip:example.com>"),  # no user part
        register("sip:1001;x=a@b"),  # addr-spec: the "@" of a parameter is not the user's
        register("<sip:example.com>;x=a@b"),  # nor past the ">"
        register("<sip:1@h>").replace(b"To:", b"t:"),
        b"",
        b"REGISTER ",
        b"\r\n\r\nCall-ID: after-the-header-section@h\r\n",
    ],
)
def test_other_spellings_are_passed_on(data: bytes) -> None:
    assert c_owner(data, 2) == -1
    agrees(data, 2)


def test_one_worker_or_too_many_are_passed_on() -> None:
    data = invite("1-12140@127.0.0.1")
    assert c_owner(data, 1) == -1
    assert c_owner(data, 0) == -1
    assert c_owner(data, 70_000) == -1
    assert owner_of(data, 1) == 0


def test_wrong_types_raise_type_error() -> None:
    with pytest.raises(TypeError):
        c_owner(bytearray(b"x"), 2)
    with pytest.raises(TypeError):
        c_owner(b"x", 2.0)
    with pytest.raises(TypeError):
        c_owner(b"x")
    data = invite("1-12140@127.0.0.1")
    assert owner_of(bytearray(data), 2) == owner_py(data, 2)  # not bytes: the Python scan, same owner


_EDGE = ["\r\n", "\n", "\r", " ", "  ", "\t", ":", "<", ">", "@", "%", '"', ";", "\x00", "\x0b", "\xff", "é"]
_PIECE = st.one_of(
    st.sampled_from(_EDGE),
    st.text(alphabet="abcXYZ019-.@", min_size=0, max_size=40),
    st.sampled_from(
        ["\r\nCall-ID:", "\nCall-ID:", "\r\nTo:", "\nTo:", "\r\ni:", "\r\nt:", "sip:", "\r\n\r\n"]
    ),
)


@given(
    start=st.sampled_from(["REGISTER sip:h SIP/2.0", "INVITE sip:a@h SIP/2.0", "SIP/2.0 200 OK", "BYE x y"]),
    pieces=st.lists(_PIECE, max_size=24),
    workers=st.integers(2, 9),
)
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_messages_built_from_edge_pieces_agree(start: str, pieces: list[str], workers: int) -> None:
    agrees((start + "".join(pieces)).encode("utf-8", "surrogateescape"), workers)


@given(data=st.binary(max_size=300), workers=st.integers(2, 9))
@settings(max_examples=800, deadline=None)
def test_random_bytes_agree(data: bytes, workers: int) -> None:
    agrees(data, workers)
    agrees(b"REGISTER " + data, workers)


@given(seed=st.integers(0, 2**32 - 1), edits=st.integers(1, 4), workers=st.integers(2, 5))
@settings(max_examples=1500, deadline=None)
def test_mutations_of_everyday_messages_agree(seed: int, edits: int, workers: int) -> None:
    rng = random.Random(seed)
    data = bytearray(rng.choice([invite("1-12140@127.0.0.1"), register("<sip:1001@example.com>"), RESPONSE]))
    for _ in range(edits):
        at = rng.randrange(len(data) + 1)
        byte = rng.choice(b'\r\n \t:<>@%";ai\x00\xff') if rng.random() < 0.8 else rng.randrange(256)
        kind = rng.randrange(3)
        if kind == 0:
            data.insert(at, byte)
        elif kind == 1 and at < len(data):
            data[at] = byte
        elif at < len(data):
            del data[at]
    agrees(bytes(data), workers)
