"""A registered contact reached through the Path its REGISTER recorded (RFC 3327 §5.3).

Why: an edge proxy (or SBC, or the host that holds a phone's NAT flow) that inserted a Path header
into the phone's REGISTER must see every request towards that phone: the home proxy uses the stored
Path as a preloaded route set -- Route headers in Path order, the request sent to the first Path URI,
the Request-URI left as the contact (loose routing, RFC 3261 §16.6 step 6-7).
"""

from __future__ import annotations

from calls.model import Destination
from sipcore.errors import SipParseError
from sipcore.flow import strip_brackets
from sipcore.headers import NameAddr
from sipcore.uri import SipUri


def first_hop(path: tuple[str, ...], registered: Destination) -> Destination | None:
    """Where to send a request routed by ``path``: its first URI's address and transport. The REGISTER's
    own flow (``registered``) is kept when the first hop is the address it came from, so a TCP edge is
    reached over the connection it registered on. None when the first Path value is not a SIP URI."""
    try:
        uri = NameAddr.parse(path[0]).uri
    except (SipParseError, ValueError, IndexError):
        return None
    if not isinstance(uri, SipUri):
        return None
    host = strip_brackets(uri.param("maddr") or uri.host)
    transport = uri.target_transport
    port = uri.target_port
    if (host, port, transport) == (registered.host, registered.port, registered.transport):
        return registered
    return Destination(transport, host, port)
