"""The C header splitter (sipcore/_message_c.c) against `message.split_fields`, its reference.

Contract: for any header section, `_message_c.split(head, message._NAME_KEYS)` returns exactly the
(start line, fields, index) `split_fields` returns, or None (the Python code decides, and words any
refusal); where `split_fields` raises, the C code returns None. Checked on sections built from
everyday headers and from the characters that make line ends, folding and names hard, on random
mutations of the seed messages (RFC 4475 / RFC 5118 torture messages, the benchmark's messages),
and the everyday sections must be split by the C code itself.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.seeds import messages
from fuzz.target_parser import split_agrees
from sipcore import message
from sipcore.errors import SipParseError
from tests.extensions import require_extension

require_extension(message._c_split, "sipcore._message_c")

c_split = message._c_split


def agree(head: bytes) -> bool:
    """Assert the contract for ``head`` (fuzz/target_parser.py's check of it); True when the C
    splitter took it."""
    return split_agrees(head)


def heads() -> list[bytes]:
    """The header sections of the seed messages, as `parse` hands them over."""
    out = []
    for data in messages():
        data = data.lstrip(b"\r\n") if data.startswith(b"\r\n") else data
        try:
            out.append(message.split_head(data)[0])
        except SipParseError:
            continue
    return out


NAMES = ["Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Contact", "m", "Max-Forwards",
         "Content-Length", "l", "Route", "Record-Route", "X-Custom", "via", "VIA", "Via ", "Via\t",
         "Call-Id", "k"]  # fmt: skip
BAD_NAMES = ["Bad Name", "Bad@Name", "", "é", "Ünicode", " Via", "\tVia"]
VALUES = ["SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1", "<sip:a@b>;tag=1", "1 INVITE", "70", "0",
          "", " ", "  padded\t", "\t", "a:b:c", '"quoted, name" <sip:x@y>', "x\ty", "a  b "]  # fmt: skip
BAD_VALUES = ["é", "\x7f", "\x00", "\x0b", "\x1c", "\xa0", "a\rb", "a\nb", "a\r", "\n"]
BAD_ENDS = ["\r", "\r\n ", "\r\n\t", "\n ", "\r\r\n", "\n\r", "\r\n\r\n"]


@st.composite
def sections(draw: st.DrawFn) -> bytes:
    """Mostly well-formed sections (CRLF or bare-LF line ends), each with a chance of one oddity."""
    odd = draw(st.booleans())  # half the sections may carry odd pieces, a few each
    end = draw(st.sampled_from(["\r\n", "\r\n", "\n"]))

    def pick(good: list[str], bad: list[str]) -> str:
        return draw(st.sampled_from(bad if odd and draw(st.integers(0, 5)) == 0 else good))

    out = draw(st.sampled_from(["INVITE sip:b@h SIP/2.0", "SIP/2.0 200 OK", "", "x", "é"]))
    for _ in range(draw(st.integers(0, 8))):
        sep = pick([":", ": ", " : ", ":\t", "::"], [""])
        value = pick(VALUES, BAD_VALUES) if not odd or draw(st.booleans()) else draw(st.text(max_size=12))
        out += pick([end], BAD_ENDS) + pick(NAMES, BAD_NAMES) + sep + value
    if draw(st.booleans()):
        out += pick([end], BAD_ENDS)
    return out.encode("utf-8", "surrogatepass")


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(head=sections())
def test_the_c_splitter_agrees_with_the_reference(head: bytes) -> None:
    agree(head)
    agree(head)  # now every valid name is memoised: the C code decides more


@settings(max_examples=300, deadline=None)
@given(head=st.binary(max_size=200))
def test_any_bytes(head: bytes) -> None:
    agree(head)
    agree(head)


def test_mutations_of_the_seed_messages() -> None:
    """Random byte edits of every seed section (the characters that change the split), 20 each."""
    rng = random.Random(4475)
    edits = [b" ", b"\t", b":", b"\r\n", b"\n", b"\r", b"\r\n ", b"\x00", b"\x7f", b"\xc3\xa9", b"a", b""]
    taken = 0
    for head in heads():
        agree(head)
        for _ in range(20):
            i = rng.randrange(len(head) + 1)
            j = min(len(head), i + rng.randrange(3))
            taken += agree(head[:i] + rng.choice(edits) + head[j:])
    assert taken > 100  # the mutations that keep the everyday shape were decided in C


@pytest.mark.parametrize("index", range(len(heads())))
def test_the_seed_sections(index: int) -> None:
    agree(heads()[index])


def test_everyday_messages_are_split_in_c() -> None:
    from benchmarks.samples import INVITE, REGISTER

    for data in (INVITE, REGISTER):
        head = message.split_head(data)[0]
        message.split_fields(head)  # the names are memoised, as after the first message of a phone
        assert agree(head), data
    lf = b"OPTIONS sip:h SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK2\nCall-ID: x\n\nCSeq: 1 OPTIONS"
    assert agree(lf)  # bare LF line ends, and the empty line the reference skips too
    assert c_split(lf, message._NAME_KEYS)[1][-1] == ["cseq", "CSeq", "1 OPTIONS"]


def test_what_is_passed_on() -> None:
    """Folding, a line without a colon, an unknown name, UTF-8 and controls go to the reference."""
    base = "INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK3\r\n"
    message.split_fields(base.encode())
    for tail in ["Subject: a\r\n b", "Subject a", f"X-Unseen-{random.getrandbits(64):x}: 1", "Subject: é", "Subject: \x00",
                 "Subject: a\rb", "Subject: a\nb"]:  # fmt: skip
        assert c_split((base + tail).encode(), message._NAME_KEYS) is None, tail
    assert c_split(b"\nVia: x", message._NAME_KEYS) is not None  # an empty start line is the reference's too
