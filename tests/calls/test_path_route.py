"""`calls.path_route.first_hop`: where a request routed by a stored Path goes (RFC 3327 §5.3)."""

from __future__ import annotations

from calls.model import Destination
from calls.path_route import first_hop
from sipcore.flow import Flow

REGISTERED = Destination("udp", "192.0.2.10", 5070, Flow("udp", ("192.0.2.10", 5070), ("127.0.0.1", 5060)))


def test_the_first_path_uri_is_the_destination() -> None:
    path = ("<sip:edge1.example.net;lr>", "<sip:edge2.example.net;lr>")
    assert first_hop(path, REGISTERED) == Destination("udp", "edge1.example.net", 5060)
    assert first_hop(("<sip:198.51.100.4:5080;transport=TCP;lr>",), REGISTERED) == Destination(
        "tcp", "198.51.100.4", 5080
    )
    assert first_hop(("<sips:[2001:db8::1];lr>",), REGISTERED) == Destination("tls", "2001:db8::1", 5061)
    assert first_hop(("<sip:edge.example.net;maddr=203.0.113.9;lr>",), REGISTERED) == Destination(
        "udp", "203.0.113.9", 5060
    )


def test_the_registered_flow_is_kept_when_the_edge_is_where_the_register_came_from() -> None:
    assert first_hop(("<sip:192.0.2.10:5070;lr>",), REGISTERED) is REGISTERED


def test_a_path_that_is_not_a_sip_uri_gives_no_hop() -> None:
    assert first_hop(("<tel:+33123456789>",), REGISTERED) is None
    assert first_hop(("<<<",), REGISTERED) is None
    assert first_hop((), REGISTERED) is None
