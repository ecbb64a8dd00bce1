"""Calls across hosts: the route through the host that holds a phone's flow (docs/scale-out.md).

Why: a phone behind NAT (UDP) or on a TCP connection is reachable only from the host it registered
through, yet with a shared location store (Redis) the call may enter any host. So the registering host
stores, on top of the binding's Path, an entry naming itself whose user part is a *flow token* (the
REGISTER's flow sealed with an HMAC, as an RFC 5626 §5.3 edge proxy does; calls.subscriptions seals
dialog tokens the same way). Any host's lookup then routes the call through that host (RFC 3327 §5.3,
calls.path_route), which relays it over the phone's flow. A request from a peer host routed to our
token is *transit*: relayed without authentication, and no call, counter or CDR here -- the host where
the call entered has them, so every call is counted exactly once. Nothing is stored: a token opens in
every process holding the key, and a restart loses nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from urllib.parse import unquote

from calls.subscriptions import FlowTokens
from sipcore.errors import SipParseError
from sipcore.flow import Flow
from sipcore.headers import NameAddr, split_list
from sipcore.message import Request
from sipcore.uri import SipUri

# Domain separation: a path token never opens as a dialog token and the reverse (a phone chooses its
# tags; NUL is not a tag character).
PATH_TAG = "\0path"
# A peer is a stateful proxy: it answers an INVITE with 100 Trying within 200 ms, and at once to each
# retransmission (0.5, 1, 2 s). Nothing at all by then: the host is down, and its phones unreachable
# through it until they register elsewhere -- the branch ends (408) instead of waiting for Timer B,
# and the host is marked down (calls.trunk_monitor, mark_down): later calls do not wait again.
PEER_ANSWER_WAIT = 4.0
CALLER_TAG = "\0from:"  # transit Record-Route: sealed for the caller's From tag (requests towards the phone)


def peer_name(host: str, port: int) -> str:
    """The name of the host reached at ``host``:``port`` (a route entry's address): the key of its
    state, its probes' and its metric's label. IP addresses in their canonical form."""
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f"{host.lower()}:{port}"
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


class ClusterRoute:
    """This host's route entry for the bindings it stores, and which hosts may use it.

    ``host``/``port``/``transport``: where the other hosts reach this one (``server.cluster.advertise``);
    ``peers``: their addresses (networks), trusted for transit; ``key``: the flow-token key, the same on
    every host (derived from the shared nonce secret)."""

    def __init__(
        self, host: str, port: int, transport: str, peers: tuple[str, ...], key: bytes,
        answer_wait: float = PEER_ANSWER_WAIT,
    ) -> None:  # fmt: skip
        self.answer_wait = answer_wait  # a branch through a peer silent this long: the peer is down
        self.host = host.lower()
        self.port = port
        self.transport = transport.lower()
        self.tokens = FlowTokens(key)
        self._peers = tuple(ipaddress.ip_network(p, strict=False) for p in peers)
        self._peer_memo: dict[str, bool] = {}
        self._uri_host = f"[{host}]" if ":" in host else host

    def entry(self, flow: Flow) -> str:
        """The Path value stored on top of a binding that arrived on ``flow``."""
        token = self.tokens.seal(flow, PATH_TAG)
        params = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"<sip:{token}@{self._uri_host}:{self.port}{params};lr>"

    def is_own(self, value: str) -> bool:
        """``value`` (one Path/Route value) is an entry of this host's."""
        uri = _sip_uri(value)
        return uri is not None and bool(uri.user) and self._names_me(uri)

    def own_flow(self, uri: SipUri) -> Flow | None:
        """The phone's flow named by a Route URI that is our entry; None for anything else."""
        if not uri.user or not self._names_me(uri):
            return None
        return self.tokens.open(unquote(uri.user), PATH_TAG)

    def without_own(self, path: tuple[str, ...]) -> tuple[str, ...]:
        """A binding's stored Path as this host uses it: our own entry dropped (we hold the flow)."""
        return path[1:] if path and self.is_own(path[0]) else path

    def is_peer(self, ip: str) -> bool:
        """``ip`` is one of the platform's other hosts (memoised: asked per transit request)."""
        memo = self._peer_memo
        found = memo.get(ip)
        if found is None:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                return False
            found = any(addr in net for net in self._peers)
            if len(memo) >= 4096:
                memo.clear()
            memo[ip] = found
        return found

    def transit_flow(self, req: Request, source_ip: str, is_me: Callable[[SipUri], bool]) -> Flow | None:
        """The phone flow a peer host's request is routed to (its top Route is our entry), or None:
        not from a peer, not routed to us, or a token that does not open (then the request is
        handled as from anyone else: authenticated)."""
        if "route" not in req.headers or not self.is_peer(source_ip):
            return None
        try:
            top = split_list(req.headers.get("route") or "")[0]
            uri = NameAddr.parse(top).uri
        except (SipParseError, IndexError, ValueError):
            return None
        if not isinstance(uri, SipUri) or not is_me(uri):
            return None
        return self.own_flow(uri)

    def _names_me(self, uri: SipUri) -> bool:
        return uri.host.lower() in (self.host, self._uri_host) and (uri.port or 5060) == self.port


def _sip_uri(value: str) -> SipUri | None:
    try:
        uri = NameAddr.parse(value).uri
    except (SipParseError, ValueError):
        return None
    return uri if isinstance(uri, SipUri) else None
