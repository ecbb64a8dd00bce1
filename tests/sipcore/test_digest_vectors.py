"""Published test vectors (RFC 2617 §3.5, RFC 7616 §3.9.1), cross-checked with plain hashlib."""

from __future__ import annotations

import hashlib

import pytest

from sipcore.digest import compute_ha1, compute_response, parse_authorization

RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_mufasa(algorithm: str, expected: str) -> None:
    got = compute_response(
        username="Mufasa",
        password="Circle of Life",
        realm="http-auth@example.org",
        nonce=RFC7616_NONCE,
        method="GET",
        uri="/dir/index.html",
        algorithm=algorithm,
        qop="auth",
        nc=1,
        cnonce=RFC7616_CNONCE,
    )
    assert got == expected


def test_rfc7616_vector_matches_plain_hashlib() -> None:
    def h(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    ha1 = h("Mufasa:http-auth@example.org:Circle of Life")
    ha2 = h("GET:/dir/index.html")
    manual = h(f"{ha1}:{RFC7616_NONCE}:00000001:{RFC7616_CNONCE}:auth:{ha2}")
    assert manual == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    assert compute_ha1("Mufasa", "http-auth@example.org", "Circle of Life", "SHA-256") == ha1


def test_rfc2617_mufasa_md5_and_header_parse() -> None:
    header = (
        'Digest username="Mufasa", realm="testrealm@host.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, '
        'nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    p = parse_authorization(header)
    got = compute_response(
        username=p["username"],
        password="Circle Of Life",
        realm=p["realm"],
        nonce=p["nonce"],
        method="GET",
        uri=p["uri"],
        qop=p["qop"],
        nc=p["nc"],
        cnonce=p["cnonce"],
    )
    assert got == p["response"] == "6629fae49393a05397450978507c4ef1"


def test_stored_ha1_gives_same_response_as_password() -> None:
    ha1 = compute_ha1("Mufasa", "http-auth@example.org", "Circle of Life", "SHA-256")
    kwargs = dict(
        username="Mufasa",
        realm="http-auth@example.org",
        nonce=RFC7616_NONCE,
        method="GET",
        uri="/dir/index.html",
        algorithm="SHA-256",
        cnonce=RFC7616_CNONCE,
    )
    assert compute_response(ha1=ha1, **kwargs) == compute_response(password="Circle of Life", **kwargs)


def test_no_qop_form_is_rfc2069() -> None:
    ha1 = hashlib.md5(b"bob:r:pw").hexdigest()
    ha2 = hashlib.md5(b"REGISTER:sip:r").hexdigest()
    expected = hashlib.md5(f"{ha1}:N:{ha2}".encode()).hexdigest()
    got = compute_response(
        username="bob", password="pw", realm="r", nonce="N", method="REGISTER", uri="sip:r", qop=None
    )
    assert got == expected


def test_md5_sess() -> None:
    ha1 = hashlib.md5(b"bob:r:pw").hexdigest()
    sess = hashlib.md5(f"{ha1}:N:C".encode()).hexdigest()
    ha2 = hashlib.md5(b"REGISTER:sip:r").hexdigest()
    expected = hashlib.md5(f"{sess}:N:00000001:C:auth:{ha2}".encode()).hexdigest()
    got = compute_response(
        username="bob",
        password="pw",
        realm="r",
        nonce="N",
        method="REGISTER",
        uri="sip:r",
        algorithm="MD5-sess",
        cnonce="C",
    )
    assert got == expected
