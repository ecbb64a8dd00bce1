"""What a branch rings: the proxy resolves each kind (location lookup, trunk, media service)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AccountContacts:
    """Every registered contact of an account (the proxy looks up its AOR in the location store)."""

    account_id: str
    customer_id: str
    extension: str
    sip_username: str


@dataclass(frozen=True, slots=True)
class TrunkNumber:
    """An outside number, E.164, sent through the named trunk."""

    number: str
    trunk: str


@dataclass(frozen=True, slots=True)
class MediaService:
    """The media service: ``service`` is ``voicemail`` (``mailbox`` = account id) or ``conference``
    (``room`` = the bridge: the caller's customer for 2020, the DID for a conference DID)."""

    uri: str
    service: str
    mailbox: str = ""
    room: str = ""


@dataclass(frozen=True, slots=True)
class SipUri:
    """A fixed SIP URI (e.g. the support destination when configured as ``sip:…``)."""

    uri: str


Target = AccountContacts | TrunkNumber | MediaService | SipUri
