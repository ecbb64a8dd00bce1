"""This host's part in a platform of several (``server.cluster``, docs/scale-out.md): the route entry it
stores with the bindings it registers, the peers it relays for and the ones it probes, from the
configuration."""

from __future__ import annotations

import hashlib
import ipaddress
import os
from typing import Any

from calls.cluster_route import ClusterRoute, peer_name
from calls.model import Destination
from calls.trunk_monitor import TrunkLink
from config.schema import source_address

_PROCESS_FLOW_KEY = os.urandom(32)


def flow_key(secret: bytes | str | None) -> bytes:
    """The key sealing flow tokens (subscriptions, transit, cluster routes): derived from the nonce
    secret, which every worker and host already shares (a token sealed by one opens in all), else this
    process's own (one process)."""
    if not secret:
        return _PROCESS_FLOW_KEY
    raw = secret.encode() if isinstance(secret, str) else secret
    return hashlib.sha256(b"sipcore flow token\0" + raw).digest()


def cluster_route(cfg: Any) -> ClusterRoute | None:
    """None for a single host (no ``server.cluster``): bindings then carry no route of ours."""
    section = cfg.server.cluster
    if section is None:
        return None
    adv = section.advertise
    return ClusterRoute(str(adv.host), int(adv.port), section.transport, section.networks,
                        flow_key(cfg.nonce_secret))  # fmt: skip


def peer_links(cfg: Any) -> tuple[TrunkLink, ...]:
    """The other hosts the trunk monitor probes (``server.cluster.probe_interval``): each peer given as
    one address, at its port or else our ``advertise`` port (the hosts normally share it), over
    ``server.cluster.transport``; not our own address, not a network (whose hosts are unknown). Named
    as the route entries that lead to them (``peer_name``), so a branch finds its host's state."""
    section = cfg.server.cluster
    if section is None or section.probe_interval is None:
        return ()
    adv = section.advertise
    own = peer_name(str(adv.host), int(adv.port))
    links: dict[str, TrunkLink] = {}
    for peer in section.peers:
        address = source_address(peer)
        if address is None:  # an address alone is canonically x/32 or x/128
            net = ipaddress.ip_network(peer)
            if net.num_addresses != 1:
                continue
            host, port = str(net.network_address), int(adv.port)
        else:
            host, port = address
        name = peer_name(host, port)
        if name != own:
            links[name] = TrunkLink(name, Destination(section.transport, host, port),
                                    float(section.probe_interval), section.probe_failures, peer=True)  # fmt: skip
    return tuple(links.values())
