"""RFC 3261 §25 grammar fragments, built once from named pieces (as h11's _abnf.py does for HTTP)."""

from __future__ import annotations

import re
from functools import lru_cache

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
token = rf"[{TOKEN_CHARS}]+"
# word additionally allows ( ) < > : \ " / [ ] ? { }
WORD_CHARS = TOKEN_CHARS + r"()<>:\\\"/\[\]?{}"
word = rf"[{WORD_CHARS}]+"
LWS = r"[ \t]*"
hexdigit = r"[0-9A-Fa-f]"
# IPv6reference is "[" IPv6address "]"; we accept hex, ':' and '.' (RFC 5118 §4.10 asks to tolerate
# the historical three-colon form) and let ipaddress reject nonsense where it matters.
ipv6_reference = r"\[[0-9A-Fa-f:.]+\]"
hostname = r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?|[A-Za-z0-9]"
host = rf"(?:{ipv6_reference}|{hostname})"
port = r"[0-9]{1,5}"

TOKEN_RE = re.compile(rf"^{token}$")
WORD_RE = re.compile(rf"^{word}(?:@{word})?$")
HOST_RE = re.compile(rf"^{host}$")
SIP_VERSION_RE = re.compile(r"^SIP/(\d+)\.(\d+)$", re.IGNORECASE)
STATUS_CODE_RE = re.compile(r"^[1-6][0-9][0-9]$")
# sent-protocol / sent-by with LWS allowed around the slashes (RFC 4475 wsinv)
VIA_RE = re.compile(
    rf"^SIP{LWS}/{LWS}[0-9]+\.[0-9]+{LWS}/{LWS}({token})[ \t]+({ipv6_reference}|[A-Za-z0-9\-.]+)"
    rf"(?:{LWS}:{LWS}([0-9]+))?{LWS}(.*)$",
    re.IGNORECASE | re.DOTALL,
)
DIGITS_RE = re.compile(r"^[0-9]+$")


# Token and host checks remembered (bounded): method names, header and parameter names and the hosts
# of phones and servers repeat on nearly every message, and a cache probe is cheaper than a match.
@lru_cache(maxsize=4096)
def is_token(text: str) -> bool:
    return TOKEN_RE.match(text) is not None


@lru_cache(maxsize=4096)
def is_host(text: str) -> bool:
    return HOST_RE.match(text) is not None


_BEYOND = 10**20  # above every limit SIP puts on a number (no SIP number has 20 digits)


def digits_value(text: str) -> int:
    """int() of ASCII digits (checked by the caller) of any length. int() refuses more than 4,300
    digits (ValueError, CVE-2020-10735): past 20 significant digits the value is `_BEYOND`, which
    every range check refuses as it would the exact value."""
    if len(text) > 20:
        text = text.lstrip("0")
        if len(text) > 20:
            return _BEYOND
    return int(text or "0")


def split_plain_params(text: str) -> list[tuple[str, str | None]]:
    """``;a=b;c`` as ordered (name, value) pairs, for parameters a fast-path regex already checked
    (token names, non-empty values, no quotes or blanks): no validation here."""
    params: list[tuple[str, str | None]] = []
    if text:
        for part in text[1:].split(";"):
            name, eq, value = part.partition("=")
            params.append((name, value if eq else None))
    return params
