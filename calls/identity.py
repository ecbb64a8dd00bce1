"""Who a forwarded request says is calling (RFC 3325), and what a caller sent that stays here.

The trust domain is this proxy, its media service and the trunks marked ``trusted``. A phone is never
trusted: the P-Asserted-Identity, Remote-Party-ID and P-Preferred-Identity it sends are dropped and the
proxy asserts the account's identity itself, so a phone cannot show a number it does not own. A
trusted carrier's identity headers are kept (it vouches for its callers); an untrusted carrier's are
dropped. ``Privacy: id`` (RFC 3323/3325) withholds the identity from untrusted hops: the From becomes
anonymous, and the asserted identity goes only to trusted ones.

Digest credentials a phone sent for our own realm (Proxy-Authorization, Authorization) are consumed
here: forwarded, they would let whoever receives them run an offline dictionary attack on the
phone's password. Credentials for other realms are end to end and pass untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from urllib.parse import unquote

from routing.model import AccountRoute, DidKind, RoutingSetup
from sipcore.digest import DigestParseError, parse_authorization
from sipcore.errors import SipParseError
from sipcore.headers import NameAddr, split_list
from sipcore.records import fast_init

IDENTITY_KEYS = ("p-asserted-identity", "remote-party-id", "p-preferred-identity")
CREDENTIAL_KEYS = ("proxy-authorization", "authorization")
ANONYMOUS_URI = "sip:anonymous@anonymous.invalid"  # RFC 3323 §4.1.1.3

Removal = Mapping[str, Callable[[str], bool] | None]
"""Header key -> None (drop every field) or a predicate on the value (drop the fields it accepts)."""


class Source(Enum):
    """Where a request came from, as far as identity goes."""

    PHONE = "phone"  # authenticated by digest: we know who it is and assert it
    TRUSTED_PEER = "trusted_peer"  # a trunk in our trust domain: its assertions stand
    UNTRUSTED_PEER = "untrusted_peer"  # a trunk outside it: its identity headers are dropped


@fast_init
@dataclass(frozen=True, slots=True)
class Presented:
    """What the next hop is told: a new From (None: the received one), our P-Asserted-Identity to
    add (None: none), and the received fields to drop."""

    from_value: str | None
    asserted: str | None
    remove: Removal


class HeaderPolicy:
    """The removal maps for one set of our realms, built once (they are consulted per request)."""

    def __init__(self, realms: Collection[str]) -> None:
        self.realms = frozenset(realms)
        creds = self._ours
        base = dict.fromkeys(CREDENTIAL_KEYS, creds)
        self.credentials: Removal = MappingProxyType(base)
        self.credentials_and_identity: Removal = MappingProxyType({**base, **dict.fromkeys(IDENTITY_KEYS)})

    def _ours(self, value: str) -> bool:
        """Credentials for one of our realms, or unreadable ones (never forward what we cannot vouch
        is someone else's)."""
        try:
            realm = parse_authorization(value).get("realm")
        except (DigestParseError, SipParseError):
            return True
        return realm is None or realm in self.realms

    def for_source(self, source: Source, withheld: bool = False) -> Removal:
        """In-dialog and other relayed requests: credentials always, identity unless a trusted peer
        sent it and may keep it."""
        if source is Source.TRUSTED_PEER and not withheld:
            return self.credentials
        return self.credentials_and_identity


def privacy_of(values: list[str]) -> frozenset[str]:
    """The privacy values of the Privacy fields (``id;header``, comma lists), lower case."""
    out: set[str] = set()
    for field in values:
        for part in field.replace(",", ";").split(";"):
            part = part.strip().lower()
            if part:
                out.add(part)
    return frozenset(out)


def withholds(privacy: frozenset[str]) -> bool:
    """``id`` (RFC 3325) or ``user`` (RFC 3323): the caller's identity is not shown to untrusted hops."""
    return "id" in privacy or "user" in privacy


def present(
    *,
    source: Source,
    from_value: str | None,
    original: str,
    shown: str,
    display: str,
    host: str,
    privacy: frozenset[str],
    to_trusted: bool,
    policy: HeaderPolicy,
) -> Presented:
    """The caller identity of one forwarded leg.

    ``original``: the number the caller arrived with; ``shown``: the number this leg presents (the
    account's, the forwarding rule's choice, a phone's preferred number); ``host``: the domain of an
    asserted URI when the From has none to reuse; ``to_trusted``: the next hop is in the trust domain."""
    withheld = withholds(privacy)
    na = _name_addr(from_value)
    if source is Source.TRUSTED_PEER and shown == original:
        remove = policy.credentials_and_identity if withheld and not to_trusted else policy.credentials
        return Presented(None, None, remove)
    uri = na.sip_uri if na is not None else None
    asserted_uri = uri.replace(user=shown, params=[]) if uri is not None else None
    asserted_text = str(asserted_uri) if asserted_uri is not None else f"sip:{shown}@{host}"
    vouch = source is Source.PHONE or shown != original
    asserted = f"<{asserted_text}>" if vouch and (to_trusted or not withheld) else None
    params = _params(na)
    if withheld:
        new_from: str | None = f'"Anonymous" <{ANONYMOUS_URI}>{params}'
    elif uri is not None and unquote(uri.user or "") == shown:
        new_from = None
    else:
        name = f'"{display}" ' if display else (f"{na.display} " if na is not None and na.display else "")
        new_from = f"{name}<{asserted_text}>{params}"
    return Presented(new_from, asserted, policy.credentials_and_identity)


def preferred_number(values: list[str], own: Collection[str]) -> str | None:
    """The number a phone's P-Preferred-Identity asks for, when it is one of the account's own."""
    for field in values:
        for value in split_list(field):
            na = _name_addr(value)
            uri = na.sip_uri if na is not None else None
            number = unquote(uri.user) if uri is not None and uri.user else None
            if number is None and na is not None and na.uri_text.startswith("tel:"):
                number = na.uri_text[4:].split(";", 1)[0]
            if number and number in own:
                return number
    return None


def own_numbers(setup: RoutingSetup, account: AccountRoute) -> frozenset[str]:
    """The public numbers an account may show: its outgoing number and the DIDs that ring it."""
    numbers = {account.outgoing_number} if account.outgoing_number else set()
    customer = setup.customers.get(account.customer_id)
    for did in customer.dids if customer is not None else ():
        if did.kind is DidKind.ACCOUNT and did.target == account.extension:
            numbers.add(did.number)
    return frozenset(numbers)


def public_number(setup: RoutingSetup, account: AccountRoute) -> str | None:
    """The number an account shows outside: its outgoing number, else the first DID that rings it."""
    if account.outgoing_number:
        return account.outgoing_number
    numbers = own_numbers(setup, account)
    return min(numbers) if numbers else None


def _name_addr(value: str | None) -> NameAddr | None:
    if not value:
        return None
    try:
        return NameAddr.parse(value)
    except SipParseError:
        return None


def _params(na: NameAddr | None) -> str:
    if na is None:
        return ""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in na.params)
