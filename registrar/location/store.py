"""The `LocationStore` contract every backend (memory, replicated, Redis) meets; one test suite
(tests/registrar/test_location_contract.py) checks them all."""

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

    def lookup_cached(self, aor: str, now: float) -> list[Binding] | None:
        """``aor``'s unexpired bindings, ordered as `get` orders them, read without I/O -- or None
        when this process cannot vouch for them, meaning: ask ``await get(aor, now)``.

        Why: a caller (the proxy ringing a callee) acts at once when the registry is local and awaits
        only when it is not, without knowing which backend it holds. Memory and replicated stores
        keep the registry itself and never answer None (a replica is as current as the replication
        stream it installed). The Redis store's per-process cache is only a guess that `apply`
        checks against Redis's version token; no invalidation reaches it when another process or
        host writes, so it answers None. Never a stale list: None is always a correct answer, a
        list must equal what `get` would return."""
        ...

    def apply_now(
        self,
        aor: str,
        changes: RegisterChanges,
        now: float,
        max_contacts: int | None = None,
        policy: OverflowPolicy = OverflowPolicy.REJECT,
    ) -> ApplyResult | None:
        """`apply` without I/O when this process holds the registry (memory, replicated), else None,
        meaning: ``await apply(...)``. Why: the REGISTER edge answers in the same event-loop turn
        when it can, without knowing which backend it holds. Raises `LocationError` as `apply`."""
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

    def remove_flow_now(self, connection_id: str) -> list[LocationEvent] | None:
        """`remove_flow` without I/O when this process holds the registry, else None (await it)."""
        ...

    async def open(self, now: float) -> int:
        """Before serving: restore what the store keeps across restarts (the memory store's state
        file) and start its background writes; returns how many bindings were restored."""
        ...

    async def expire(self, now: float) -> list[Binding]:
        """Sweep bindings expired at ``now`` and return them (memory); Redis expires by TTL."""
        ...

    async def count_aors(self, now: float | None = None) -> int: ...

    async def count_contacts(self, now: float | None = None) -> int: ...

    async def close(self) -> None: ...
