"""The C digest hashing (sipcore/_digest_hash_c.c) against digest.py's Python, its reference.

Contract: `expected` gives the hex `_expected_py` gives, `mint` the nonce `_mint_py` gives, `issued`
what `_nonce_issued_at_py` answers, for any input; and a Challenger verifies alike with and without
them. The RFC examples pin both to answers neither computed.
"""

from __future__ import annotations

import base64
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipcore import digest
from sipcore.digest import AuthReason, Challenger, Credentials, build_authorization, parse_challenge
from tests.extensions import require_extension

require_extension(digest._digest_hash, "sipcore._digest_hash_c")

c_expected = digest._c_expected
assert c_expected is not None
ALGOS = [digest._ALGOS[n] for n in ("MD5", "MD5-SESS", "SHA-256", "SHA-256-SESS")]
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def both(algo: digest._Algo, *args: object) -> str:
    fast = c_expected(algo.c_code, algo.sess, *args)
    assert fast == digest._expected_py(algo, algo.sess, *args), (algo.name, args)  # type: ignore[arg-type]
    return fast


@pytest.mark.parametrize(
    ("algorithm", "password", "realm", "nonce", "cnonce", "response"),
    [
        # RFC 2617 §3.5
        ("MD5", "Circle Of Life", "testrealm@host.com", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "0a4f113b",
         "6629fae49393a05397450978507c4ef1"),
        # RFC 7616 §3.9.1, both of its algorithms
        ("MD5", "Circle of Life", "http-auth@example.org", "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
         "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "Circle of Life", "http-auth@example.org", "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
         "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
         "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)  # fmt: skip
def test_the_rfc_examples(
    algorithm: str, password: str, realm: str, nonce: str, cnonce: str, response: str
) -> None:
    algo = digest._ALGOS[algorithm]
    args = (None, "Mufasa", realm, password, nonce, "00000001", cnonce, "auth", "GET", "/dir/index.html")
    assert both(algo, *args) == response
    ha1 = digest.compute_ha1("Mufasa", realm, password, algorithm)  # a stored HA1 answers the same
    assert both(algo, ha1, *args[1:]) == response


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=150)


@settings(max_examples=1500, deadline=None)
@given(
    algo=st.sampled_from(ALGOS),
    ha1=st.none() | st.text("0123456789abcdef", max_size=70),
    username=TEXT,
    realm=TEXT,
    password=TEXT,
    nonce=TEXT,
    nc=st.text("0123456789abcdefABCDEF", max_size=8),
    cnonce=TEXT,
    qop=st.none() | st.sampled_from(["auth", "AUTH", "auth-int"]),
    method=st.sampled_from(["REGISTER", "INVITE", "SUBSCRIBE", "x" * 70]),
    uri=TEXT,
)
def test_expected_agrees_with_the_reference(
    algo: digest._Algo, ha1: str | None, username: str, realm: str, password: str, nonce: str, nc: str,
    cnonce: str, qop: str | None, method: str, uri: str,
) -> None:  # fmt: skip
    both(algo, ha1, username, realm, password, nonce, nc, cnonce, qop, method, uri)


def test_every_length_across_the_block_boundaries() -> None:
    """Inputs of 0-300 bytes end at every offset of a 64-byte block (padding in one block or two)."""
    for algo in ALGOS:
        for n in range(300):
            both(algo, None, "u" * n, "r", "p\u00e9", "n", "00000001", "c", "auth", "INVITE", "sip:x")


def test_refuses_what_the_reference_cannot_hash() -> None:
    with pytest.raises(UnicodeEncodeError):
        c_expected(0, False, None, "\ud800", "r", "p", "n", "1", "c", "auth", "INVITE", "sip:x")
    with pytest.raises(TypeError):
        c_expected(0, False, None, b"u", "r", "p", "n", "1", "c", "auth", "INVITE", "sip:x")
    with pytest.raises(ValueError):
        c_expected(7, False, None, "u", "r", "p", "n", "1", "c", "auth", "INVITE", "sip:x")


SECRETS = [
    "s" * 16,
    "0123456789abcdef" * 4,
    "k" * 65,
    "a longer secret, hashed first by HMAC" * 5,
    "caf\u00e9" * 8,
]


@pytest.mark.parametrize("secret", SECRETS)
def test_nonces_agree_with_the_reference(secret: str) -> None:
    rng = random.Random(secret)
    ch = Challenger("pbx.example.com", secret, random_bytes=rng.randbytes, previous_secrets=["old-" * 5])
    stranger = Challenger("pbx.example.com", "another-secret-entirely")
    assert ch._c_keys is not None
    for _ in range(300):
        body = rng.randbytes(16)
        nonce = ch.make_nonce(rng.random() * 4e9)
        assert digest._c_mint is not None
        assert digest._c_mint(ch._c_keys[0], body) == ch._mint_py(body)
        for text in (nonce, ch._mint_py(body), stranger.make_nonce(1e9), _mutated(rng, nonce)):
            assert ch.nonce_issued_at(text) == ch._nonce_issued_at_py(text), text
    old = Challenger("pbx.example.com", "old-" * 5).make_nonce(123.456)
    assert ch.nonce_issued_at(old) == ch._nonce_issued_at_py(old) == 123.456


def _mutated(rng: random.Random, nonce: str) -> str:
    i = rng.randrange(len(nonce))
    kind = rng.randrange(5)
    if kind == 0:
        return nonce[:i] + rng.choice(ALPHABET) + nonce[i + 1 :]
    if kind == 1:
        return nonce[:i] + rng.choice("=+/. \u00e9\x00") + nonce[i + 1 :]
    if kind == 2:
        return nonce[:-1] + ALPHABET[ALPHABET.index(nonce[-1]) | rng.randrange(1, 4)]  # spare bits set
    if kind == 3:
        return nonce[:i] + nonce[i + 1 :]
    return nonce + rng.choice(ALPHABET)


def test_the_spare_bits_and_the_alphabet() -> None:
    ch = Challenger("pbx.example.com", "s" * 20)
    nonce = ch.make_nonce(1e9)
    last = ALPHABET.index(nonce[-1])
    assert last % 4 == 0 and ch.nonce_issued_at(nonce) == 1e9
    for spare in (1, 2, 3):
        assert ch.nonce_issued_at(nonce[:-1] + ALPHABET[last | spare]) is None
    standard = base64.b64encode(base64.urlsafe_b64decode(nonce + "=")).decode().rstrip("=")
    if standard != nonce:  # "+" and "/" are not in a nonce's alphabet
        assert ch.nonce_issued_at(standard) is None


@settings(max_examples=300, deadline=None)
@given(
    user=st.sampled_from(["alice", "bob", "mallory"]),
    password=st.sampled_from(["alice-pw", "bob-pw", "wrong"]),
    method=st.sampled_from(["REGISTER", "INVITE"]),
    which=st.integers(0, 1),
    nc=st.integers(1, 3),
    sess=st.booleans(),
)
def test_a_challenger_verifies_alike_with_and_without_c(
    user: str, password: str, method: str, which: int, nc: int, sess: bool
) -> None:
    accounts = {
        "alice": Credentials(password="alice-pw"),
        "bob": Credentials(ha1_md5=digest.compute_ha1("bob", "pbx.example.com", "bob-pw").upper(),
                           ha1_sha256=digest.compute_ha1("bob", "pbx.example.com", "bob-pw", "SHA-256")),
    }  # fmt: skip
    results = []
    for c in (True, False):
        ch = Challenger("pbx.example.com", "s" * 24, random_bytes=random.Random(1).randbytes, check_replay=False,
                        algorithms=("SHA-256", "MD5", "SHA-256-sess", "MD5-sess"))  # fmt: skip
        if not c:
            ch._c_keys = None
        values = ch.challenge(1e9)
        value = values[which + (2 if sess else 0)]
        auth = build_authorization(
            value, username=user, password=password, method=method, uri="sip:pbx", nc=nc
        )
        assert parse_challenge(value)["nonce"] in auth
        old = digest._c_expected
        digest._c_expected = old if c else None
        try:
            results.append(ch.verify(auth, method, accounts.get, 1e9 + 5))
        finally:
            digest._c_expected = old
    assert results[0] == results[1]
    ok = user != "mallory" and password == f"{user}-pw"
    assert (results[0].reason is AuthReason.OK) is ok
