"""Challenge -> response -> verify round trips, and every way verification can fail."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import struct

import pytest

import sipcore.digest as digest
from sipcore.digest import (
    AuthReason,
    Challenger,
    Credentials,
    DigestError,
    MemoryNonceCounters,
    aor_matches,
    build_authorization,
    compute_ha1,
    digest_uri_matches,
    parse_authorization,
    parse_challenge,
)
from sipcore.errors import SipError

REALM = "pbx.example.com"
SECRET = "s3cret-s3cret-s3cret-s3cret"
NOW = 1_700_000_000.0
R_URI = "sip:pbx.example.com"

ACCOUNTS = {
    "alice": Credentials(password="alice-pw"),
    "bob": Credentials(
        ha1_md5=compute_ha1("bob", REALM, "bob-pw", "MD5"),
        ha1_sha256=compute_ha1("bob", REALM, "bob-pw", "SHA-256").upper(),
    ),
    "carol": Credentials(ha1_md5=compute_ha1("carol", REALM, "carol-pw", "MD5")),
}


def lookup(username: str) -> Credentials | None:
    return ACCOUNTS.get(username)


@pytest.fixture
def ch() -> Challenger:
    return Challenger(REALM, SECRET, nonce_ttl=300)


def answer(
    ch: Challenger,
    user: str,
    password: str,
    *,
    which: int = 0,
    nc: int = 1,
    now: float = NOW,
    uri: str = R_URI,
    method: str = "REGISTER",
) -> str:
    return build_authorization(
        ch.challenge(now)[which], username=user, password=password, method=method, uri=uri, nc=nc
    )


def test_challenge_offers_sha256_then_md5_with_one_nonce(ch: Challenger) -> None:
    values = ch.challenge(NOW)
    assert [parse_challenge(v)["algorithm"] for v in values] == ["SHA-256", "MD5"]
    parsed = [parse_challenge(v) for v in values]
    assert {p["nonce"] for p in parsed} == {parsed[0]["nonce"]}
    for p in parsed:
        assert p["realm"] == REALM and p["qop"] == "auth" and "stale" not in p
    assert all(v.endswith(", stale=true") for v in ch.challenge(NOW, stale=True))
    assert ch.challenge(NOW)[0] != values[0]  # a fresh random salt per challenge


@pytest.mark.parametrize(("which", "algorithm"), [(0, "SHA-256"), (1, "MD5")])
@pytest.mark.parametrize(("user", "password"), [("alice", "alice-pw"), ("bob", "bob-pw")])
def test_round_trip_ok(ch: Challenger, which: int, algorithm: str, user: str, password: str) -> None:
    res = ch.verify(answer(ch, user, password, which=which), "REGISTER", lookup, NOW + 1, request_uri=R_URI)
    assert res.ok and res.reason is AuthReason.OK
    assert res.username == user and res.algorithm == algorithm
    assert not res.is_failure and res.status is None
    assert res.nonce_use is not None and res.nonce_use.nc == 1


def test_proxy_auth_for_invite(ch: Challenger) -> None:
    auth = answer(ch, "alice", "alice-pw", method="INVITE", uri="sip:+33123456789@pbx.example.com")
    assert ch.verify(auth, "INVITE", lookup, NOW).ok
    assert ch.verify(auth.replace("nc=00000001", "nc=00000002"), "REGISTER", lookup, NOW).reason is (
        AuthReason.BAD_RESPONSE
    )


def test_account_without_ha1_for_algorithm(ch: Challenger) -> None:
    sha = ch.verify(answer(ch, "carol", "carol-pw", which=0), "REGISTER", lookup, NOW)
    assert sha.reason is AuthReason.BAD_RESPONSE and "SHA-256" in sha.detail
    assert ch.verify(answer(ch, "carol", "carol-pw", which=1), "REGISTER", lookup, NOW).ok


def test_wrong_password(ch: Challenger) -> None:
    res = ch.verify(answer(ch, "alice", "nope"), "REGISTER", lookup, NOW)
    assert res.reason is AuthReason.BAD_RESPONSE and res.is_failure and not res.stale
    assert res.username == "alice"


def test_unknown_user_is_a_failure_answered_like_a_bad_password(ch: Challenger) -> None:
    res = ch.verify(answer(ch, "mallory", "x"), "REGISTER", lookup, NOW)
    assert res.reason is AuthReason.UNKNOWN_USER and res.is_failure
    bad = ch.verify(answer(ch, "alice", "x"), "REGISTER", lookup, NOW)
    assert (res.stale, res.status, res.detail) == (bad.stale, bad.status, bad.detail)


def test_unknown_user_costs_the_same_hashing(ch: Challenger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted on the Python reference; sipcore/_digest_hash_c.c hashes A1 unconditionally too, and
    tests/sipcore/test_digest_hash_c.py holds it to the same answers. Compiled by mypyc, digest.py
    calls its own ``_h`` natively, where no patch reaches: `make test` runs this file again on the
    sources (SIPCORE_PURE_PYTHON=1), which count."""
    if digest.__spec__.origin.endswith(".so"):
        pytest.skip("counted on the sources: the build's own calls to _h are native")
    calls: list[int] = []
    real_h = digest._h
    monkeypatch.setattr(digest, "_c_expected", None)

    def counting_h(algo, text):  # type: ignore[no-untyped-def]
        calls.append(len(text) > 0)
        return real_h(algo, text)

    monkeypatch.setattr(digest, "_h", counting_h)
    counts = {}
    for user, pw in [("mallory", "x"), ("alice", "x"), ("alice", "alice-pw"), ("bob", "x")]:
        for which in (0, 1):
            auth = answer(ch, user, pw, which=which, nc=which + 1)
            calls.clear()
            ch.verify(auth, "REGISTER", lookup, NOW)
            counts[(user, pw, which)] = len(calls)
    assert set(counts.values()) == {3}  # A1, A2, response — for every user, known or not


def test_challenge_does_not_depend_on_who_asks() -> None:
    def fixed(n: int) -> bytes:
        return b"\x01" * n

    one = Challenger(REALM, SECRET, random_bytes=fixed)
    assert one.challenge(NOW) == one.challenge(NOW)  # no input but time and randomness


def test_stale_nonce_with_right_password(ch: Challenger) -> None:
    auth = answer(ch, "alice", "alice-pw")
    res = ch.verify(auth, "REGISTER", lookup, NOW + 300)
    assert res.reason is AuthReason.STALE_NONCE and res.stale and not res.is_failure
    assert ch.verify(auth, "REGISTER", lookup, NOW + 299.9).ok


def test_stale_nonce_with_wrong_password_is_not_stale(ch: Challenger) -> None:
    res = ch.verify(answer(ch, "alice", "bad"), "REGISTER", lookup, NOW + 1000)
    assert res.reason is AuthReason.BAD_RESPONSE and not res.stale


def test_replay_same_nc_rejected_increasing_nc_accepted(ch: Challenger) -> None:
    nonce_value = ch.challenge(NOW)[0]

    def auth(nc: int, pw: str = "alice-pw") -> str:
        return build_authorization(
            nonce_value, username="alice", password=pw, method="REGISTER", uri=R_URI, nc=nc
        )

    assert ch.verify(auth(1), "REGISTER", lookup, NOW).ok
    replay = ch.verify(auth(1), "REGISTER", lookup, NOW + 1)
    assert replay.reason is AuthReason.REPLAY and replay.stale and replay.is_failure
    assert ch.verify(auth(3), "REGISTER", lookup, NOW + 2).ok
    assert ch.verify(auth(2), "REGISTER", lookup, NOW + 3).reason is AuthReason.REPLAY
    # a bad guess does not burn a counter value
    assert ch.verify(auth(9, pw="guess"), "REGISTER", lookup, NOW + 4).reason is AuthReason.BAD_RESPONSE
    assert ch.verify(auth(4), "REGISTER", lookup, NOW + 5).ok


def test_replay_left_to_caller(ch: Challenger) -> None:
    free = Challenger(REALM, SECRET, check_replay=False)
    auth = answer(free, "alice", "alice-pw", nc=7)
    first, second = (free.verify(auth, "REGISTER", lookup, NOW) for _ in range(2))
    assert first.ok and second.ok and free.nonce_counters is None
    assert first.nonce_use is not None and first.nonce_use.nc == 7
    assert first.nonce_use.expires_at == pytest.approx(NOW + 300)


def test_forged_nonces(ch: Challenger) -> None:
    good = answer(ch, "alice", "alice-pw")
    nonce = parse_authorization(good)["nonce"]
    flipped = nonce[:20] + ("A" if nonce[20] != "A" else "B") + nonce[21:]
    other = Challenger(REALM, "another-secret-another-secret")
    foreign = answer(other, "alice", "alice-pw")
    for auth in (good.replace(nonce, flipped), good.replace(nonce, "x" * 43), foreign):
        res = ch.verify(auth, "REGISTER", lookup, NOW)
        assert res.reason is AuthReason.NONCE_FORGED and not res.stale and res.is_failure
    future = answer(ch, "alice", "alice-pw", now=NOW + 31)
    assert ch.verify(future, "REGISTER", lookup, NOW).reason is AuthReason.NONCE_FORGED
    assert ch.verify(answer(ch, "alice", "alice-pw", now=NOW + 29), "REGISTER", lookup, NOW).ok


def test_secret_rotation_accepts_previous_secret() -> None:
    old = Challenger(REALM, "old-secret-old-secret-old")
    new = Challenger(REALM, "new-secret-new-secret-new", previous_secrets=["old-secret-old-secret-old"])
    assert new.verify(answer(old, "alice", "alice-pw"), "REGISTER", lookup, NOW).ok


def test_nonce_carries_issue_time(ch: Challenger) -> None:
    nonce = parse_challenge(ch.challenge(NOW + 0.25)[0])["nonce"]
    assert ch.nonce_issued_at(nonce) == pytest.approx(NOW + 0.25)
    assert ch.nonce_issued_at("short") is None
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(nonce[-1])
    for spare in (1, 2, 3):  # same decoded bytes, another spelling: refused
        assert ch.nonce_issued_at(nonce[:-1] + alphabet[last | spare]) is None


def _reference_nonce(secret: str, realm: str, body: bytes) -> str:
    """The nonce as docs/security.md defines it, spelled with the standard library's public API:
    base64url without padding of body (ms timestamp, salt) + the first 16 bytes of its HMAC-SHA-256."""
    mac = hmac.new(secret.encode(), b"sipcore-nonce-v1\x00" + realm.encode() + b"\x00" + body, hashlib.sha256)
    return base64.urlsafe_b64encode(body + mac.digest()[:16]).rstrip(b"=").decode("ascii")


def test_nonce_matches_the_reference_spelling() -> None:
    """The C HMAC object and binascii (the fast path) give the nonce hmac.new + base64 give, and the
    check takes exactly those nonces back, one flipped character refused."""
    rng = random.Random(7)
    ch = Challenger(REALM, SECRET, random_bytes=random.Random(8).randbytes)
    for k in range(200):
        now = NOW + rng.random() * 1e6
        nonce = ch.make_nonce(now)
        body = struct.pack(">Q", int(now * 1000)) + base64.urlsafe_b64decode(nonce + "=")[8:16]
        assert nonce == _reference_nonce(SECRET, REALM, body)
        assert ch.nonce_issued_at(nonce) == int(now * 1000) / 1000.0
        i = k % 43
        other = nonce[:i] + ("A" if nonce[i] != "A" else "B") + nonce[i + 1 :]
        assert ch.nonce_issued_at(other) is None


def test_wrong_realm(ch: Challenger) -> None:
    auth = answer(ch, "alice", "alice-pw").replace(f'realm="{REALM}"', 'realm="evil.example.com"')
    assert ch.verify(auth, "REGISTER", lookup, NOW).reason is AuthReason.WRONG_REALM


def test_algorithm_not_offered() -> None:
    sha_only = Challenger(REALM, SECRET, algorithms=("SHA-256",))
    assert len(sha_only.challenge(NOW)) == 1
    md5 = build_authorization(
        Challenger(REALM, SECRET).challenge(NOW)[1],
        username="alice",
        password="alice-pw",
        method="REGISTER",
        uri=R_URI,
    )
    assert sha_only.verify(md5, "REGISTER", lookup, NOW).reason is AuthReason.ALGORITHM_UNSUPPORTED
    weird = md5.replace("algorithm=MD5", "algorithm=SHA-1")
    assert sha_only.verify(weird, "REGISTER", lookup, NOW).reason is AuthReason.ALGORITHM_UNSUPPORTED
    with pytest.raises(DigestError):
        Challenger(REALM, SECRET, algorithms=("SHA-1",))


def test_missing_algorithm_means_md5(ch: Challenger) -> None:
    auth = answer(ch, "alice", "alice-pw", which=1).replace(", algorithm=MD5", "")
    res = ch.verify(auth, "REGISTER", lookup, NOW)
    assert res.ok and res.algorithm == "MD5"


def _no_qop(ch: Challenger, password: str = "alice-pw") -> str:
    value = ch.challenge(NOW)[1].replace(', qop="auth"', "")
    return build_authorization(value, username="alice", password=password, method="REGISTER", uri=R_URI)


def test_no_qop_old_phone_allowed_by_default(ch: Challenger) -> None:
    auth = _no_qop(ch)
    assert "qop" not in parse_authorization(auth)
    res = ch.verify(auth, "REGISTER", lookup, NOW)
    assert res.ok and res.nonce_use is None
    assert ch.verify(auth, "REGISTER", lookup, NOW + 10).ok  # no nc: reuse within the TTL (documented)
    assert ch.verify(_no_qop(ch, "bad"), "REGISTER", lookup, NOW).reason is AuthReason.BAD_RESPONSE


def test_no_qop_refused_when_disabled() -> None:
    strict = Challenger(REALM, SECRET, allow_no_qop=False)
    res = strict.verify(_no_qop(strict), "REGISTER", lookup, NOW)
    assert res.reason is AuthReason.QOP_REQUIRED and res.is_failure


def test_uri_mismatch_is_400(ch: Challenger) -> None:
    auth = answer(ch, "alice", "alice-pw", uri="sip:other.example.com")
    res = ch.verify(auth, "REGISTER", lookup, NOW, request_uri=R_URI)
    assert res.reason is AuthReason.URI_MISMATCH and res.status == 400
    loose = answer(ch, "alice", "alice-pw", uri="sip:PBX.example.com:5060;transport=udp")
    assert ch.verify(loose, "REGISTER", lookup, NOW, request_uri="sip:pbx.example.com;transport=tcp").ok


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("sip:pbx.example.com", "sip:pbx.example.com;transport=tcp", True),
        ("sip:pbx.example.com:5060", "sip:pbx.example.com", True),
        ("sip:pbx.example.com:5062", "sip:pbx.example.com:5060", False),
        ("sip:Alice@PBX.example.com", "sip:Alice@pbx.example.com?Subject=x", True),
        ("sip:alice@pbx.example.com", "sip:Alice@pbx.example.com", False),
        ("sip:%61lice@pbx.example.com", "sip:alice@pbx.example.com", True),
        ("sip:alice:secret@pbx.example.com", "sip:alice@pbx.example.com", True),
        ("sips:pbx.example.com", "sip:pbx.example.com", False),
        ("sip:[2001:db8::1]:5060", "sip:[2001:DB8::1]", True),
        ("sip:[2001:db8::1", "sip:[2001:db8::1]", False),
        ("<sip:pbx.example.com>", "sip:pbx.example.com", True),
        ("tel:+3312345;phone-context=x", "tel:+3312345", True),
        ("pbx.example.com", "sip:pbx.example.com", False),
        ("sip:pbx.example.com:99999999", "sip:pbx.example.com", False),
    ],
)
def test_digest_uri_rule(a: str, b: str, same: bool) -> None:
    assert digest_uri_matches(a, b) is same


def test_aor_belongs_to_account() -> None:
    assert aor_matches("alice", "alice")
    assert aor_matches("alice", "2001", aliases={"2001", "+33123456789"})
    assert aor_matches("alice", "%2B33123456789", aliases={"+33123456789"})
    assert not aor_matches("alice", "bob")
    assert not aor_matches("alice", None)


@pytest.mark.parametrize("value", [None, "", "   ", b""])
def test_no_credentials(ch: Challenger, value: str | bytes | None) -> None:
    res = ch.verify(value, "REGISTER", lookup, NOW)
    assert res.reason is AuthReason.NO_CREDENTIALS and not res.is_failure


@pytest.mark.parametrize("drop", ["username", "realm", "nonce", "uri", "response"])
def test_missing_required_field(ch: Challenger, drop: str) -> None:
    p = parse_authorization(answer(ch, "alice", "alice-pw"))
    rest = ", ".join(f'{k}="{v}"' for k, v in p.items() if k != drop)
    res = ch.verify("Digest " + rest, "REGISTER", lookup, NOW)
    assert res.reason is AuthReason.MALFORMED and drop in res.detail and res.status == 400


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("qop=auth", "qop=auth-int"),
        ("nc=00000001", "nc=00000000"),
        ("nc=00000001", "nc=zz"),
        ('cnonce="0a4f113b"', 'cnonce=""'),
        ("response=", 'response="00", x='),
    ],
)
def test_bad_field_values(ch: Challenger, old: str, new: str) -> None:
    auth = answer(ch, "alice", "alice-pw").replace(old, new, 1)
    assert ch.verify(auth, "REGISTER", lookup, NOW).reason is AuthReason.MALFORMED


def test_a_response_that_is_not_hex_names_its_algorithm_and_is_not_stale(ch: Challenger) -> None:
    """The algorithm went into ``stale`` (the third field) by position: a truthy string there."""
    auth = answer(ch, "alice", "alice-pw")
    value = auth.split('response="', 1)[1].split('"', 1)[0]
    res = ch.verify(auth.replace(value, "z" * len(value)), "REGISTER", lookup, NOW)
    assert res.reason is AuthReason.MALFORMED and res.detail == "response not hex digest"
    assert res.stale is False and res.algorithm is not None and res.status == 400


def test_extended_username(ch: Challenger) -> None:
    accounts = {"Jäsøn Doe": Credentials(password="pw")}
    value = ch.challenge(NOW)[0]
    auth = build_authorization(value, username="Jäsøn Doe", password="pw", method="REGISTER", uri=R_URI)
    ext = auth.replace('username="Jäsøn Doe"', "username*=UTF-8''J%C3%A4s%C3%B8n%20Doe")
    assert ch.verify(ext, "REGISTER", accounts.get, NOW).username == "Jäsøn Doe"
    assert ch.verify(ext, "REGISTER", accounts.get, NOW + 1).reason is AuthReason.REPLAY
    both = auth.replace("Digest ", "Digest username*=UTF-8''x, ")
    assert ch.verify(both, "REGISTER", accounts.get, NOW).reason is AuthReason.MALFORMED
    bad = auth.replace('username="Jäsøn Doe"', "username*=UTF-8''%FF")
    assert ch.verify(bad, "REGISTER", accounts.get, NOW).reason is AuthReason.MALFORMED
    hashed = auth + ", userhash=true"
    assert ch.verify(hashed, "REGISTER", accounts.get, NOW).reason is AuthReason.MALFORMED


def test_memory_counters_bounded_and_safe_after_eviction() -> None:
    table = MemoryNonceCounters(max_entries=3)
    for i in range(3):
        assert table.observe(f"n{i}", 1, expires_at=100 + i, now=0)
    assert table.observe("n3", 1, expires_at=103, now=0)  # evicts n0 (expiry 100)
    assert len(table) == 3 and table.evictions == 1
    assert not table.observe("n0", 2, expires_at=100, now=0)  # can't vouch for it any more: refuse
    assert table.observe("n4", 1, expires_at=200, now=101)  # n1 expired and purged, no eviction
    assert table.evictions == 1
    assert not table.observe("n4", 1, expires_at=200, now=102)


def test_evicted_nonce_answers_stale_so_the_phone_recovers() -> None:
    small = Challenger(REALM, SECRET, nonce_counters=MemoryNonceCounters(max_entries=1))
    value = small.challenge(NOW)[0]

    def first(nc: int) -> str:
        return build_authorization(
            value, username="alice", password="alice-pw", method="REGISTER", uri=R_URI, nc=nc
        )

    assert small.verify(first(1), "REGISTER", lookup, NOW + 2).ok
    second = answer(small, "alice", "alice-pw", now=NOW + 1)
    assert small.verify(second, "REGISTER", lookup, NOW + 2).ok  # evicts the first nonce
    res = small.verify(first(2), "REGISTER", lookup, NOW + 3)
    assert res.reason is AuthReason.REPLAY and res.stale  # re-challenged, never let through


def test_errors_carry_the_answer() -> None:
    err = DigestError("nope")
    assert isinstance(err, SipError) and err.status == 400 and err.reason == "nope"


def test_config_errors() -> None:
    with pytest.raises(ValueError):
        Challenger(REALM, "short")
    with pytest.raises(ValueError):
        Challenger('bad"realm', SECRET)
    with pytest.raises(ValueError):
        Challenger(REALM, SECRET, nonce_ttl=0)


@pytest.mark.parametrize(
    "field",
    ['username="a\udcffb"', 'uri="sip:x\udcff"', 'cnonce="c\udcff"', 'opaque="\udcff"'],
)
def test_credentials_that_were_not_utf8_are_malformed_not_an_error(ch: Challenger, field: str) -> None:
    """The parser keeps bytes that are not UTF-8 as lone surrogates (surrogateescape); such a value
    cannot be hashed, so it is refused as malformed (400) instead of raising out of verify."""
    nonce = parse_challenge(ch.challenge(NOW)[1])["nonce"]
    fields = {"username": '"alice"', "realm": f'"{REALM}"', "nonce": f'"{nonce}"', "uri": '"sip:x"',
              "response": '"' + "0" * 32 + '"', "algorithm": "MD5", "qop": "auth", "nc": "00000001",
              "cnonce": '"c"'}  # fmt: skip
    name, _, value = field.partition("=")
    fields[name] = value
    auth = "Digest " + ", ".join(f"{k}={v}" for k, v in fields.items())
    result = ch.verify(auth, "REGISTER", lookup, NOW)
    assert result.reason is AuthReason.MALFORMED and result.status == 400
    with pytest.raises(digest.DigestParseError, match="not UTF-8"):
        digest.parse_authorization(auth)
