"""Flows (where a message came from and how to reach that peer again) and §18.2.2 response routing."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from sipcore.records import fast_init

from .grammar import digits_value
from .headers import Via

Address = tuple[str, int]


@fast_init
@dataclass(frozen=True, slots=True)
class Flow:
    """A message's way in: transport, peer and local address, and the TCP connection id if any.

    Phones behind NAT are only reachable back over the flow they used (their UDP source address and
    port, or their open TCP connection), never at a private Contact address.
    """

    transport: str  # "udp" | "tcp" | "tls" | "ws" | "wss"
    remote: Address
    local: Address
    conn_id: str | None = None

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


def strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def same_host(via_host: str, ip: str) -> bool:
    if via_host == ip:  # the common case, without parsing addresses
        return True
    try:
        return ipaddress.ip_address(strip_brackets(via_host)) == ipaddress.ip_address(ip)
    except ValueError:
        return False


def stamp_via(via: Via, source: Address, always_rport: bool = False) -> Via:
    """§18.2.1 + RFC 3581: add ``received`` when the sent-by host is not the source IP, and fill an
    empty ``rport`` with the source port (then ``received`` is always added). ``always_rport``: as if
    rport were asked for (WebSocket clients send a ``.invalid`` host and often no rport, RFC 7118 §5.2:
    the response relay then finds their connection by its source address and port)."""
    ip, port = source
    rport = via.param("rport")
    changes: dict[str, str | None] = {}
    if rport == "" or (always_rport and rport is None):
        changes["rport"] = str(port)
        changes["received"] = ip
    elif not same_host(via.host, ip):
        changes["received"] = ip
    if not changes:
        return via
    return via.with_params(**changes)


def response_destination(via: Via, default_port: int = 5060) -> Address:
    """Where a response goes over UDP per §18.2.2 and RFC 3581: maddr, else received (or the sent-by
    host) at rport, else at the sent-by port."""
    maddr = via.param("maddr")
    host = maddr or via.param("received") or via.host
    rport = via.param("rport")
    if rport and rport.isascii() and rport.isdigit():  # not int(): "²" is a digit, and 5,000 of them
        port = digits_value(rport)
    else:
        port = via.port or default_port
    return strip_brackets(host), port
