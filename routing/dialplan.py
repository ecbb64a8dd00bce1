"""Classify what a customer's user dialed: extension, short code, on-net DID, outside number.

Shared by outgoing calls and by forwarding targets (a forward to "2001" or "0612345678" is read in
the forwarding account's customer context, as if that user dialed it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from routing.model import AccountRoute, CustomerRoute, Did, RoutingSetup
from routing.numbering import clean, normalise
from routing.targets import TrunkNumber

SUPPORT_CODE = "2000"
CONFERENCE_CODE = "2020"
VOICEMAIL_CODE = "2222"
SHORT_CODES = frozenset({SUPPORT_CODE, CONFERENCE_CODE, VOICEMAIL_CODE})


class DestinationKind(StrEnum):
    EXTENSION = "extension"
    SHORT_CODE = "short_code"
    DID = "did"
    EXTERNAL = "external"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class Destination:
    """``number`` is the extension/short code as dialed, or the E.164 form for DID/EXTERNAL."""

    kind: DestinationKind
    number: str
    account: AccountRoute | None = None
    did: Did | None = None


def classify(setup: RoutingSetup, customer: CustomerRoute, dialed: str) -> Destination:
    digits = clean(dialed)
    account = customer.accounts.get(digits)
    if account is not None:
        return Destination(DestinationKind.EXTENSION, digits, account=account)
    if digits in SHORT_CODES:
        return Destination(DestinationKind.SHORT_CODE, digits)
    e164 = normalise(customer.dialing, digits)
    if e164 is None:
        return Destination(DestinationKind.INVALID, digits)
    did = setup.dids.get(e164)
    if did is not None:
        return Destination(DestinationKind.DID, e164, did=did)
    return Destination(DestinationKind.EXTERNAL, e164)


def trunk_for(setup: RoutingSetup, customer: CustomerRoute) -> str:
    return customer.trunk or setup.trunk.name


def trunk_number(setup: RoutingSetup, customer: CustomerRoute, e164: str) -> TrunkNumber:
    """An outside number leaving through the customer's trunk or ordered set of trunks (else the
    platform's)."""
    if customer.trunk is not None:
        return TrunkNumber(e164, customer.trunk)
    if customer.trunks:
        return TrunkNumber(e164, customer.trunks[0].trunk, customer.trunks)
    return TrunkNumber(e164, setup.trunk.name, setup.trunks)
