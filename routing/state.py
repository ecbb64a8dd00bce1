"""Live inputs to a routing decision, passed in by the proxy (routing never looks them up itself)."""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from routing.model import ForwardKind

Overrides = Mapping[str, Mapping[ForwardKind, str | None]]
"""Per account id, per forwarding kind: the target set from the phone, or None when cleared there."""

NO_OVERRIDES: Overrides = MappingProxyType({})


def _everyone(account_id: str) -> bool:
    return True


def _idle(account_id: str) -> int:
    return 0


def _none(key: str) -> int:
    return 0


@dataclass(frozen=True, slots=True)
class CallState:
    """``registered``: account id → has a registered contact (a callable, or any container of ids).
    ``active_calls``: account id → calls in progress. ``overrides``: the forwarding store's snapshot.
    ``tally``: a platform-wide counter by key (calls placed per rate window, routing.toll_fraud);
    ``wall``: the wall-clock time (epoch seconds) rate windows are cut from, the same on every host.
    """

    registered: Callable[[str], bool] | Container[str] = _everyone
    active_calls: Callable[[str], int] | Mapping[str, int] = _idle
    overrides: Overrides = field(default_factory=lambda: NO_OVERRIDES)
    tally: Callable[[str], int] = _none
    wall: float = 0.0

    def is_registered(self, account_id: str) -> bool:
        reg = self.registered
        return bool(reg(account_id)) if callable(reg) else account_id in reg

    def calls_of(self, account_id: str) -> int:
        calls = self.active_calls
        return int(calls(account_id)) if callable(calls) else int(calls.get(account_id, 0))
