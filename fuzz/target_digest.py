"""The digest credentials reader: the C splitter (sipcore/_digest_c.c) against the Python reference,
on every input; parse_authorization raises DigestParseError only, for text and bytes alike. The C
hashing (sipcore/_digest_hash_c.c) against its reference on what the input carries: its nonce read
back by both, its fields hashed by both."""

from __future__ import annotations

from collections.abc import Iterable

from sipcore import digest

from .seeds import header_values

_C = digest._c_params
_CHALLENGER = digest.Challenger("fuzz.example.com", "fuzz-secret-0123456789")
_HASHED = [digest._ALGOS[name] for name in ("MD5", "SHA-256-SESS")]


_EVERYDAY = [  # SIPp's and a desk phone's credentials, a challenge with RFC 7616's parameters
    b'Digest username="u10007",realm="127.0.0.1",cnonce="6b8b4567",nc=00000001,qop=auth,'
    b'uri="sip:127.0.0.1:5060",nonce="AAAA-abc_def",response="0123456789abcdef0123456789abcdef",algorithm=MD5',
    b'Digest username="1001", realm="demo.sipcore.test", nonce="AAAA-abc_def", uri="sip:demo.sipcore.test", '
    b'response="0123456789abcdef0123456789abcdef", algorithm=MD5, cnonce="0a4f113b", qop=auth, nc=00000001',
    b'Digest realm="demo.sipcore.test", nonce="n", algorithm=SHA-256, qop="auth", opaque="o", userhash=true',
    b'Digest username*=UTF-8\'\'J%C3%A4s, realm="a\\"b", nonce="", uri="sip:x", response="r"',
]


def seeds() -> Iterable[bytes]:
    yield from _EVERYDAY
    yield from header_values((b"authorization", b"proxy-authorization", b"www-authenticate"))


def check(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    try:
        expected: dict[str, str] | None = digest._parse_params_py(text, "Authorization")[1]
    except digest.DigestParseError:
        expected = None
    if _C is not None:
        fast = _C(text)
        assert fast is None or fast == expected, ("C splitter disagrees", text, fast, expected)
    if expected is not None and digest._c_expected is not None:
        _hashing_agrees(expected)
    for value in (text, data):
        try:
            digest.parse_authorization(value)
        except digest.DigestParseError:
            pass


def _hashing_agrees(params: dict[str, str]) -> None:
    nonce = params.get("nonce", "")
    ch = _CHALLENGER
    if ch._c_keys is not None:
        assert ch.nonce_issued_at(nonce) == ch._nonce_issued_at_py(nonce), ("C nonce check disagrees", nonce)
    fields = [params.get(k, "") for k in ("username", "realm", "opaque", "nonce", "nc", "cnonce")]
    qop = params.get("qop")
    for algo in _HASHED:
        args = (
            algo.sess,
            params.get("response"),
            *fields,
            qop,
            params.get("algorithm", "INVITE"),
            params.get("uri", ""),
        )
        try:
            want: str | None = digest._expected_py(algo, *args)  # type: ignore[arg-type]
        except UnicodeEncodeError:  # a lone surrogate (surrogateescape): neither can hash it
            want = None
        try:
            got: str | None = digest._c_expected(algo.c_code, *args)  # type: ignore[misc]
        except UnicodeEncodeError:
            got = None
        assert got == want, ("C digest hash disagrees", algo.name, args, got, want)
