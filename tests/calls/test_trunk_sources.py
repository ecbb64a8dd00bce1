"""Which trunk a request comes from (``CallController.trunk_for_source``): an address:port source
wins over networks; a network matches any port; the per-(address, port) memo answers as the direct
computation does (differential test) and as a naive reference does."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from calls.controller import CallController, CallSettings, Trunk
from calls.model import Destination
from routing import RoutingSetup
from routing import Trunk as RoutingTrunk
from sipcore.proxy import Hop

SOURCES = {
    "carrier": ("127.0.0.2:5090", "[::1]:5090", "192.0.2.0/24"),
    "other": ("127.0.0.0/8", "198.51.100.7/32", "2001:db8::/32"),
}


def _controller(sources: dict[str, tuple[str, ...]] = SOURCES) -> CallController:
    trunks = {
        n: Trunk(n, Destination("udp", "192.0.2.9", 5060), inbound_sources=s) for n, s in sources.items()
    }
    setup = RoutingSetup.build([], trunk=RoutingTrunk("carrier"), support="", media_uri="")
    cs = CallSettings(setup=setup, trunks=trunks, aor_of={}, hops={"UDP": Hop("UDP", "192.0.2.1", 5060)},
                      realms=frozenset(), flow_key=b"k" * 32)  # fmt: skip
    return CallController(cs, lambda req, ip, now: None)


def _reference(ip: str, port: int | None) -> str | None:
    addr = ipaddress.ip_address(ip)
    for name, sources in SOURCES.items():  # address:port first
        for s in sources:
            if "/" not in s:
                host, _, p = s.rpartition(":")
                if port is not None and ipaddress.ip_address(host.strip("[]")) == addr and int(p) == port:
                    return name
    for name, sources in SOURCES.items():
        for s in sources:
            if "/" in s and addr in ipaddress.ip_network(s):
                return name
    return None


def test_a_port_source_tells_the_carrier_from_a_phone_on_its_host() -> None:
    c = _controller()
    assert c.trunk_for_source("127.0.0.2", 5090) == "carrier"
    assert c.trunk_for_source("127.0.0.2", 5091) == "other"  # only its network (127.0.0.0/8) matches
    assert c.trunk_for_source("::1", 5090) == "carrier"
    assert c.trunk_for_source("::1", 5060) is None
    assert c.trunk_for_source("192.0.2.77", 40000) == "carrier"  # a network: any port
    assert c.trunk_for_source("not-an-ip", 5060) is None


_IPS = st.sampled_from(
    ["127.0.0.2", "127.0.0.1", "::1", "192.0.2.5", "198.51.100.7", "2001:db8::1", "203.0.113.1"]
)


@settings(max_examples=300)
@given(st.lists(st.tuples(_IPS, st.sampled_from([None, 5060, 5090, 5091])), min_size=1, max_size=40))
def test_the_memo_answers_as_the_direct_lookup_and_the_reference(
    queries: list[tuple[str, int | None]],
) -> None:
    c = _controller()
    for ip, port in queries:  # repeated queries come from the memo
        assert c.trunk_for_source(ip, port) == c.find_trunk(ip, port) == _reference(ip, port)
