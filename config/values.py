"""Scalar value types of the configuration: parsed once from the operator's text into exact values.

Each ``parse_*`` takes what the YAML reader hands over (plain scalars arrive as their exact text) and
returns a typed value or raises ValueError with a sentence the operator can act on. Money is parsed with
``Decimal(text)`` — never through float — and is taken as written: no rounding happens at load time.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, PlainValidator

from rating.money import MAX_AMOUNT, MAX_PER_MINUTE, MAX_PERCENT

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$")
_E164 = re.compile(r"^\+[1-9][0-9]{5,14}$")
_DIGITS = re.compile(r"^[0-9]+$")
_DURATION = re.compile(r"^([0-9]+)\s*(s|m|h|d)?$")
_UNIT = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DIAL = re.compile(r"^[0-9+*#]+$")
_SIP_USER = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/]+$")  # RFC 3261 user: unreserved / user-unreserved


@dataclass(frozen=True, slots=True)
class HostPort:
    """A host (IP or name) and port; IPv6 hosts are kept without brackets."""

    host: str
    port: int

    @property
    def is_ip(self) -> bool:
        return _is_ip(self.host)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Pulse:
    """Billing increments: the first ``initial`` seconds, then steps of ``step`` (60 = 60/60)."""

    initial: int
    step: int

    def __str__(self) -> str:
        return str(self.step) if self.initial == self.step else f"{self.initial}/{self.step}"


DestinationKind = Literal["account", "group", "voicemail", "hangup", "conference"]


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a DID goes: ``1001`` (an account's extension), ``group:sales``, ``voicemail:1001``,
    ``hangup`` or ``conference``."""

    kind: DestinationKind
    target: str | None = None

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind}:{self.target}"


def _text(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected {what}, got {type(value).__name__}")
    return str(value).strip()


def parse_host_port(value: Any, *, default_port: int | None = None, require_ip: bool = False) -> HostPort:
    """``"0.0.0.0:5060"``, ``"[::]:5060"``, ``"sip.example.net:5060"`` (or no port when defaulted)."""
    if isinstance(value, HostPort):
        return value
    text = _text(value, "an address like 0.0.0.0:5060")
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in address {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"expected ':port' after ']' in {text!r}")
            port_text = rest[1:]
        _check_ip(host, 6, text)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        raise ValueError(f"IPv6 addresses need brackets and a port, e.g. '[::1]:5060', not {text!r}")
    if port_text is None:
        if default_port is None:
            raise ValueError(f"address {text!r} needs a port, e.g. '{text}:5060'")
        port = default_port
    else:
        if not _DIGITS.match(port_text) or not 0 < int(port_text) < 65536:
            raise ValueError(f"port must be 1-65535 in {text!r}")
        port = int(port_text)
    if not host:
        raise ValueError(f"missing host in {text!r}")
    if require_ip:
        _check_ip(host, None, text)
    elif not _is_ip(host) and not _HOSTNAME.match(host):
        raise ValueError(f"{host!r} is neither an IP address nor a host name")
    return HostPort(host, port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _check_ip(host: str, version: int | None, text: str) -> None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} in {text!r} is not an IP address") from None
    if version is not None and ip.version != version:
        raise ValueError(f"only IPv6 addresses go in brackets: {text!r}")


def parse_money(value: Any) -> Decimal:
    """Exact decimal from the written text; ``0.1`` stays ``Decimal("0.1")``. No NaN/Infinity."""
    if isinstance(value, Decimal):
        result = value
    else:
        text = _text(value, "an amount like 0.0138")
        try:
            result = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"{text!r} is not an amount (write it like 0.0138)") from None
    if not result.is_finite():
        raise ValueError("an amount must be a finite number")
    return result


def _non_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError(f"must not be negative, got {value}")
    return value


def _places(limit: int, unit: str) -> AfterValidator:
    """Reject more decimals than the rater holds exactly, instead of rounding them silently."""

    def check(value: Decimal) -> Decimal:
        exponent = value.as_tuple().exponent
        if (
            isinstance(exponent, int)
            and -exponent > limit
            and value != value.quantize(Decimal(1).scaleb(-limit))
        ):
            raise ValueError(f"{value:f} has more than {limit} decimals ({unit})")
        return value

    return AfterValidator(check)


def _at_most(limit: Decimal, what: str) -> AfterValidator:
    """Refuse a magnitude above ``limit`` (the rater's and the ledger's documented maximum)."""

    def check(value: Decimal) -> Decimal:
        if abs(value) > limit:
            raise ValueError(f"{value} is beyond the maximum {what} of {limit:,} (docs/rating.md, Limits)")
        return value

    return AfterValidator(check)


def parse_duration(value: Any) -> int:
    """Whole seconds: ``90``, ``"90s"``, ``"5m"``, ``"1h"``, ``"1d"``."""
    text = _text(value, "a duration like 30 or 5m")
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration (seconds, or a number with s/m/h/d)")
    return int(m.group(1)) * _UNIT[m.group(2)]


def parse_pulse(value: Any) -> Pulse:
    """``60`` (per minute), ``6``, ``1`` or ``"30/6"`` (first 30 s, then 6 s steps)."""
    if isinstance(value, Pulse):
        return value
    text = _text(value, "a pulse like 60 or 30/6")
    parts = text.split("/")
    if len(parts) > 2 or not all(_DIGITS.match(p.strip()) for p in parts):
        raise ValueError(f"{text!r} is not a pulse (write 60, 6, 1 or 30/6)")
    nums = [int(p) for p in parts]
    if any(n <= 0 for n in nums):
        raise ValueError("pulse increments must be at least 1 second")
    return Pulse(nums[0], nums[-1])


def parse_e164(value: Any) -> str:
    text = _text(value, "an E.164 number like +33184000001")
    if not _E164.match(text):
        raise ValueError(f"{text!r} is not an E.164 number (+, country code, number: +33184000001)")
    return text


def parse_extension(value: Any) -> str:
    text = _text(value, "an extension like 1001")
    if not _DIGITS.match(text) or not 2 <= len(text) <= 6:
        raise ValueError(f"{text!r} is not an extension (2 to 6 digits, usually 4)")
    return text


def parse_digits(value: Any) -> str:
    text = _text(value, "digits")
    if not _DIGITS.match(text):
        raise ValueError(f"{text!r} must be digits only")
    return text


def parse_prefix(value: Any) -> str:
    """A destination prefix, normalised to E.164 with its ``+`` (``336`` and ``+336`` both give ``+336``)."""
    text = _text(value, "a prefix like +336")
    digits = text[1:] if text.startswith("+") else text
    if not _DIGITS.match(digits) or len(digits) > 15:
        raise ValueError(f"{text!r} is not a destination prefix (E.164 digits, e.g. +336)")
    return "+" + digits


def parse_dialable(value: Any) -> str:
    """A number as a user would dial it: extension, national, international or E.164."""
    text = _text(value, "a number").replace(" ", "")
    if not _DIAL.match(text):
        raise ValueError(f"{text!r} is not a dialable number (digits, optionally + * #)")
    return text


def parse_dial_or_uri(value: Any) -> str:
    """A dialable number, or a ``sip:``/``sips:`` URI taken as is."""
    if isinstance(value, str) and value.strip().startswith(("sip:", "sips:")):
        return value.strip()
    return parse_dialable(value)


def parse_sip_user(value: Any) -> str:
    text = _text(value, "a SIP user name")
    if not _SIP_USER.match(text):
        raise ValueError(f"{text!r} is not a valid SIP user name (letters, digits and -_.!~*'()&=+$,;?/)")
    return text


def parse_domain(value: Any) -> str:
    text = _text(value, "a domain name").lower().rstrip(".")
    if not (_HOSTNAME.match(text) or _is_ip(text)):
        raise ValueError(f"{text!r} is not a domain name")
    return text


def parse_destination(value: Any) -> Destination:
    if isinstance(value, Destination):
        return value
    text = _text(value, "a destination like 1001, group:sales, voicemail:1001, hangup or conference")
    kind, _, target = text.partition(":")
    if not target:
        if kind in ("hangup", "conference"):
            return Destination(kind)
        if _DIGITS.match(kind):
            return Destination("account", kind)
        raise ValueError(f"{text!r} is not a destination (1001, group:NAME, voicemail:EXT, hangup...)")
    if kind == "account" or kind == "voicemail":
        return Destination(kind, parse_extension(target))
    if kind == "group":
        return Destination("group", target)
    raise ValueError(f"unknown destination kind {kind!r} (account, group, voicemail, hangup, conference)")


def _ser_str(value: Any) -> str:
    return str(value)


Money = Annotated[Decimal, PlainValidator(parse_money), PlainSerializer(_ser_str)]
NonNegMoney = Annotated[
    Decimal, PlainValidator(parse_money), AfterValidator(_non_negative), PlainSerializer(_ser_str)
]
# What the rater holds exactly (rating/money.py): amounts in micro-units, per-minute rates to 9
# decimals, markup percents to 4. More decimals are an error at load, never a silent rounding.
# Magnitudes are bounded (rating/money.py MAX_*) before the decimals are counted: an absurd value is
# refused here rather than overflowing the rater or the ledger later.
Amount = Annotated[Money, _at_most(MAX_AMOUNT, "amount"), _places(6, "amounts are exact to the micro-unit")]
Fee = Annotated[
    NonNegMoney, _at_most(MAX_AMOUNT, "amount"), _places(6, "amounts are exact to the micro-unit")
]
PerMinute = Annotated[
    NonNegMoney,
    _at_most(MAX_PER_MINUTE, "per-minute price"),
    _places(9, "per-minute prices are exact to 9 decimals"),
]
Percent = Annotated[
    NonNegMoney, _at_most(MAX_PERCENT, "percent"), _places(4, "percents are exact to 4 decimals")
]
Duration = Annotated[int, BeforeValidator(parse_duration)]
PulseValue = Annotated[Pulse, PlainValidator(parse_pulse), PlainSerializer(_ser_str)]
HostPortValue = Annotated[HostPort, PlainValidator(parse_host_port), PlainSerializer(_ser_str)]
ListenAddress = Annotated[
    HostPort, PlainValidator(lambda v: parse_host_port(v, require_ip=True)), PlainSerializer(_ser_str)
]
SipAddress = Annotated[
    HostPort, PlainValidator(lambda v: parse_host_port(v, default_port=5060)), PlainSerializer(_ser_str)
]
E164 = Annotated[str, PlainValidator(parse_e164)]
Extension = Annotated[str, PlainValidator(parse_extension)]
Digits = Annotated[str, PlainValidator(parse_digits)]
Prefix = Annotated[str, PlainValidator(parse_prefix)]
Dialable = Annotated[str, PlainValidator(parse_dialable)]
DialableOrUri = Annotated[str, PlainValidator(parse_dial_or_uri)]
SipUser = Annotated[str, PlainValidator(parse_sip_user)]
Domain = Annotated[str, PlainValidator(parse_domain)]
DestinationValue = Annotated[Destination, PlainValidator(parse_destination), PlainSerializer(_ser_str)]


def _raw_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected text, got {type(value).__name__}")
    return str(value)


Text = Annotated[str, PlainValidator(_raw_text)]
