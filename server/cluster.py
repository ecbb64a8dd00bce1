"""This host's part in a platform of several (``server.cluster``, docs/scale-out.md): the route entry it
stores with the bindings it registers and the peers it relays for, from the configuration."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from calls.cluster_route import ClusterRoute

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
    return ClusterRoute(str(adv.host), int(adv.port), section.transport, tuple(str(p) for p in section.peers),
                        flow_key(cfg.nonce_secret))  # fmt: skip
