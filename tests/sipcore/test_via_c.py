"""The C Via reader (sipcore/_message_c.c `via`) against `Via.parse_py`, its reference.

Contract: for any text, `_c_via(text)` returns exactly the (transport, host, port, params) that
`Via.parse_py(text)` builds, or None (the Python code decides, and words any refusal); where
`Via.parse_py` raises, the C reader returns None. Checked on the seed messages' Via values, on
Vias built from everyday pieces with the characters that make the pattern's edges (hosts ending in a
hyphen or a dot, ports of 0 to 7 digits, empty names and values, quotes, blanks, control and
non-ASCII characters), and on random mutations of everyday Vias; the everyday ones must be read by
the C code itself.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.seeds import header_values
from fuzz.target_parser import via_agrees
from sipcore import headers
from sipcore.headers import Via
from sipcore.message import split_list
from tests.extensions import require_extension

require_extension(headers._c_via, "sipcore._message_c")


def agree(text: str) -> bool:
    """Assert the contract for ``text`` (fuzz/target_parser.py's check of it); True when the C
    reader took it."""
    taken = via_agrees(text)
    if taken:
        assert Via.parse(text).raw == text
    return taken


EVERYDAY = [
    "SIP/2.0/UDP 127.0.0.1:45061;branch=z9hG4bK-c123-2",
    "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKa1b2c3;rport=45061;received=127.0.0.1",
    "SIP/2.0/TCP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
    "SIP/2.0/udp 10.0.0.1:5060;rport;branch=z9hG4bK1",
    "SIP/2.0/TLS proxy.example.com:5061;branch=z9hG4bK.x~y!z%25;alias",
    "SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKa=b=c",
    "SIP/2.0/UDP h",
    "SIP/2.0/UDP 192.0.2.1:0",
    "SIP/2.0/UDP 192.0.2.1:65535;x",
]


@pytest.mark.parametrize("text", EVERYDAY)
def test_everyday_vias_are_read_in_c(text: str) -> None:
    assert agree(text)


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP 192.0.2.1:65536",  # out of range: Python's refusal
        "SIP/2.0/UDP 192.0.2.1:123456",
        "SIP/2.0/UDP host-;branch=1",
        "SIP/2.0/UDP -host",
        "SIP/2.0/UDP host.:5060",  # a trailing dot is the pattern's
        "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1",  # IPv6: the general grammar
        "SIP/2.0/UDP  host",
        "SIP/2.0/UDP host ;branch=1",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP host;=1",
        'SIP/2.0/UDP host;branch="q"',
        "SIP/2.0/UDP host;branch=a\x1cb",
        "SIP/2.0/UDP host;branch=\xe9",
        "SIP/2.0/UDP host:",
        "SIP/2.0/UDP host;",
        "SIP/2.0 /UDP host",
        "sip/2.0/UDP host",
        "SIP/2.0/U2 host",
        "SIP/2.0/UDP",
        "",
    ],
)
def test_edges_agree(text: str) -> None:
    agree(text)


def test_the_seed_messages_vias_agree() -> None:
    taken = 0
    for value in header_values((b"via", b"v")):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            continue
        for part in split_list(text):
            taken += agree(part.strip())
    assert taken > 20


PIECES = ["SIP/2.0/", "UDP", "tcp", " ", "  ", "\t", "host", "a", "1", "127.0.0.1", ".", "-", ":", "5060",
          "0", "99999", "655360", ";", "branch", "=", "z9hG4bK", "rport", "received", '"', "\x1c", "\xa0",
          "\xe9", "\x00", "\x7f", "!%*_+`'~", "[::1]", ",", "/", "@"]  # fmt: skip


@st.composite
def vias(draw: st.DrawFn) -> str:
    """Mostly the everyday shape, with a chance of any piece anywhere."""
    transport = draw(st.sampled_from(["UDP", "TCP", "tls", "Ws", "X"]))
    host = draw(st.sampled_from(["10.0.0.1", "h", "a-b.example.com", "x.", "x-", "-x", "1.2.3.4.5", "A9"]))
    port = draw(st.one_of(st.none(), st.integers(0, 9_999_999).map(str), st.sampled_from(["", "00080"])))
    params = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["branch", "rport", "received", "x!y", "", "a b", "maddr"]),
                st.one_of(st.none(), st.sampled_from(["z9hG4bK1", "1.2.3.4", "", "a=b", 'q"', "v w", "é"])),
            ),
            max_size=4,
        )
    )
    text = f"SIP/2.0/{transport} {host}" + (f":{port}" if port is not None else "")
    text += "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(PIECES)) + text[at:]
    return text


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vias())
def test_built_vias_agree(text: str) -> None:
    agree(text)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=st.sampled_from(sorted(set("".join(PIECES)))), max_size=40))
def test_any_text_agrees(text: str) -> None:
    agree("SIP/2.0/UDP " + text)
    agree(text)


def test_mutated_everyday_vias_agree() -> None:
    rng = random.Random(23)
    alphabet = sorted(set("".join(PIECES)))
    taken = 0
    for _ in range(20_000):
        chars = list(rng.choice(EVERYDAY))
        for _ in range(rng.randint(1, 3)):
            op, at = rng.randrange(3), rng.randrange(len(chars) + 1)
            if op == 0:
                chars.insert(at, rng.choice(alphabet))
            elif op == 1 and at < len(chars):
                del chars[at]
            elif at < len(chars):
                chars[at] = rng.choice(alphabet)
        taken += agree("".join(chars))
    assert taken > 2_000  # the mutations leave many everyday Vias, and the C code reads them
