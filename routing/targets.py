"""What a branch rings: the proxy resolves each kind (location lookup, trunk, media service)."""

from __future__ import annotations

from dataclasses import dataclass

from routing.trunks import TrunkChoice


@dataclass(frozen=True, slots=True)
class AccountContacts:
    """Every registered contact of an account (the proxy looks up its AOR in the location store)."""

    account_id: str
    customer_id: str
    extension: str
    sip_username: str


@dataclass(frozen=True, slots=True)
class TrunkNumber:
    """An outside number, E.164, sent through the named trunk — or, when ``trunks`` is given, through
    the best available trunk of that ordered set, failing over to the next (``routing.trunks``)."""

    number: str
    trunk: str
    trunks: tuple[TrunkChoice, ...] = ()

    @property
    def choices(self) -> tuple[TrunkChoice, ...]:
        return self.trunks or (TrunkChoice(self.trunk),)


@dataclass(frozen=True, slots=True)
class MediaService:
    """The media service. ``service`` says what the caller gets, since the media service reads it back
    from the Request-URI user (``user``): ``voicemail`` deposits a message in ``mailbox`` (an account
    id: busy / no-answer / unreachable forwarding, follow-me's last resort, a voicemail DID),
    ``mailbox`` is that account owner's own mailbox menu (2222), ``conference`` joins ``room`` (the
    caller's customer for 2020, the DID for a conference DID)."""

    uri: str
    service: str
    mailbox: str = ""
    room: str = ""

    @property
    def user(self) -> str:
        """The Request-URI user the media service reads: ``<service>-<mailbox or room>``, e.g.
        ``voicemail-acme-2001`` (``/`` of an account id becomes ``-``: see ``media_key``)."""
        key = self.mailbox or self.room
        return f"{self.service}-{media_key(key)}" if key else self.service


def media_key(key: str) -> str:
    """An account id or room as written after ``<service>-`` in a media Request-URI user: ``acme/2001``
    becomes ``acme-2001`` (no ``/`` to escape; unambiguous, as extensions are digits)."""
    return key.replace("/", "-")


@dataclass(frozen=True, slots=True)
class SipUri:
    """A fixed SIP URI (e.g. the support destination when configured as ``sip:…``)."""

    uri: str


Target = AccountContacts | TrunkNumber | MediaService | SipUri
