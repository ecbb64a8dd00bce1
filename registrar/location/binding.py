"""The stored registration: one `Binding` per (AOR, contact), and the `Flow` it arrived on.

Both are frozen ``__slots__`` dataclasses: the memory backend holds ~100,000 of them, so they carry no
per-instance ``__dict__`` and the strings most bindings share (transport, local address, NAT public ip,
user agent) are interned.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace

from registrar.location.contact_key import contact_key
from sipcore.records import fast_init


@fast_init
@dataclass(frozen=True, slots=True)
class Flow:
    """Where a REGISTER came from: the path the server uses to reach the phone behind its NAT.

    ``connection_id`` names the live TCP connection (the server maps it back to a socket); it must be
    unique across every process sharing the store (e.g. ``"<host>/<pid>/<n>"``). ``None`` for UDP.
    """

    transport: str  # "udp" | "tcp"
    source_ip: str
    source_port: int
    local_address: str  # the listening socket it arrived on, e.g. "203.0.113.5:5060"
    connection_id: str | None = None

    def __post_init__(self) -> None:
        # Many phones share a NAT's public ip and every binding shares a few local addresses.
        _set_transport(self, sys.intern(self.transport))
        _set_source_ip(self, sys.intern(self.source_ip))
        _set_local_address(self, sys.intern(self.local_address))


_set_transport = Flow.transport.__set__  # type: ignore[attr-defined]  # slot writers (the class is frozen)
_set_source_ip = Flow.source_ip.__set__  # type: ignore[attr-defined]
_set_local_address = Flow.local_address.__set__  # type: ignore[attr-defined]


@fast_init
@dataclass(frozen=True, slots=True)
class Binding:
    """One contact registered for an address of record (RFC 3261 §10).

    ``contact`` is byte-exact as the phone sent it (unknown params and escaped headers included): the
    proxy sends requests to it verbatim. ``expires_at`` and ``registered_at`` are absolute epoch
    seconds; ``registered_at`` is the time of the last REGISTER that wrote this binding (add or refresh).
    ``flow_alive`` turns False when the TCP connection the binding depends on closed but the binding
    was kept (no outbound reg-id): the proxy then falls back to the Contact/received address.
    """

    aor: str
    contact: str
    expires_at: float
    q: int  # 0..1000 (q=0.5 -> 500)
    call_id: str
    cseq: int
    flow: Flow
    registered_at: float
    instance: str | None = None  # +sip.instance, e.g. "<urn:uuid:...>"
    reg_id: int | None = None  # RFC 5626 reg-id
    user_agent: str = ""
    path: tuple[str, ...] = ()  # Path header values (RFC 3327), topmost first
    received: str | None = None  # received URI (e.g. "sip:198.51.100.7:4711") for NAT traversal
    flow_alive: bool = True

    @property
    def key(self) -> str:
        """The identity this binding is matched by inside its AOR (see `contact_key`)."""
        return contact_key(self.contact, self.instance, self.reg_id)

    @property
    def is_outbound(self) -> bool:
        """RFC 5626 binding: it exists only through its flow."""
        return self.reg_id is not None and self.instance is not None

    def expires_in(self, now: float) -> int:
        """Seconds left, as the 200 OK's Contact ``expires`` parameter reports them."""
        return max(0, round(self.expires_at - now))

    def alive(self, now: float) -> bool:
        return self.expires_at > now

    def with_dead_flow(self) -> Binding:
        return replace(self, flow_alive=False)


def sort_key(binding: Binding) -> tuple[int, float]:
    """Highest q first, then the most recently registered."""
    return (-binding.q, -binding.registered_at)


def ordered(bindings: list[Binding] | tuple[Binding, ...]) -> tuple[Binding, ...]:
    return tuple(sorted(bindings, key=sort_key))
