"""The C digest splitter (sipcore/_digest_c.c) against the Python one, its reference.

Contract: for any text, `_digest_c.params` returns exactly the dict `digest._parse_params_py` returns,
or None (the Python parser decides, and words the refusal). Checked on Authorization values built
from what phones send and what attackers send, on random mutations of them, and on the values of
the RFC 4475 / RFC 5118 torture messages' Authorization headers.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipcore import digest
from tests.extensions import require_extension

require_extension(digest._c_params, "sipcore._digest_c")

c_params = digest._c_params


def agree(value: str) -> bool:
    """Assert the contract for ``value``; True when the C splitter took it."""
    fast = c_params(value)
    if fast is None:
        return False
    assert fast == digest._parse_params_py(value, "Authorization")[1], value
    return True


SCHEMES = [
    "Digest ",
    "Digest ",
    "digest ",
    "DIGEST  ",
    " Digest ",
    "Digest",
    "Digestx ",
    "Basic ",
    "Digest,",
    "",
]
NAMES = ["username", "realm", "nonce", "uri", "response", "algorithm", "cnonce", "nc", "qop", "opaque", "Username",
         "userhash", "username*", "x-custom", "a^b|c", "bad name", "", "na\u00efve"]  # fmt: skip
VALUES = ['"u10000"', '"demo.sipcore.test"', '"AAAA-abc_def"', '"sip:127.0.0.1:5060"', "MD5", "00000001", "auth",
          '""', '"a,b=c"', "b=c", '"' + "x" * 300 + '"', "x" * 257, '"a\\"b"', '"caf\u00e9"', "", '"open', "a b",
          '"q"x', "SHA-256", '"\t"', "1\u00a0"]  # fmt: skip
SEPS = [", ", ",", " , ", ",  ", " ,", ",,", " "]
EQS = ["=", "=", " = ", "= ", " ="]


@st.composite
def authorizations(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(SCHEMES[:2] * 9 + SCHEMES))
    items = []
    names = draw(st.permutations(NAMES[:11]))[: draw(st.integers(0, 11))]  # distinct, as phones send
    for name in names:
        name = draw(st.sampled_from([name] * 19 + NAMES))
        value = draw(st.sampled_from(VALUES[:9] * 19 + VALUES))
        items.append(f"{name}{draw(st.sampled_from(EQS))}{value}")
    text = scheme
    for i, item in enumerate(items):
        text += item if i == 0 else draw(st.sampled_from(SEPS[:2] * 19 + SEPS)) + item
    return text + draw(st.sampled_from([""] * 12 + [",", " ", ", ", "\r\n"]))


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(authorizations())
def test_the_c_splitter_agrees_with_the_python_splitter(value: str) -> None:
    agree(value)


MUTATIONS = [" ", ",", "=", '"', "\\", "\t", "\r\n", "a", "\u00e9", "\x00", "\x7f", ""]


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    authorizations(),
    st.lists(st.tuples(st.floats(0, 1), st.sampled_from(MUTATIONS), st.integers(0, 2)), max_size=3),
)
def test_the_c_splitter_agrees_on_mutated_values(value: str, edits: list[tuple[float, str, int]]) -> None:
    for where, insert, cut in edits:
        i = int(where * len(value))
        value = value[:i] + insert + value[i + cut :]
    agree(value)


SIPP = (
    'Digest username="u10007",realm="127.0.0.1",cnonce="6b8b4567",nc=00000001,qop=auth,'
    'uri="sip:127.0.0.1:5060",nonce="AAAA-abc_def",response="0123456789abcdef0123456789abcdef",algorithm=MD5'
)
PHONE = (
    'Digest username="1001", realm="demo.sipcore.test", nonce="AAAA-abc_def", uri="sip:demo.sipcore.test", '
    'response="0123456789abcdef0123456789abcdef", algorithm=MD5, cnonce="0a4f113b", qop=auth, nc=00000001'
)


@pytest.mark.parametrize("value", [SIPP, PHONE], ids=["sipp", "phone"])
def test_the_everyday_authorizations_are_taken_by_the_c_splitter(value: str) -> None:
    assert agree(value), "the C splitter passed on an everyday Authorization"


@pytest.mark.parametrize(
    "value",
    [
        "Digest " + ", ".join(f"p{i}=1" for i in range(digest.MAX_PARAMS)),
        "Digest " + ", ".join(f"p{i}=1" for i in range(digest.MAX_PARAMS + 1)),
        "Digest realm=a, Realm=b",
        'Digest nonce="' + "n" * 10_000 + '"',
        "Digest " + "x" * (digest.MAX_HEADER_LEN + 1) + "=1",
        "Digest a=1,,",
        "Digest ,a=1",
        "Digest   ",
        "Digest ,",
    ],
)
def test_the_edges_of_the_grammar_and_the_limits(value: str) -> None:
    agree(value)  # taken with the same dict, or left to the Python splitter
    try:
        expected = digest._parse_params_py(value, "Authorization")[1]
    except digest.DigestParseError:
        assert c_params(value) is None  # what Python refuses, C never accepts
    else:
        assert c_params(value) in (None, expected)
