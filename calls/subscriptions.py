"""Message waiting through the proxy (RFC 6665 SUBSCRIBE/NOTIFY, RFC 3842 message-summary): the pure
pieces the call controller uses.

The proxy keeps no subscription state. A phone's SUBSCRIBE is forwarded to the media service with a
Record-Route whose user part is a *flow token* (as RFC 5626 §5.3 edge proxies and Kamailio do): the
phone's flow (UDP source address and our socket, or its TCP connection) sealed with an HMAC that
also covers the phone's dialog tag. Every later request of the dialog comes back through us with
that token in its Route; one whose To tag is the phone's tag is going *to* the phone, and goes over
the flow the token names (a phone behind NAT is reachable there, not at its Contact). Nothing to
expire or replicate, so any worker (or host sharing the secret) relays the dialog, and a restart
loses nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from sipcore.flow import Flow
from sipcore.message import Request
from sipcore.proxy import Hop, forward_request

MWI_EVENT = "message-summary"  # RFC 3842: the only event package the proxy relays
ALLOW_EVENTS = (("Allow-Events", MWI_EVENT),)  # with 489 Bad Event (RFC 6665 §8.2.2)
MAILBOX_SERVICE = "mailbox"  # media Request-URI user mailbox-<account>: the owner's own mailbox
_MAC_LEN = 10  # bytes of HMAC-SHA256 kept: 80 bits, far beyond guessing one dialog's token
_MAX_TOKEN = 256  # characters: a longer user part is not one of ours (not decoded at all)
_TRANSPORTS = {"udp": "u", "tcp": "t", "tls": "s", "ws": "w", "wss": "x"}
_NAMES = {v: k for k, v in _TRANSPORTS.items()}


def event_package(value: str | None) -> str:
    """The package an Event header names (``message-summary;id=2`` -> ``message-summary``), lower case;
    '' when there is none."""
    if not value:
        return ""
    return value.split(";", 1)[0].strip().lower()


class FlowTokens:
    """Seal and open flow tokens with ``key`` (every process that relays the dialog needs the same).

    A token opens only for the dialog tag it was sealed with, so a request *from* the phone (To tag:
    the media service's) is routed as usual, and a token copied into another dialog opens nothing."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, fields: bytes, tag: str) -> bytes:
        digest = hmac.new(self._key, fields + b"\0" + tag.encode("utf-8", "surrogateescape"), hashlib.sha256)
        return digest.digest()[:_MAC_LEN]

    def seal(self, flow: Flow, tag: str) -> str:
        """A token for ``flow`` bound to the phone's dialog tag: URI-safe (base64url, no padding)."""
        (rhost, rport), (lhost, lport) = flow.remote, flow.local
        code = _TRANSPORTS.get(flow.transport, "u")
        fields = f"{code}|{rhost}|{rport}|{lhost}|{lport}|{flow.conn_id or ''}".encode()
        return base64.urlsafe_b64encode(fields + self._mac(fields, tag)).rstrip(b"=").decode("ascii")

    def open(self, token: str, tag: str) -> Flow | None:
        """The flow of a genuine token sealed for ``tag``; None for anything else."""
        if len(token) > _MAX_TOKEN:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        fields, mac = raw[:-_MAC_LEN], raw[-_MAC_LEN:]
        if len(raw) <= _MAC_LEN or not hmac.compare_digest(mac, self._mac(fields, tag)):
            return None
        try:
            code, rhost, rport, lhost, lport, conn = fields.decode().split("|")
            return Flow(_NAMES[code], (rhost, int(rport)), (lhost, int(lport)), conn or None)
        except (UnicodeDecodeError, ValueError, KeyError):
            return None


def record_route_with(hop: Hop, user: str) -> str:
    """Our Record-Route value for ``hop`` carrying ``user`` (a flow token) in its user part."""
    return f"<sip:{user}@{hop.host}:{hop.port}{hop.uri_params};lr>"


# An unsolicited NOTIFY's copy is a request we originate: the media service's Via, any Route and
# credentials stay here, so every answer to a copy ends at the proxy.
_COPY_DROPS = dict.fromkeys(("via", "route", "record-route", "proxy-authorization", "authorization"))


def notify_copy(
    notify: Request, contact_uri: str, aor: str, hop: Hop, route: tuple[str, ...] = ()
) -> Request:
    """The media service's unsolicited NOTIFY as one registered contact gets it: Request-URI the
    contact, To the account's AOR (the phone's own address, which it expects), our Via alone;
    Call-ID, CSeq, From, Contact, Event, Subscription-State and the body as the media service sent.
    ``route``: the contact's registered Path (RFC 3327), its only Route set."""
    headers: tuple[tuple[str, str], ...] = (("to", f"<{aor}>"),)
    if route:
        headers = (*headers, ("route", ", ".join(route)))
    return forward_request(notify, contact_uri, hop, replace_headers=headers, remove=_COPY_DROPS)
