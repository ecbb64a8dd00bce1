"""SIP, SIPS, tel and other URIs (RFC 3261 §19.1, RFC 3966, RFC 5118 for IPv6 references).

A URI keeps the text it was parsed from: ``str(uri)`` returns it unchanged until a field is replaced,
so what a proxy forwards is byte-exact (unknown parameters and escaped headers included).
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import unquote

from .errors import SipParseError
from .grammar import DIGITS_RE, TOKEN_CHARS, digits_value, is_host, is_token, split_plain_params

DEFAULT_PORTS = {"sip": 5060, "sips": 5061}
_FORBIDDEN = re.compile(r'[ \t\r\n<>"]').search  # characters no URI may hold unescaped


def _split_params(text: str) -> list[tuple[str, str | None]]:
    """Split ``;a=b;c`` (leading ';' already removed) into ordered (name, value) pairs."""
    out: list[tuple[str, str | None]] = []
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not name:
            raise SipParseError("empty URI parameter")
        out.append((name, value.strip() if eq else None))
    return out


class SipUri:
    """sip:/sips: URI. Parameter names compare case-insensitively; values are kept as sent."""

    __slots__ = ("_raw", "headers", "host", "params", "password", "port", "scheme", "user")

    def __init__(
        self,
        scheme: str,
        user: str | None,
        host: str,
        port: int | None = None,
        params: list[tuple[str, str | None]] | None = None,
        headers: str | None = None,
        password: str | None = None,
        raw: str | None = None,
    ) -> None:
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = params if params is not None else []
        self.headers = headers
        self._raw = raw

    # --- parameters -------------------------------------------------------------------------
    def param(self, name: str) -> str | None:
        """Value of a parameter ('' for a value-less one), None when absent."""
        name = name.lower()
        for k, v in self.params:
            if k.lower() == name:
                return "" if v is None else v
        return None

    def has_param(self, name: str) -> bool:
        name = name.lower()
        return any(k.lower() == name for k, _ in self.params)

    @property
    def transport(self) -> str | None:
        t = self.param("transport")
        return t.lower() if t else None

    @property
    def target_transport(self) -> str:
        """The transport a request to this URI takes (RFC 3263 without DNS): its ``transport``
        parameter, else TLS for ``sips:`` and UDP for ``sip:``."""
        return self.transport or ("tls" if self.scheme == "sips" else "udp")

    @property
    def target_port(self) -> int:
        """The URI's port, else the scheme's default (5061 for ``sips:``, 5060 for ``sip:``)."""
        return self.port or DEFAULT_PORTS.get(self.scheme, 5060)

    @property
    def lr(self) -> bool:
        return self.has_param("lr")

    @property
    def host_lower(self) -> str:
        return self.host.lower()

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else unquote(self.user, errors="surrogateescape")

    def effective_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS.get(self.scheme, 5060)

    def replace(self, **changes: object) -> SipUri:
        """A copy with some fields replaced (the copy serialises from its fields)."""
        fields = {
            "scheme": self.scheme,
            "user": self.user,
            "host": self.host,
            "port": self.port,
            "params": list(self.params),
            "headers": self.headers,
            "password": self.password,
        }
        fields.update(changes)  # type: ignore[arg-type]
        return SipUri(**fields)  # type: ignore[arg-type]

    def aor(self) -> str:
        """Canonical address-of-record key: scheme:user@host, user unescaped, host lower-cased."""
        user = self.user_unescaped
        return (
            f"{self.scheme}:{user}@{self.host.lower()}"
            if user is not None
            else f"{self.scheme}:{self.host.lower()}"
        )

    def __str__(self) -> str:
        if self._raw is not None:
            return self._raw
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        for k, v in self.params:
            out.append(f";{k}" if v is None else f";{k}={v}")
        if self.headers is not None:
            out.append("?" + self.headers)
        self._raw = "".join(out)
        return self._raw

    def __repr__(self) -> str:
        return f"SipUri({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        """RFC 3261 §19.1.4 comparison (user/password case-sensitive after unescaping, host not)."""
        if not isinstance(other, SipUri):
            return NotImplemented
        if self.scheme != other.scheme or self.host.lower() != other.host.lower():
            return False
        if self.user_unescaped != other.user_unescaped or self.port != other.port:
            return False
        mine = {k.lower(): v for k, v in self.params}
        theirs = {k.lower(): v for k, v in other.params}
        for special in ("user", "ttl", "method", "maddr", "transport"):
            if (special in mine) != (special in theirs):
                return False
        for k in mine.keys() & theirs.keys():
            a, b = mine[k], theirs[k]
            if (a or "").lower() != (b or "").lower():
                return False
        return True

    def __hash__(self) -> int:
        return hash((self.scheme, self.user_unescaped, self.host.lower(), self.port))


class TelUri:
    """tel: URI (RFC 3966): the number and its parameters."""

    __slots__ = ("number", "params", "raw")
    scheme = "tel"

    def __init__(self, number: str, params: list[tuple[str, str | None]], raw: str) -> None:
        self.number = number
        self.params = params
        self.raw = raw

    def __str__(self) -> str:
        return self.raw

    def __repr__(self) -> str:
        return f"TelUri({self.raw!r})"


class AbsoluteUri:
    """Any other scheme: kept opaque (a proxy answers 416 for schemes it does not route)."""

    __slots__ = ("raw", "scheme")

    def __init__(self, scheme: str, raw: str) -> None:
        self.scheme = scheme
        self.raw = raw

    def __str__(self) -> str:
        return self.raw

    def __repr__(self) -> str:
        return f"AbsoluteUri({self.raw!r})"


Uri = SipUri | TelUri | AbsoluteUri


def _scheme_ok(scheme: str) -> bool:
    if scheme == "sip" or scheme == "sips":
        return True
    return bool(scheme) and scheme[0].isalpha() and all(c.isalnum() or c in "+-." for c in scheme)


@lru_cache(maxsize=4096)
def parse_uri(text: str) -> Uri:
    """Parse a URI as found in a Request-URI or inside <...>. Raises SipParseError (400).

    Remembered by text (bounded): the same URIs come back in every message of a dialog and in every
    call to a phone. URI objects are never changed after parsing (``replace`` makes a new one), so
    one parsed value can be shared."""
    if not text or _FORBIDDEN(text) is not None:
        raise SipParseError("malformed URI")
    scheme, colon, rest = text.partition(":")
    if not colon or not _scheme_ok(scheme):
        raise SipParseError("URI without a valid scheme")
    low = scheme.lower()
    if low in ("sip", "sips"):
        return _parse_sip(low, rest, text)
    if low == "tel":
        number, _, ptext = rest.partition(";")
        if not number:
            raise SipParseError("tel URI without a number")
        return TelUri(number, _split_params(ptext) if ptext else [], text)
    return AbsoluteUri(low, text)


# "[user@]host[:port][;name[=value]]*" with a plain user (no ':', ';', '?' or '@'), a hostname or
# IPv4 of HOST_RE's grammar, token parameter names and no headers: what nearly every URI looks like.
# What it accepts, _parse_sip_general accepts with the same result.
_SIP_PLAIN = re.compile(
    r"(?:([^@:;?\s]+)@)?([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9.])?)(?::([0-9]{1,5}))?"
    rf"((?:;[{TOKEN_CHARS}]+(?:=[^;?@\s]*)?)*)\Z"
).match


def _parse_sip(scheme: str, rest: str, raw: str) -> SipUri:
    m = _SIP_PLAIN(rest)
    if m is None:
        return _parse_sip_general(scheme, rest, raw)
    user, host, port_text, ptext = m.groups()
    port = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            raise SipParseError("port out of range in URI")
    return SipUri(scheme, user, host, port, split_plain_params(ptext), None, None, raw)


def _parse_sip_general(scheme: str, rest: str, raw: str) -> SipUri:
    # '@' cannot appear unescaped in parameters or headers, so the last one ends the userinfo
    # (whose user part may itself hold '?' and ';', RFC 4475 intmeth/semiuri).
    user = password = None
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        if not userinfo:
            raise SipParseError("empty user part in SIP URI")
        user, pcolon, pw = userinfo.partition(":")
        if pcolon:
            password = pw
    rest, q, headers = rest.partition("?")
    hostport, semi, ptext = rest.partition(";")
    port: int | None = None
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise SipParseError("unterminated IPv6 reference in URI")
        host, after = hostport[: end + 1], hostport[end + 1 :]
        if after:
            if not after.startswith(":"):
                raise SipParseError("garbage after IPv6 reference in URI")
            port = _port(after[1:])
    else:
        host, pc, ptxt = hostport.partition(":")
        if pc:
            port = _port(ptxt)
    if not is_host(host):
        raise SipParseError(f"invalid host in SIP URI: {host[:40]!r}")
    params = _split_params(ptext) if semi else []
    for name, _ in params:
        if not is_token(name):
            raise SipParseError("invalid URI parameter name")
    return SipUri(scheme, user, host, port, params, headers if q else None, password, raw)


def _port(text: str) -> int:
    if not DIGITS_RE.match(text):
        raise SipParseError("invalid port in URI")
    value = digits_value(text)
    if value > 65535:
        raise SipParseError("port out of range in URI")
    return value
