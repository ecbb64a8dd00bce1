"""The `LocationStore` contract every backend (memory, Redis) meets; one test suite checks both."""

from __future__ import annotations

from typing import Protocol

from registrar.location.binding import Binding
from registrar.location.changes import OverflowPolicy, RegisterChanges
from registrar.location.events import LocationEvent
from registrar.location.rules import ApplyResult


class LocationStore(Protocol):
    async def get(self, aor: str, now: float) -> list[Binding]:
        """Unexpired bindings of ``aor``: highest q first, then the most recently registered."""
        ...

    async def apply(
        self,
        aor: str,
        changes: RegisterChanges,
        now: float,
        max_contacts: int | None = None,
        policy: OverflowPolicy = OverflowPolicy.REJECT,
    ) -> ApplyResult:
        """Apply one REGISTER atomically (see `rules.plan_register`); raises `LocationError`."""
        ...

    async def remove_flow(self, connection_id: str) -> list[LocationEvent]:
        """A TCP connection closed: drop its outbound bindings, mark the others' flow dead."""
        ...

    async def expire(self, now: float) -> list[Binding]:
        """Sweep bindings expired at ``now`` and return them (memory); Redis expires by TTL."""
        ...

    async def count_aors(self, now: float | None = None) -> int: ...

    async def count_contacts(self, now: float | None = None) -> int: ...

    async def close(self) -> None: ...
