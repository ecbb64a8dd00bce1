"""Hostile Authorization headers: every one is refused with DigestParseError (or MALFORMED), nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipcore.digest import (
    MAX_HEADER_LEN,
    AuthReason,
    Challenger,
    Credentials,
    DigestParseError,
    parse_authorization,
    parse_challenge,
)

NOW = 1_700_000_000.0
CH = Challenger("pbx.example.com", "s3cret-s3cret-s3cret-s3cret")


def lookup(username: str) -> Credentials | None:
    return Credentials(password="pw") if username == "alice" else None


def test_quoted_unquoted_and_escapes() -> None:
    p = parse_authorization(
        'Digest  username="al\\"ice\\\\", realm = "r" ,nonce="n",\turi="sip:r", '
        'response="abc", algorithm=SHA-256, qop=auth, nc=00000001, cnonce="c d", opaque=""'
    )
    assert p == {
        "username": 'al"ice\\',
        "realm": "r",
        "nonce": "n",
        "uri": "sip:r",
        "response": "abc",
        "algorithm": "SHA-256",
        "qop": "auth",
        "nc": "00000001",
        "cnonce": "c d",
        "opaque": "",
    }


def test_scheme_and_names_are_case_insensitive_values_are_not() -> None:
    assert parse_authorization('DIGEST UserName="Alice"') == {"username": "Alice"}
    assert parse_authorization(b'digest username="x"') == {"username": "x"}


def test_folded_header_and_trailing_comma_tolerated() -> None:
    assert parse_authorization('Digest username="a",\r\n realm="r",') == {"username": "a", "realm": "r"}


def test_utf8_in_quoted_string() -> None:
    assert parse_authorization('Digest username="Jäsøn"')["username"] == "Jäsøn"


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", "scheme"),
        ("Bearer abc", "scheme"),
        ("", "scheme"),
        ("   ", "scheme"),
        ('Digest username="a", username="b"', "duplicate"),
        ('Digest username="a", USERNAME="b"', "duplicate"),
        ('Digest username="a', "malformed"),
        ('Digest username="a" realm="r"', "malformed"),
        ("Digest username", "malformed"),
        ("Digest =x", "malformed"),
        ('Digest username="a",,realm="r"', "malformed"),
        ('Digest username="a\x00b"', "malformed"),
        ('Digest username="a\nb"', "malformed"),
        ('Digest username=a"b', "malformed"),
        ('Digest nonce="' + "A" * 10_000 + '"', "longer than"),
        ('Digest nonce="' + "A" * 129 + '"', "too long"),
        ("Digest nc=" + "1" * 100, "too long"),
        ('Digest uri="' + "\\" * 2999 + '"', "malformed"),
        ('Digest uri="' + "\\" * 3000 + '"', "too long"),
        ("Digest " + ", ".join(f"p{i}=1" for i in range(30)), "too many"),
        ('Digestusername="a"', "scheme"),
    ],
)
def test_hostile_headers_refused(value: str, needle: str) -> None:
    with pytest.raises(DigestParseError) as info:
        parse_authorization(value)
    assert needle in info.value.reason
    assert CH.verify(value, "REGISTER", lookup, NOW).reason in {
        AuthReason.MALFORMED,
        AuthReason.NO_CREDENTIALS,
    }


@pytest.mark.parametrize(
    "value", [b"\xff\xfe\x00garbage", b'Digest username="\xc3\x28"', 12345, ["Digest"], b"x" * 5000]
)
def test_garbage_inputs(value: object) -> None:
    with pytest.raises(DigestParseError):
        parse_authorization(value)  # type: ignore[arg-type]
    with pytest.raises(DigestParseError):
        parse_challenge(value)  # type: ignore[arg-type]


def test_every_field_bounded_even_when_header_fits() -> None:
    value = 'Digest username="' + "u" * 257 + '"'
    assert len(value) < MAX_HEADER_LEN
    with pytest.raises(DigestParseError, match="username"):
        parse_authorization(value)


@pytest.mark.parametrize("nc", ["00000001x", "0x000001", "-1", "1" * 100, "ffffffffff", "１２３"])
def test_absurd_nc_is_malformed(nc: str) -> None:
    value = (
        'Digest username="alice", realm="pbx.example.com", nonce="' + "A" * 43 + '", uri="sip:x", '
        'response="' + "0" * 64 + f'", algorithm=SHA-256, qop=auth, cnonce="c", nc={nc}'
    )
    assert CH.verify(value, "REGISTER", lookup, NOW).reason is AuthReason.MALFORMED


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=600), st.binary(max_size=600)))
def test_fuzz_arbitrary_input_never_escapes(value: str | bytes) -> None:
    try:
        parse_authorization(value)
    except DigestParseError:
        pass
    assert CH.verify(value, "REGISTER", lookup, NOW).reason is not AuthReason.OK


_names = st.sampled_from(
    ["username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce", "algorithm", "x", "username*"]
)
_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=80).map(
        lambda v: '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    ),
    st.from_regex(r"[A-Za-z0-9\-]{0,20}", fullmatch=True),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_names, _values), max_size=12))
def test_fuzz_well_shaped_headers(params: list[tuple[str, str]]) -> None:
    value = "Digest " + ", ".join(f"{k}={v}" for k, v in params)
    try:
        parsed = parse_authorization(value)
    except DigestParseError:
        parsed = None
    if parsed is not None:
        assert set(parsed) <= {k for k, _ in params}
    assert CH.verify(value, "REGISTER", lookup, NOW).reason is not AuthReason.OK
