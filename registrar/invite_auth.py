"""Digest authentication of a phone's INVITE or SUBSCRIBE (RFC 3261 §22.3: 407 Proxy-Authenticate), with the
registrar's users, realm, nonces and brute-force guard, so a call and a registration are checked by
the same rules. Pure: the answer to give, or who the caller is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from registrar.registrar import Drop, Registrar, Reply
from sipcore.message import Request
from sipcore.uri import SipUri, Uri


@dataclass(frozen=True, slots=True)
class Caller:
    """The INVITE carried valid credentials of ``username`` in ``domain``."""

    domain: str
    username: str


class InviteView(Protocol):
    """What `authenticate_invite` reads of a request: a parsed one (`ParsedInvite`) or one the INVITE
    lane read from its bytes (registrar.invite_lane.InviteLaneRequest)."""

    @property
    def method(self) -> str: ...
    @property
    def from_uri(self) -> SipUri | None: ...
    @property
    def ruri(self) -> Uri: ...
    @property
    def credentials(self) -> str | None: ...  # the Proxy-Authorization header
    @property
    def user_agent(self) -> str | None: ...


class ParsedInvite:
    """`InviteView` of a request the SIP core parsed (the general path: INVITE or SUBSCRIBE)."""

    __slots__ = ("request",)

    def __init__(self, request: Request) -> None:
        self.request = request

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def from_uri(self) -> SipUri | None:
        return self.request.from_.sip_uri

    @property
    def ruri(self) -> Uri:
        return self.request.ruri

    @property
    def credentials(self) -> str | None:
        return self.request.headers.get("proxy-authorization")

    @property
    def user_agent(self) -> str | None:
        return self.request.headers.get("user-agent")


def authenticate_invite(registrar: Registrar, req: InviteView, ip: str, now: float) -> Caller | Reply | Drop:
    """The caller's domain is the From URI's (else the Request-URI's): not ours -> 403. Then digest
    over ``Proxy-Authorization``; a failure counts for the guard (a ban drops the INVITE; so does a
    fresh source's attempt at a username under attack, unchecked), a success makes the source known
    for the username; a missing or stale credential gets the 407 challenge, an unreadable one 400.
    The digest uri is not compared with the Request-URI for INVITE: SIPp and several phones put the
    proxy's address there; the response hash still covers whatever uri they used. ``now``: wall-clock seconds (nonces carry it)."""
    from_uri = req.from_uri
    domain = registrar.domain_of(from_uri) if from_uri is not None else None
    if domain is None:
        ruri = req.ruri
        domain = registrar.domain_of(ruri) if isinstance(ruri, SipUri) else None
    if domain is None:
        return Reply(403, "Relaying Forbidden")
    checked = registrar.verify_guarded(
        ip,
        req.credentials,
        req.method,  # the digest response covers the method of the request it authorises
        domain,
        now,
    )
    if isinstance(checked, Drop):
        return checked
    result, _ = checked
    if result.ok:
        return Caller(domain, result.username or "")
    if result.status == 400:
        return Reply(400, f"Bad Proxy-Authorization header ({result.reason.value})", auth=result)
    values = registrar.challenge_values(now, result.stale, req.user_agent)
    return Reply(407, None, tuple(("Proxy-Authenticate", v) for v in values), auth=result)
