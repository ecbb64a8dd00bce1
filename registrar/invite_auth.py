"""Digest authentication of a phone's INVITE or SUBSCRIBE (RFC 3261 §22.3: 407 Proxy-Authenticate), with the
registrar's users, realm, nonces and brute-force guard, so a call and a registration are checked by
the same rules. Pure: the answer to give, or who the caller is."""

from __future__ import annotations

from dataclasses import dataclass

from registrar.registrar import Drop, Registrar, Reply
from sipcore.message import Request
from sipcore.uri import SipUri


@dataclass(frozen=True, slots=True)
class Caller:
    """The INVITE carried valid credentials of ``username`` in ``domain``."""

    domain: str
    username: str


def authenticate_invite(registrar: Registrar, req: Request, ip: str, now: float) -> Caller | Reply | Drop:
    """The caller's domain is the From URI's (else the Request-URI's): not ours -> 403. Then digest
    over ``Proxy-Authorization``; a failure counts for the guard (a ban drops the INVITE; so does a
    fresh source's attempt at a username under attack, unchecked), a success makes the source known
    for the username; a missing or stale credential gets the 407 challenge, an unreadable one 400.
    The digest uri is not compared with the Request-URI for INVITE: SIPp and several phones put the
    proxy's address there; the response hash still covers whatever uri they used. ``now``: wall-clock seconds (nonces carry it)."""
    from_uri = req.from_.sip_uri
    domain = registrar.domain_of(from_uri) if from_uri is not None else None
    if domain is None:
        ruri = req.ruri
        domain = registrar.domain_of(ruri) if isinstance(ruri, SipUri) else None
    if domain is None:
        return Reply(403, "Relaying Forbidden")
    checked = registrar.verify_guarded(
        ip,
        req.headers.get("proxy-authorization"),
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
    values = registrar.challenge_values(now, result.stale, req.headers.get("user-agent"))
    return Reply(407, None, tuple(("Proxy-Authenticate", v) for v in values), auth=result)
