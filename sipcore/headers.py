"""Header names and structured header values (Via, name-addr, CSeq, generic parameters).

Names: compact forms map to their full form; lookups use lower-case full names. Values of list headers
split on commas outside quotes and angle brackets. Structured values keep the text they came from so an
untouched header is forwarded as received.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from .errors import SipParseError
from .grammar import DIGITS_RE, TOKEN_CHARS, VIA_RE, digits_value, is_host, is_token, split_plain_params
from .speedups import optional_extension
from .uri import SipUri, Uri, parse_uri

COMPACT = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "u": "allow-events",
    "x": "session-expires",
    "y": "identity",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
}

CANONICAL = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rseq": "RSeq",
    "rack": "RAck",
    "p-asserted-identity": "P-Asserted-Identity",
    "p-preferred-identity": "P-Preferred-Identity",
}

# Headers whose values are comma-separated lists (RFC 3261 §7.3.1); others are never split.
LIST_HEADERS = frozenset(
    {
        "via", "contact", "route", "record-route", "allow", "supported", "require", "proxy-require",
        "unsupported", "accept", "accept-encoding", "accept-language", "content-encoding",
        "content-language", "in-reply-to", "warning", "alert-info", "call-info", "error-info",
        "allow-events", "path", "service-route", "history-info", "diversion", "p-asserted-identity",
    }
)  # fmt: skip

# Headers that may appear once only; several occurrences make the message malformed (RFC 4475 multi01).
SINGLE_HEADERS = frozenset(
    {"call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type", "expires"}
)


def canonical_name(key: str) -> str:
    """Display form of a lower-case full header name (memoised for names seen, bounded)."""
    name = CANONICAL.get(key)
    if name is None:
        name = "-".join(p.capitalize() for p in key.split("-"))
        if len(CANONICAL) < 1024:
            CANONICAL[key] = name
    return name


def _split_outside_angles(value: str) -> list[str]:
    """split_list for a value without quotes: commas inside <...> are skipped by jumping to '>'."""
    out: list[str] = []
    start = pos = 0
    while True:
        c = value.find(",", pos)
        if c < 0:
            break
        if value.rfind("<", 0, c) > value.rfind(">", 0, c):  # inside <...>
            close = value.find(">", c)
            if close < 0:
                break
            pos = close + 1
            continue
        out.append(value[start:c].strip())
        start = pos = c + 1
    out.append(value[start:].strip())
    return out


def split_list(value: str) -> list[str]:
    """Split a list header value on commas that are outside quotes and <...>."""
    if "," not in value:
        return [value.strip()]
    if '"' not in value:  # no quoting: only <...> can hide a comma, so split with C-level str methods
        if "<" not in value:
            return [v.strip() for v in value.split(",")]
        return _split_outside_angles(value)
    out: list[str] = []
    start = 0
    in_quote = False
    in_angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            out.append(value[start:i].strip())
            start = i + 1
        i += 1
    if in_quote:
        raise SipParseError("unbalanced quotes in header value")
    out.append(value[start:].strip())
    return out


def parse_params(text: str) -> list[tuple[str, str | None]]:
    """Parse ``;name=value;flag`` (text starts at the first ';' or is empty); quoted values allowed."""
    if '"' not in text:
        return _parse_params_simple(text)
    params: list[tuple[str, str | None]] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in " \t":
            i += 1
            continue
        if ch != ";":
            raise SipParseError("garbage where a parameter was expected")
        i += 1
        j = i
        while j < n and text[j] not in "=;":
            j += 1
        name = text[i:j].strip()
        if not name or not is_token(name):
            raise SipParseError("empty or invalid parameter name")
        value: str | None = None
        if j < n and text[j] == "=":
            j += 1
            while j < n and text[j] in " \t":
                j += 1
            if j < n and text[j] == '"':
                k = j + 1
                while k < n and text[k] != '"':
                    k += 2 if text[k] == "\\" else 1
                if k >= n:
                    raise SipParseError("unterminated quoted parameter value")
                value = text[j : k + 1]
                j = k + 1
            else:
                k = j
                while k < n and text[k] != ";":
                    k += 1
                value = text[j:k].strip()
                if not value or " " in value or "\t" in value:
                    raise SipParseError(f"invalid value for parameter {name!r}")
                j = k
        params.append((name, value))
        i = j
    return params


def _parse_params_simple(text: str) -> list[tuple[str, str | None]]:
    """Fast path of parse_params for the usual case: no quoted values."""
    text = text.strip()
    if not text:
        return []
    if text[0] != ";":
        raise SipParseError("garbage where a parameter was expected")
    params: list[tuple[str, str | None]] = []
    for part in text[1:].split(";"):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not name or not is_token(name):
            raise SipParseError("empty or invalid parameter name")
        if eq:
            value = value.strip()
            if not value or " " in value or "\t" in value:
                raise SipParseError(f"invalid value for parameter {name!r}")
            params.append((name, value))
        else:
            params.append((name, None))
    return params


def get_param(params: list[tuple[str, str | None]], name: str) -> str | None:
    for k, v in params:
        if k.lower() == name:
            return "" if v is None else v
    return None


def param_map(params: list[tuple[str, str | None]]) -> dict[str, str]:
    """Lower-case name -> value ('' for a flag), first occurrence winning: what get_param answers,
    built once so each later lookup is one dict probe."""
    out: dict[str, str] = {}
    for k, v in params:
        k = k.lower()
        if k not in out:
            out[k] = "" if v is None else v
    return out


def format_params(params: list[tuple[str, str | None]]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


# A Via value as nearly every element writes it: "SIP/2.0/UDP host[:port][;name[=value]]*" with a
# valid hostname or IPv4 (the sent-by grammar of HOST_RE), token parameter names and values without
# whitespace or quotes. What it accepts, Via.parse's general path accepts with the same result; the
# rest (LWS around the slashes, IPv6, quoted values) takes the general path.
_VIA_PLAIN = re.compile(
    rf"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9.])?)(?::([0-9]{{1,5}}))?"
    rf"((?:;[{TOKEN_CHARS}]+(?:=[^;\s\"]+)?)*)\Z"
).match

# The everyday Via read in C (sipcore/_message_c.c `via`), when built: (transport, host, port, params)
# as `Via.parse` below builds them, or None to leave the text to it (tests/sipcore/test_via_c.py).
_message_c = optional_extension("sipcore._message_c")
_c_via: Callable[[str], tuple[str, str, int | None, list[tuple[str, str | None]]] | None] | None = (
    _message_c.via if _message_c is not None else None
)


class Via:
    """One Via value: sent-protocol, sent-by and parameters (branch, received, rport, …)."""

    __slots__ = ("_pmap", "host", "params", "port", "raw", "transport")

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None,
        params: list[tuple[str, str | None]],
        raw: str | None = None,
    ) -> None:
        self.transport = transport
        self.host = host
        self.port = port
        self.params = params
        self.raw = raw
        self._pmap: dict[str, str] | None = None

    @classmethod
    def parse(cls, text: str) -> Via:
        if _c_via is not None:
            found = _c_via(text)
            if found is not None:
                return cls(*found, text)
        return cls.parse_py(text)

    @classmethod
    def parse_py(cls, text: str) -> Via:
        """`parse` in Python alone: the reference the C reader is compared with."""
        m = _VIA_PLAIN(text)
        if m is not None:  # the usual spelling: no whitespace but the one space, no quoted parameter
            transport, host, port_text, rest = m.groups()
            port = None
            if port_text is not None:
                port = int(port_text)
                if port > 65535:
                    raise SipParseError("Via port out of range")
            return cls(transport.upper(), host, port, split_plain_params(rest), text)
        return cls.parse_general(text)

    @classmethod
    def parse_general(cls, text: str) -> Via:
        """Every Via the grammar allows (LWS, IPv6 references, quoted parameter values)."""
        m = VIA_RE.match(text)
        if m is None:
            raise SipParseError("malformed Via header")
        transport, host, port_text, rest = m.groups()
        if not is_host(host):
            raise SipParseError("malformed Via sent-by host")
        port = None
        if port_text is not None:
            port = int(port_text)
            if port > 65535:
                raise SipParseError("Via port out of range")
        params = parse_params(rest.rstrip()) if rest else []
        return cls(transport.upper(), host, port, params, text)

    def param(self, name: str) -> str | None:
        """Value of a parameter ('' for a flag), None when absent (``name`` in lower case)."""
        pmap = self._pmap
        if pmap is None:
            pmap = self._pmap = param_map(self.params)
        return pmap.get(name)

    @property
    def branch(self) -> str | None:
        return self.param("branch")

    @property
    def received(self) -> str | None:
        return self.param("received")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host.lower(), self.port

    def with_params(self, **changes: str | None) -> Via:
        """A copy with parameters set (value None means a value-less flag such as ``rport``)."""
        params = [(k, v) for k, v in self.params if k.lower() not in changes]
        params.extend(changes.items())
        return Via(self.transport, self.host, self.port, params)

    def __str__(self) -> str:
        if self.raw is not None:
            return self.raw
        hp = self.host if self.port is None else f"{self.host}:{self.port}"
        self.raw = f"SIP/2.0/{self.transport} {hp}{format_params(self.params)}"
        return self.raw


class NameAddr:
    """From/To/Contact/Route value: optional display name, URI, header parameters (tag, expires, q…)."""

    __slots__ = ("_pmap", "_uri", "display", "params", "raw", "uri_text")

    def __init__(
        self,
        display: str | None,
        uri_text: str,
        params: list[tuple[str, str | None]],
        raw: str | None = None,
        uri: Uri | None = None,
    ) -> None:
        self.display = display
        self.uri_text = uri_text
        self.params = params
        self.raw = raw
        self._uri = uri
        self._pmap: dict[str, str] | None = None

    @property
    def uri(self) -> Uri:
        if self._uri is None:
            self._uri = parse_uri(self.uri_text)
        return self._uri

    @property
    def sip_uri(self) -> SipUri | None:
        uri = self.uri
        return uri if isinstance(uri, SipUri) else None

    @property
    def tag(self) -> str | None:
        return self.param("tag")

    def param(self, name: str) -> str | None:
        """Value of a header parameter ('' for a flag), None when absent (``name`` in lower case)."""
        pmap = self._pmap
        if pmap is None:
            pmap = self._pmap = param_map(self.params)
        return pmap.get(name)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Memoised by text for NameAddr itself (bounded): From and To repeat in every request of a
        dialog. Values are never changed after parsing (``with_tag`` makes a new one)."""
        return _parse_name_addr(text) if cls is NameAddr else cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> NameAddr:
        text = text.strip()
        if not text:
            raise SipParseError("empty address header")
        display: str | None = None
        rest = text
        if text[0] == '"':
            n = len(text)
            i = text.find('"', 1)
            if "\\" in text[1 : i if i > 0 else n]:
                i = 1
                while i < n and text[i] != '"':
                    i += 2 if text[i] == "\\" else 1
            if i < 0 or i >= n:
                raise SipParseError("unbalanced quotes in display name")
            display = text[: i + 1]
            rest = text[i + 1 :].lstrip()
            if not rest.startswith("<"):
                raise SipParseError("quoted display name without <URI>")
        lt = rest.find("<")
        if lt >= 0:
            if display is None and lt > 0:
                display = rest[:lt].strip()
                for word in display.split():
                    if not is_token(word):
                        raise SipParseError("display name must be quoted")
            gt = rest.find(">", lt)
            if gt < 0:
                raise SipParseError("unterminated <URI>")
            uri_text = rest[lt + 1 : gt]
            if uri_text != uri_text.strip():
                raise SipParseError("whitespace inside <URI>")
            if ":" not in uri_text:
                raise SipParseError("URI without a scheme")
            params = parse_params(rest[gt + 1 :].strip())
            return cls(display, uri_text, params, text)  # URI parsed on first use
        # addr-spec form: the URI cannot carry ';' params or '?' headers (they belong to the header)
        uri_text, semi, ptext = rest.partition(";")
        uri_text = uri_text.strip()
        if "?" in uri_text or "," in uri_text:
            raise SipParseError("URI with headers must be enclosed in <>")
        if " " in uri_text:
            raise SipParseError("display name must be followed by <URI>")
        uri = parse_uri(uri_text)
        params = parse_params(";" + ptext) if semi else []
        return cls(None, uri_text, params, text, uri)

    def with_tag(self, tag: str) -> NameAddr:
        params = [(k, v) for k, v in self.params if k.lower() != "tag"]
        params.append(("tag", tag))
        return NameAddr(self.display, self.uri_text, params, None, self._uri)

    def __str__(self) -> str:
        if self.raw is not None:
            return self.raw
        dn = f"{self.display} " if self.display else ""
        self.raw = f"{dn}<{self.uri_text}>{format_params(self.params)}"
        return self.raw


# NameAddr.parse for NameAddr itself, remembered by text (bounded)
_parse_name_addr = lru_cache(maxsize=4096)(NameAddr._parse)


class Contact(NameAddr):
    """Contact value; ``star`` is the wildcard of a REGISTER that removes every binding."""

    __slots__ = ("star",)

    def __init__(
        self,
        display: str | None,
        uri_text: str,
        params: list[tuple[str, str | None]],
        raw: str | None = None,
        uri: Uri | None = None,
        star: bool = False,
    ) -> None:
        super().__init__(display, uri_text, params, raw, uri)
        self.star = star

    @classmethod
    def parse(cls, text: str) -> Contact:
        if text.strip() == "*":
            return cls(None, "*", [], "*", None, star=True)
        na = NameAddr.parse(text)
        return cls(na.display, na.uri_text, na.params, na.raw, na._uri)

    @property
    def expires(self) -> int | None:
        value = self.param("expires")
        if value is None:
            return None
        if not DIGITS_RE.match(value):
            raise SipParseError("invalid Contact expires parameter")
        return min(digits_value(value), 2**32 - 1)

    @property
    def q(self) -> int | None:
        """q-value in thousandths (0..1000), None when absent."""
        value = self.param("q")
        if value is None:
            return None
        return parse_qvalue(value)


def parse_qvalue(text: str) -> int:
    """qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ) → thousandths."""
    whole, dot, frac = text.partition(".")
    if whole not in ("0", "1") or (dot and (len(frac) > 3 or (frac and not frac.isdigit()))):
        raise SipParseError("invalid q-value")
    value = int(whole) * 1000 + (int(frac.ljust(3, "0")) if frac else 0)
    if value > 1000:
        raise SipParseError("q-value above 1")
    return value


@lru_cache(maxsize=1024)
def parse_cseq(text: str) -> tuple[int, str]:
    """``(number, method)``; remembered (bounded): "1 INVITE", "2 ACK" … recur in every call."""
    number, _, method = text.strip().partition(" ")
    method = method.strip()
    if not DIGITS_RE.match(number) or not method or not is_token(method):
        raise SipParseError("malformed CSeq header")
    value = digits_value(number)
    if value >= 2**31:
        raise SipParseError("CSeq number out of range")
    return value, method


def parse_uint(text: str, what: str, limit: int = 2**32 - 1) -> int:
    text = text.strip()
    if not DIGITS_RE.match(text):
        raise SipParseError(f"malformed {what} header")
    value = digits_value(text)
    if value > limit:
        raise SipParseError(f"{what} out of range")
    return value
