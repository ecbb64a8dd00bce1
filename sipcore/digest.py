"""SIP digest authentication (RFC 3261 §22, RFC 7616, RFC 8760, RFC 2617 no-qop), sans-IO.

Why it looks like this:
- Nonces are *stateless*: ``base64url(timestamp_ms | random salt | HMAC-SHA256(secret, realm | ts |
  salt)[:16])``. Any process or host holding the secret verifies them; no shared nonce table is needed.
- Nothing here reads the clock or the network: ``now`` (Unix seconds, wall clock so hosts agree) is an
  argument, randomness is injectable, credentials come from a caller-supplied lookup.
- The only shared state is the optional "highest nc seen per nonce" table, behind a tiny protocol
  (:class:`NonceCounterStore`) so a Redis-backed one can replace the in-memory one.
- Unknown users cost the same hashing as known ones and get the same challenge, so neither timing nor
  headers reveal which usernames exist.
- Hostile input is bounded before it is looked at; :func:`parse_authorization` raises only
  :class:`DigestParseError`.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache, partial
from typing import Protocol
from urllib.parse import unquote

from sipcore.errors import SipError
from sipcore.randomness import BlockSource
from sipcore.records import fast_init
from sipcore.speedups import optional_extension
from sipcore.uri import SipUri, TelUri, parse_uri

__all__ = [
    "AUTHORIZATION",
    "PROXY_AUTHENTICATE",
    "PROXY_AUTHORIZATION",
    "WWW_AUTHENTICATE",
    "AuthReason",
    "AuthResult",
    "Challenger",
    "Credentials",
    "DigestError",
    "DigestParseError",
    "MemoryNonceCounters",
    "NonceCounterStore",
    "NonceUse",
    "aor_matches",
    "build_authorization",
    "compute_ha1",
    "compute_response",
    "digest_uri_matches",
    "parse_authorization",
    "parse_challenge",
]

WWW_AUTHENTICATE = "WWW-Authenticate"  # with 401, REGISTER
AUTHORIZATION = "Authorization"
PROXY_AUTHENTICATE = "Proxy-Authenticate"  # with 407, INVITE and other proxied requests
PROXY_AUTHORIZATION = "Proxy-Authorization"

# --- bounds: every field is capped so hostile headers are refused before any real work -------------
MAX_HEADER_LEN = 4096
MAX_PARAMS = 24
FIELD_LIMITS: dict[str, int] = {
    "username": 256,
    "username*": 768,
    "realm": 256,
    "nonce": 128,
    "uri": 1024,
    "response": 128,
    "cnonce": 256,
    "nc": 8,
    "qop": 64,
    "algorithm": 32,
    "opaque": 256,
    "userhash": 8,
    "stale": 8,
    "domain": 1024,
    "charset": 16,
}
OTHER_FIELD_LIMIT = 256


class DigestError(SipError):
    """Base error of this module; a :class:`SipError`, so ``status`` is what the edge answers."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason, status)


class DigestParseError(DigestError):
    """A credentials or challenge header that cannot be trusted as written (answer 400)."""


# --- grammar (RFC 3261 §25 / RFC 7616 §3.4), built once from named fragments -------------------------
_LWS = r"[ \t\r\n]*+"
_TOKEN = r"[!%'*+\-.0-9A-Za-z^_`|~]+"
_QDTEXT = r'[^"\\\x00-\x08\x0a-\x1f\x7f]'  # HTAB and UTF-8 allowed, other controls are not
_QUOTED_PAIR = r"\\[\x00-\x09\x0b\x0c\x0e-\x7f]"
# "unrolled loop" with possessive quantifiers: linear time, no backtracking on hostile input
_QUOTED = rf'"({_QDTEXT}*+(?:{_QUOTED_PAIR}{_QDTEXT}*+)*+)"'
_BARE = r'([^\x00-\x20",\\\x7f]++)'  # lenient: phones send algorithm=MD5, nc=00000001, qop=auth bare
_PARAM_RE = re.compile(rf"{_LWS}({_TOKEN}){_LWS}={_LWS}(?:{_QUOTED}|{_BARE}){_LWS}(?:,|\Z)")
# a whole parameter list, validated in one pass before findall extracts its items
_PARAM_LIST_RE = re.compile(rf"(?:{_LWS}{_TOKEN}{_LWS}={_LWS}(?:{_QUOTED}|{_BARE}){_LWS}(?:,|\Z))*+")
_SCHEME_RE = re.compile(r"[ \t]*([A-Za-z][A-Za-z0-9\-]*)(?:[ \t\r\n]+|\Z)")
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_NC_RE = re.compile(r"[0-9a-fA-F]{1,8}")
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_CANONICAL_LAST = frozenset("AEIMQUYcgkosw048")


def _parse_params(value: str | bytes | None, what: str) -> tuple[str, dict[str, str]]:
    """Split ``Scheme k=v, k="v"`` into (lower-case scheme, {lower-case key: unescaped value}).

    The C splitter (sipcore/_digest_c.c, when built) takes the everyday shape and gives the same
    dict, or None to leave the value to `_parse_params_py`, the reference and the one that refuses."""
    if _c_params is not None and type(value) is str:
        found = _c_params(value)
        if found is not None:
            return "digest", found
    return _parse_params_py(value, what)


def _parse_params_py(value: str | bytes | None, what: str) -> tuple[str, dict[str, str]]:
    """`_parse_params` in Python alone: the reference the C splitter is compared with."""
    if isinstance(value, bytes | bytearray):
        if len(value) > MAX_HEADER_LEN:
            raise DigestParseError(f"{what} header longer than {MAX_HEADER_LEN} bytes")
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise DigestParseError(f"{what} header is not UTF-8") from None
    if not isinstance(value, str):
        raise DigestParseError(f"{what} header missing or not text")
    if not value.isascii():
        try:  # bytes that were not UTF-8 (the parser keeps them as lone surrogates) cannot be hashed
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise DigestParseError(f"{what} header is not UTF-8") from None
    if len(value) > MAX_HEADER_LEN:
        raise DigestParseError(f"{what} header longer than {MAX_HEADER_LEN} characters")
    m = _SCHEME_RE.match(value)
    if m is None:
        raise DigestParseError(f"{what} header has no auth scheme")
    scheme = m.group(1).lower()
    if scheme != "digest":
        raise DigestParseError(f"unsupported auth scheme {m.group(1)[:32]!r}")
    body = value.rstrip(" \t\r\n")
    if body.endswith(","):
        body = body[:-1]  # tolerate one trailing comma
    start = m.end()
    if _PARAM_LIST_RE.fullmatch(body, start) is None:  # one C pass proves the list well formed...
        pos, end = start, len(body)
        while pos < end:  # ...else find where it breaks, for the message
            pm = _PARAM_RE.match(body, pos)
            if pm is None:
                raise DigestParseError(f"malformed {what} parameter at offset {pos}")
            pos = pm.end()
        raise DigestParseError(f"malformed {what} parameters")  # pragma: no cover - same grammar
    found = _PARAM_RE.findall(body, start)  # ...so these are exactly its items, in order
    if len(found) > MAX_PARAMS:
        raise DigestParseError(f"too many {what} parameters")
    params: dict[str, str] = {}
    limits = FIELD_LIMITS
    for name, quoted, bare in found:
        name = name.lower()
        # findall gives "" for a group that did not take part: a bare value is never empty
        raw = bare or quoted
        if "\\" in raw:
            raw = _UNESCAPE_RE.sub(r"\1", raw)
        if name in params:
            raise DigestParseError(f"duplicate {what} parameter {name[:32]!r}")
        if len(raw) > limits.get(name, OTHER_FIELD_LIMIT):
            raise DigestParseError(f"{what} parameter {name[:32]!r} too long")
        params[name] = raw
    return scheme, params


_digest_c = optional_extension("sipcore._digest_c")
if _digest_c is not None:
    _digest_c.setup(FIELD_LIMITS, OTHER_FIELD_LIMIT, MAX_PARAMS, MAX_HEADER_LEN)
_c_params: Callable[[str], dict[str, str] | None] | None = _digest_c.params if _digest_c else None


def parse_authorization(value: object) -> dict[str, str]:
    """Parse an Authorization / Proxy-Authorization value into lower-case params.

    Raises only :class:`DigestParseError`, whatever ``value`` is (str, bytes or None are read; the
    build's run-time type check refuses the rest with a TypeError, turned into that error too). It
    checks the grammar and the per-field bounds, and rejects duplicates (RFC 7616 §3.4: no parameter
    may appear twice). Whether the values make sense is left to :meth:`Challenger.verify`.
    """
    try:
        return _parse_params(value, "Authorization")[1]  # type: ignore[arg-type]
    except DigestParseError:
        raise
    except Exception as exc:  # defensive: hostile input must never surface another error type
        raise DigestParseError(f"unparseable Authorization header ({type(exc).__name__})") from None


def parse_challenge(value: object) -> dict[str, str]:
    """Parse a WWW-Authenticate / Proxy-Authenticate value (client side, used by tests and UAC code)."""
    try:
        return _parse_params(value, "challenge")[1]  # type: ignore[arg-type]
    except DigestParseError:
        raise
    except Exception as exc:
        raise DigestParseError(f"unparseable challenge header ({type(exc).__name__})") from None


# --- algorithms -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Algo:
    name: str  # canonical spelling for headers
    hasher: Callable[[bytes], object]
    hex_len: int
    sess: bool
    ha1_field: str
    c_code: int | None  # its number in sipcore/_digest_hash_c.c, None where only hashlib has it


def _algo_table() -> dict[str, _Algo]:
    base: dict[str, tuple[Callable[[bytes], object], int, str, int | None]] = {
        "MD5": (hashlib.md5, 32, "ha1_md5", 0),
        "SHA-256": (hashlib.sha256, 64, "ha1_sha256", 1),
    }
    try:
        hashlib.new("sha512_256", b"")
        base["SHA-512-256"] = (partial(hashlib.new, "sha512_256"), 64, "ha1_sha512_256", None)
    except ValueError:  # pragma: no cover - depends on the OpenSSL build
        pass
    table: dict[str, _Algo] = {}
    for name, (hasher, hex_len, field, code) in base.items():
        table[name.upper()] = _Algo(name, hasher, hex_len, False, field, code)
        table[f"{name}-SESS"] = _Algo(f"{name}-sess", hasher, hex_len, True, field, code)
    return table


_ALGOS = _algo_table()


def _algo(name: str) -> _Algo:
    try:
        return _ALGOS[name.upper()]
    except KeyError:
        raise DigestError(f"unsupported digest algorithm {name[:32]!r}") from None


def _h(algo: _Algo, text: str) -> str:
    return algo.hasher(text.encode("utf-8")).hexdigest()  # type: ignore[attr-defined]


_digest_hash = optional_extension("sipcore._digest_hash_c")
_c_expected: Callable[..., str] | None = _digest_hash.expected if _digest_hash else None
_c_mint: Callable[[bytes, bytes], str] | None = _digest_hash.mint if _digest_hash else None
_c_issued: Callable[[str, tuple[bytes, ...]], float | None] | None = (
    _digest_hash.issued if _digest_hash else None
)


def _expected_py(
    algo: _Algo,
    sess: bool,
    ha1: str | None,
    username: str,
    realm: str,
    password: str,
    nonce: str,
    nc: str,
    cnonce: str,
    qop: str | None,
    method: str,
    uri: str,
) -> str:
    """The response a phone holding ``password`` (or the stored, lower-case ``ha1``) must send.

    H(A1) is computed from the password even when ``ha1`` replaces it: the same work whatever the
    account, so timing does not tell a stored HA1 from a password or an unknown user. The reference
    of sipcore/_digest_hash_c.c's ``expected`` (taken for MD5 and SHA-256 when built)."""
    computed = _h(algo, f"{username}:{realm}:{password}")
    if ha1 is None:
        ha1 = computed
    if sess:
        ha1 = _h(algo, f"{ha1}:{nonce}:{cnonce}")
    ha2 = _h(algo, f"{method}:{uri}")
    if qop is None:
        return _h(algo, f"{ha1}:{nonce}:{ha2}")
    return _h(algo, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def compute_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """``H(username:realm:password)`` — what an account may store instead of its password."""
    return _h(_algo(algorithm), f"{username}:{realm}:{password}")


def compute_response(
    *,
    username: str,
    realm: str,
    nonce: str,
    method: str,
    uri: str,
    password: str | None = None,
    ha1: str | None = None,
    algorithm: str = "MD5",
    qop: str | None = "auth",
    nc: int | str = 1,
    cnonce: str = "",
) -> str:
    """Client-side response computation, exactly as a phone does it (RFC 7616 §3.4.1, RFC 2617 no-qop).

    Give ``password`` or a precomputed (non-sess) ``ha1``. ``qop=None`` gives the RFC 2069/2617 form.
    """
    algo = _algo(algorithm)
    if ha1 is None:
        if password is None:
            raise DigestError("compute_response needs a password or an ha1")
        ha1 = _h(algo, f"{username}:{realm}:{password}")
    if algo.sess:
        ha1 = _h(algo, f"{ha1.lower()}:{nonce}:{cnonce}")
    ha2 = _h(algo, f"{method}:{uri}")
    if qop is None:
        return _h(algo, f"{ha1.lower()}:{nonce}:{ha2}")
    nc_text = f"{nc:08x}" if isinstance(nc, int) else nc
    return _h(algo, f"{ha1.lower()}:{nonce}:{nc_text}:{cnonce}:{qop}:{ha2}")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_authorization(
    challenge: str | bytes,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    nc: int = 1,
    cnonce: str = "0a4f113b",
) -> str:
    """Answer one challenge header value like a phone would; returns the Authorization value.

    Uses qop=auth when offered, else the no-qop form. For the lead's SIP flow tests and UAC code.
    """
    ch = parse_challenge(challenge)
    algorithm = ch.get("algorithm", "MD5")
    realm, nonce = ch.get("realm", ""), ch.get("nonce", "")
    offered = [q.strip().lower() for q in ch.get("qop", "").split(",") if q.strip()]
    qop = "auth" if "auth" in offered else None
    response = compute_response(
        username=username,
        realm=realm,
        nonce=nonce,
        method=method,
        uri=uri,
        password=password,
        algorithm=algorithm,
        qop=qop,
        nc=nc,
        cnonce=cnonce,
    )
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(realm)}",
        f"nonce={_quote(nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
        f"algorithm={_algo(algorithm).name}",
    ]
    if qop is not None:
        parts += [f"qop={qop}", f"nc={nc:08x}", f"cnonce={_quote(cnonce)}"]
    if "opaque" in ch:
        parts.append(f"opaque={_quote(ch['opaque'])}")
    return "Digest " + ", ".join(parts)


# --- URI and identity checks -------------------------------------------------------------------------
@lru_cache(maxsize=4096)
def _uri_key(uri: str) -> tuple[str, str, str, int | None] | None:
    """(scheme, user, host, port) of a URI, parameters and headers dropped; None if unusable.

    Parsed by the SIP core's URI parser (sipcore.uri), so digest and routing agree on what a URI is.
    Remembered (bounded): every phone of a domain sends the same registrar URI.
    """
    return _parse_uri_key(uri)


def _parse_uri_key(uri: str) -> tuple[str, str, str, int | None] | None:
    uri = uri.strip()
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1]
    try:
        parsed = parse_uri(uri)
    except SipError:
        return None
    if isinstance(parsed, SipUri):
        host = parsed.host[1:-1] if parsed.host.startswith("[") else parsed.host
        return (parsed.scheme, parsed.user_unescaped or "", host.lower(), parsed.port)
    if isinstance(parsed, TelUri):
        return ("tel", unquote(parsed.number), "", None)
    return (parsed.scheme, uri.partition(":")[2].split("?", 1)[0], "", None)


def digest_uri_matches(digest_uri: str, request_uri: str) -> bool:
    """Loose RFC 3261 §22.4 comparison of the digest ``uri`` with the Request-URI.

    Equal scheme, user (percent-decoded, case-sensitive) and host (case-insensitive); ports equal
    or absent on either side; URI parameters (``;transport=…``) and headers (``?…``) ignored — phones
    disagree about them, and they do not change who the request is for.
    """
    if digest_uri == request_uri and request_uri[:1] not in ("<", " "):
        return _uri_key(request_uri) is not None  # the usual case: the phone copied the Request-URI
    a, b = _uri_key(digest_uri), _uri_key(request_uri)
    if a is None or b is None:
        return False
    if a[:3] != b[:3]:
        return False
    return a[3] is None or b[3] is None or a[3] == b[3]


def aor_matches(auth_username: str, aor_user: str | None, aliases: Collection[str] = ()) -> bool:
    """Does the To user (the AOR being registered) belong to the authenticated account?

    The registrar calls this after a successful :meth:`Challenger.verify` and answers 403 when it is
    false: the SIP username itself, or one of the account's ``aliases`` (its extension, its DIDs).
    """
    if aor_user is None:
        return False
    user = unquote(aor_user)
    return user == auth_username or user in aliases


# --- credentials and results ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Credentials:
    """What an account keeps for digest: a password and/or per-algorithm HA1 (``H(user:realm:pw)``).

    A stored HA1 is bound to the realm it was computed for.
    """

    password: str | None = None
    ha1_md5: str | None = None
    ha1_sha256: str | None = None
    ha1_sha512_256: str | None = None


CredentialsLookup = Callable[[str], Credentials | None]


class AuthReason(Enum):
    """Why a verification ended as it did. Values are stable strings for logs and metrics labels."""

    OK = "ok"
    NO_CREDENTIALS = "no credentials"
    MALFORMED = "malformed"
    WRONG_REALM = "wrong realm"
    UNKNOWN_USER = "unknown user"
    BAD_RESPONSE = "bad response"
    STALE_NONCE = "stale nonce"
    REPLAY = "replay"
    NONCE_FORGED = "nonce forged"
    ALGORITHM_UNSUPPORTED = "algorithm unsupported"
    QOP_REQUIRED = "qop required"
    URI_MISMATCH = "uri mismatch"


# Not failures for the brute-force guard: the normal first request, and an honest expired nonce.
_NOT_FAILURES = frozenset({AuthReason.OK, AuthReason.NO_CREDENTIALS, AuthReason.STALE_NONCE})
_BAD_REQUEST = frozenset({AuthReason.MALFORMED, AuthReason.URI_MISMATCH})


@fast_init
@dataclass(frozen=True, slots=True)
class NonceUse:
    """One (nonce, nc) use to record when the replay check is done at the edge (async stores)."""

    nonce: str
    nc: int
    expires_at: float


@fast_init
@dataclass(frozen=True, slots=True)
class AuthResult:
    """Outcome of :meth:`Challenger.verify`.

    ``username`` is whatever the request claimed (also on failure, for the guard's per-user count).
    ``detail`` is for logs only — never put it on the wire. UNKNOWN_USER and BAD_RESPONSE must be
    answered identically (a fresh challenge) so the wire does not reveal which users exist.
    """

    reason: AuthReason
    username: str | None = None
    stale: bool = False
    algorithm: str | None = None
    detail: str = ""
    nonce_use: NonceUse | None = None

    @property
    def ok(self) -> bool:
        return self.reason is AuthReason.OK

    @property
    def is_failure(self) -> bool:
        """Should the brute-force guard count this? (not for no credentials, stale or success)."""
        return self.reason not in _NOT_FAILURES

    @property
    def status(self) -> int | None:
        """400 for a request that is broken as written; None means "challenge again" (401/407)."""
        return 400 if self.reason in _BAD_REQUEST else None


# --- replay protection ------------------------------------------------------------------------------
class NonceCounterStore(Protocol):
    """Highest nc seen per nonce. ``observe`` returns False when ``nc`` is not above it (a replay).

    A store must also answer False for a nonce it can no longer vouch for (e.g. evicted), which makes
    the client re-authenticate with a fresh nonce rather than letting a replay through.
    """

    def observe(self, nonce: str, nc: int, expires_at: float, now: float) -> bool: ...


class MemoryNonceCounters:
    """Bounded in-process nc table. Per process only: a replay sent to another process is not seen.

    Entries die when their nonce expires. When full, the oldest entry is evicted and its expiry
    becomes a floor: unseen nonces expiring at or before it are refused (the client gets
    ``stale=true`` and a new nonce), so eviction can never re-open a replay window.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._seen: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._floor = float("-inf")
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._seen)

    def observe(self, nonce: str, nc: int, expires_at: float, now: float) -> bool:
        entry = self._seen.get(nonce)
        if entry is not None:
            if nc <= entry[0]:
                return False
            self._seen[nonce] = (nc, entry[1])
            return True
        if expires_at <= self._floor:
            return False
        self._purge(now)
        if len(self._seen) >= self.max_entries:
            _, (_, evicted_expiry) = self._seen.popitem(last=False)
            self._floor = max(self._floor, evicted_expiry)
            self.evictions += 1
            if expires_at <= self._floor:
                return False
        self._seen[nonce] = (nc, expires_at)
        return True

    def _purge(self, now: float) -> None:
        # Insertion order approximates expiry order (nonces are first used soon after issue).
        seen = self._seen
        while seen:
            nonce, (_, expires_at) = next(iter(seen.items()))
            if expires_at > now:
                break
            del seen[nonce]


# --- the challenger ----------------------------------------------------------------------------------
_NONCE_TAG = b"sipcore-nonce-v1\x00"
_TS = struct.Struct(">Q")
_SALT_LEN = 8
_BODY_LEN = _TS.size + _SALT_LEN
_MAC_LEN = 16
_DUMMY_PASSWORD = "sipcore-dummy-password-for-unknown-users"


class _Mac(Protocol):
    def copy(self) -> _Mac: ...
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


_hmac_new: Callable[[bytes, bytes, str], _Mac] | None
try:  # the C HMAC object `hmac.new` wraps: its copy/update/digest without the Python wrapper's frames
    from _hashlib import hmac_new as _hmac_new
except ImportError:  # pragma: no cover - a CPython built without OpenSSL
    _hmac_new = None


def _mac_input(secret: str | bytes, realm: str) -> tuple[bytes, bytes]:
    """(HMAC key, what every nonce's MAC input starts with: the tag and realm)."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if len(key) < 16:
        raise ValueError("digest secret must be at least 16 bytes")
    return key, _NONCE_TAG + realm.encode("utf-8") + b"\x00"


def _mac_base(secret: str | bytes, realm: str) -> _Mac:
    """HMAC-SHA-256 keyed with ``secret``, already fed the tag and realm: copied for each nonce."""
    key, prefix = _mac_input(secret, realm)
    if _hmac_new is not None:
        try:
            return _hmac_new(key, prefix, "sha256")  # type: ignore[no-any-return]
        except ValueError:  # pragma: no cover - an OpenSSL that refuses it (FIPS): hmac's own way
            pass
    return hmac.new(key, prefix, hashlib.sha256)


# nonces are base64url without padding (RFC 4648 §5); binascii's standard alphabet, translated
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


class Challenger:
    """Issues challenges and verifies credentials for one realm.

    ``algorithms`` are offered in order (SHA-256 first: RFC 8760 says clients pick the first they
    support). ``previous_secrets`` still verify (stale only when expired) during a secret rotation.
    Replays are checked against ``nonce_counters`` (a bounded in-memory table by default);
    ``check_replay=False`` leaves that to the caller (e.g. an async Redis store) via
    ``AuthResult.nonce_use``.
    """

    def __init__(
        self,
        realm: str,
        secret: str | bytes,
        nonce_ttl: float = 300.0,
        algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
        *,
        allow_no_qop: bool = True,
        check_replay: bool = True,
        nonce_counters: NonceCounterStore | None = None,
        previous_secrets: Collection[str | bytes] = (),
        max_clock_skew: float = 30.0,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not realm or '"' in realm or "\\" in realm or len(realm) > FIELD_LIMITS["realm"]:
            raise ValueError("realm must be non-empty, short, without quotes or backslashes")
        if nonce_ttl <= 0:
            raise ValueError("nonce_ttl must be positive")
        if not algorithms:
            raise ValueError("at least one algorithm is required")
        self.realm = realm
        self.nonce_ttl = float(nonce_ttl)
        self.algorithms = tuple(_algo(a) for a in algorithms)
        self.allow_no_qop = allow_no_qop
        self.max_clock_skew = max_clock_skew
        # salts are cut from blocks of 512: one getrandom() per 512 nonces, not per nonce; a forked
        # worker starts from a block of its own (sipcore.randomness)
        self._salts = BlockSource(_SALT_LEN, 512, random_bytes)
        secrets = [secret, *previous_secrets]
        self._macs = [_mac_base(s, realm) for s in secrets]
        # the same keys, keyed once, for sipcore/_digest_hash_c.c (None: the hmac objects alone)
        self._c_keys = (
            tuple(_digest_hash.nonce_key(*_mac_input(s, realm)) for s in secrets) if _digest_hash else None
        )
        if check_replay and nonce_counters is None:
            nonce_counters = MemoryNonceCounters()
        self.nonce_counters: NonceCounterStore | None = nonce_counters if check_replay else None
        self._offered = {a.name.upper(): a for a in self.algorithms}
        quoted_realm = _quote(realm)
        self._templates = [
            (f'Digest realm={quoted_realm}, nonce="', f'", algorithm={a.name}, qop="auth"')
            for a in self.algorithms
        ]

    # -- nonces --
    def make_nonce(self, now: float) -> str:
        """A fresh stateless nonce for ``now`` (Unix seconds)."""
        body = _TS.pack(max(0, int(now * 1000))) + self._salts.take()
        keys = self._c_keys
        if keys is not None and _c_mint is not None and len(body) == _BODY_LEN:  # (else: Python's)
            return _c_mint(keys[0], body)
        return self._mint_py(body)

    def _mint_py(self, body: bytes) -> str:
        """`make_nonce` with hmac and binascii: the reference of the C ``mint``."""
        mac = self._macs[0].copy()
        mac.update(body)
        # 32 bytes: 43 characters and one "=" of padding, dropped
        text = binascii.b2a_base64(body + mac.digest()[:_MAC_LEN], newline=False)
        return text.translate(_TO_URLSAFE)[:-1].decode("ascii")

    def nonce_issued_at(self, nonce: str) -> float | None:
        """Issue time of a genuine nonce (any accepted secret), or None if it is not ours."""
        keys = self._c_keys
        if keys is not None and _c_issued is not None and type(nonce) is str:
            return _c_issued(nonce, keys)
        return self._nonce_issued_at_py(nonce)

    def _nonce_issued_at_py(self, nonce: str) -> float | None:
        """`nonce_issued_at` with hmac and binascii: the reference of the C ``issued``."""
        # 43 chars carry 258 bits for 256: the last one must have its 2 spare bits clear, so one
        # nonce has exactly one spelling (one entry in the nc table).
        if len(nonce) != 43 or nonce[-1] not in _CANONICAL_LAST or not _NONCE_RE.fullmatch(nonce):
            return None
        raw = binascii.a2b_base64(nonce.encode("ascii").translate(_FROM_URLSAFE) + b"=")
        body, tag = raw[:-_MAC_LEN], raw[-_MAC_LEN:]
        for base in self._macs:
            mac = base.copy()
            mac.update(body)
            if hmac.compare_digest(mac.digest()[:_MAC_LEN], tag):
                return _TS.unpack_from(body)[0] / 1000.0
        return None

    # -- challenge --
    def challenge(self, now: float, stale: bool = False) -> list[str]:
        """Header values for WWW-Authenticate (401) or Proxy-Authenticate (407), preferred first.

        One nonce for all values; nothing here depends on who is asking.
        """
        nonce = self.make_nonce(now)
        tail = ", stale=true" if stale else ""
        return [f"{head}{nonce}{rest}{tail}" for head, rest in self._templates]

    # -- verification --
    def verify(
        self,
        authorization: str | bytes | None,
        method: str,
        credentials_lookup: CredentialsLookup,
        now: float,
        *,
        request_uri: str | None = None,
    ) -> AuthResult:
        """Check one Authorization value. Pass ``request_uri`` to enforce the digest-uri rule."""
        if authorization is None or (isinstance(authorization, str | bytes) and not authorization.strip()):
            return AuthResult(AuthReason.NO_CREDENTIALS)
        try:
            p = parse_authorization(authorization)
        except DigestParseError as exc:
            return AuthResult(AuthReason.MALFORMED, detail=exc.reason)

        if "username*" in p or "userhash" in p:
            try:
                username = _username(p)
            except DigestParseError as exc:
                return AuthResult(AuthReason.MALFORMED, detail=exc.reason)
        else:
            username = p.get("username")
        realm, nonce, uri, response = p.get("realm"), p.get("nonce"), p.get("uri"), p.get("response")
        if username is None or realm is None or nonce is None or uri is None or response is None:
            missing = [k for k in ("realm", "nonce", "uri", "response") if k not in p]
            if username is None:
                missing.insert(0, "username")
            return AuthResult(AuthReason.MALFORMED, username, detail="missing " + ", ".join(missing))
        if realm != self.realm:
            return AuthResult(AuthReason.WRONG_REALM, username, detail=f"realm {realm[:64]!r}")

        algo_name = p.get("algorithm", "MD5")
        algo = self._offered.get(algo_name) or self._offered.get(algo_name.upper())
        if algo is None:
            return AuthResult(AuthReason.ALGORITHM_UNSUPPORTED, username, detail=algo_name[:32])
        if len(response) != algo.hex_len or not _HEX_RE.fullmatch(response):
            return AuthResult(
                AuthReason.MALFORMED, username, algorithm=algo.name, detail="response not hex digest"
            )

        qop = p.get("qop")
        nc_value = 0
        cnonce = p.get("cnonce", "")
        nc_text = p.get("nc", "")
        if qop is not None:
            if qop != "auth" and qop.lower() != "auth":
                return AuthResult(AuthReason.MALFORMED, username, algorithm=algo.name, detail="qop not auth")
            if not nc_text or not cnonce or not _NC_RE.fullmatch(nc_text):
                return AuthResult(AuthReason.MALFORMED, username, algorithm=algo.name, detail="bad nc/cnonce")
            nc_value = int(nc_text, 16)
            if nc_value == 0:
                return AuthResult(AuthReason.MALFORMED, username, algorithm=algo.name, detail="nc is zero")
        else:
            if not self.allow_no_qop:
                return AuthResult(AuthReason.QOP_REQUIRED, username, algorithm=algo.name)
            if algo.sess:
                return AuthResult(AuthReason.MALFORMED, username, algorithm=algo.name, detail="sess w/o qop")

        issued = self.nonce_issued_at(nonce)
        if issued is None or issued > now + self.max_clock_skew:
            return AuthResult(AuthReason.NONCE_FORGED, username, algorithm=algo.name)
        if request_uri is not None and not digest_uri_matches(uri, request_uri):
            return AuthResult(AuthReason.URI_MISMATCH, username, algorithm=algo.name, detail=uri[:128])

        # Same work whatever the account: one A1 hash, one A2 hash, one response hash, one compare.
        creds = credentials_lookup(username)
        password = creds.password if creds is not None and creds.password is not None else _DUMMY_PASSWORD
        stored = getattr(creds, algo.ha1_field) if creds is not None else None
        usable = creds is not None and (stored is not None or creds.password is not None)
        if stored is not None:
            stored = stored.lower()
        code = algo.c_code
        if code is not None and _c_expected is not None:
            expected = _c_expected(
                code, algo.sess, stored, username, realm, password, nonce, nc_text, cnonce, qop, method, uri
            )
        else:
            expected = _expected_py(
                algo, algo.sess, stored, username, realm, password, nonce, nc_text, cnonce, qop, method, uri
            )
        matched = hmac.compare_digest(expected.encode("ascii"), response.lower().encode("ascii"))
        if creds is None:
            return AuthResult(AuthReason.UNKNOWN_USER, username, algorithm=algo.name)
        if not matched or not usable:
            detail = "" if usable else f"account has no password or {algo.name} HA1"
            return AuthResult(AuthReason.BAD_RESPONSE, username, algorithm=algo.name, detail=detail)

        expires_at = issued + self.nonce_ttl
        if now >= expires_at:
            return AuthResult(AuthReason.STALE_NONCE, username, stale=True, algorithm=algo.name)
        use = NonceUse(nonce, nc_value, expires_at) if qop is not None else None
        if (
            use is not None
            and self.nonce_counters is not None
            and not self.nonce_counters.observe(nonce, nc_value, expires_at, now)
        ):
            return AuthResult(AuthReason.REPLAY, username, stale=True, algorithm=algo.name)
        return AuthResult(AuthReason.OK, username, algorithm=algo.name, nonce_use=use)


def _username(p: dict[str, str]) -> str | None:
    """``username`` or RFC 7616 ``username*=UTF-8''…``; userhash is not offered so it is refused."""
    if p.get("userhash", "false").lower() != "false":
        raise DigestParseError("userhash not supported")
    plain, extended = p.get("username"), p.get("username*")
    if plain is not None and extended is not None:
        raise DigestParseError("both username and username*")
    if extended is None:
        return plain
    charset, sep, rest = extended.partition("'")
    _lang, sep2, encoded = rest.partition("'")
    if not (sep and sep2) or charset.upper() != "UTF-8":
        raise DigestParseError("username* is not UTF-8''…")
    try:
        return unquote(encoded, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise DigestParseError("username* is not valid UTF-8") from None
