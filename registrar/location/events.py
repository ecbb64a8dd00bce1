"""What changed in the location service, for logs, metrics and the proxy (past tense, frozen)."""

from __future__ import annotations

from dataclasses import dataclass

from registrar.location.binding import Binding
from sipcore.records import fast_init


@fast_init
@dataclass(frozen=True, slots=True)
class BindingAdded:
    binding: Binding


@fast_init
@dataclass(frozen=True, slots=True)
class BindingRefreshed:
    binding: Binding
    previous: Binding


@fast_init
@dataclass(frozen=True, slots=True)
class BindingRemoved:
    """``reason``: "unregistered" (expires=0), "wildcard" (Contact: *), "dropped" (evicted by the
    drop_oldest policy) or "flow_closed" (an outbound binding whose TCP connection closed)."""

    binding: Binding
    reason: str


@fast_init
@dataclass(frozen=True, slots=True)
class BindingExpired:
    binding: Binding


@fast_init
@dataclass(frozen=True, slots=True)
class BindingFlowLost:
    """The binding's TCP connection closed; it is kept, reached through its Contact from now on."""

    binding: Binding


LocationEvent = BindingAdded | BindingRefreshed | BindingRemoved | BindingExpired | BindingFlowLost
