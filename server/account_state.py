"""Account state that routing decides on: calls in progress per account, and forwarding set by phone.

The call controller reads it synchronously on every new call (call limits, call waiting, forwarding
overrides) and reports changes to it (a call started or ended for an account, a feature code). Every
process serving calls must see one truth, or a second call rings a phone already in a call and a
forwarding set in one worker is ignored by the others. `server.account_state_factory
.build_account_state` is the one place that picks how:

- one process: `LocalAccountState` (a counter, the forwarding file in the state dir);
- several workers, memory backends: `server.account_state_replicated` (a replica per worker, changes
  published on the worker channel, the forwarding file written by worker 0);
- ``registrar.location.backend: redis`` (state shared by hosts): `server.account_state_redis` (Redis is
  the truth, every process reads a local mirror kept current by pub/sub and a periodic refresh).

The pure parts shared by the replicas are here: `CallCounts` (each process counts only its own
calls, the total is the sum of what each reports) and `ForwardingView` (last writer wins by stamp).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from types import MappingProxyType
from typing import Protocol

from routing.feature_codes import ForwardingChange
from routing.forwarding_store import ForwardingStore
from routing.model import ForwardKind
from routing.state import Overrides

Stamp = tuple[int, int]
"""Orders forwarding changes: (version, writer). Compared as tuples; larger is newer."""


class AccountState(Protocol):
    def calls_of(self, account_id: str) -> int:
        """Calls in progress that count against the account (as caller or answered callee)."""
        ...

    def call_started(self, account_id: str) -> None: ...

    def call_ended(self, account_id: str) -> None: ...

    def overrides(self) -> Overrides:
        """The forwarding set from phones (an immutable snapshot)."""
        ...

    def apply_forwarding(self, change: ForwardingChange) -> None:
        """Record a feature-code change (persisted by the forwarding store)."""
        ...

    def busy_accounts(self) -> dict[str, int]:
        """Every account with calls in progress (for tests and live views)."""
        ...


class AccountStateService(AccountState, Protocol):
    """An account state with a life: replicas start their refresh and stop it."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class LocalAccountState:
    """One process: a counter and the forwarding store."""

    def __init__(self, forwarding: ForwardingStore) -> None:
        self.forwarding = forwarding
        self._counts = CallCounts()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def calls_of(self, account_id: str) -> int:
        return self._counts.total(account_id)

    def call_started(self, account_id: str) -> None:
        self._counts.add(None, account_id, 1)

    def call_ended(self, account_id: str) -> None:
        self._counts.add(None, account_id, -1)

    def overrides(self) -> Overrides:
        return self.forwarding.snapshot()

    def apply_forwarding(self, change: ForwardingChange) -> None:
        self.forwarding.apply(change)

    def busy_accounts(self) -> dict[str, int]:
        return self._counts.totals()


# ---- pure cores --------------------------------------------------------------------------------------
class CallCounts:
    """Calls in progress per account, as the sum of what each counter (a worker, a process) reports
    for the calls it owns.

    Why per counter and absolute: a call starts and ends in the process that owns it, so each
    counter's own numbers are exact; reports carry the counter's value (not +1/-1), so a report seen
    twice changes nothing, the latest report from a counter is the truth for it, and a counter that
    is gone (a dead host) is dropped whole.
    """

    def __init__(self) -> None:
        self._by: dict[Hashable, dict[str, int]] = {}
        self._total: dict[str, int] = {}

    def own(self, counter: Hashable, account_id: str) -> int:
        table = self._by.get(counter)
        return table.get(account_id, 0) if table else 0

    def of(self, counter: Hashable) -> dict[str, int]:
        return dict(self._by.get(counter, {}))

    def counters(self) -> set[Hashable]:
        return set(self._by)

    def add(self, counter: Hashable, account_id: str, delta: int) -> int:
        """Move ``counter``'s own count (never below 0); its new value. Inline: it runs four times
        per call on the call path."""
        table = self._by.get(counter)
        if table is None:
            table = self._by[counter] = {}
        old = table.get(account_id, 0)
        calls = old + delta
        if calls > 0:
            table[account_id] = calls
        else:
            calls = 0
            table.pop(account_id, None)
        if calls != old:
            self._shift(account_id, calls - old)
        return calls

    def set(self, counter: Hashable, account_id: str, calls: int) -> None:
        table = self._by.setdefault(counter, {})
        old = table.pop(account_id, 0)
        if calls > 0:
            table[account_id] = calls
        self._shift(account_id, calls - old)

    def replace(self, counter: Hashable, table: Mapping[str, int]) -> None:
        """Everything ``counter`` reports at once (its periodic full report)."""
        for account_id, calls in self._by.pop(counter, {}).items():
            self._shift(account_id, -calls)
        fresh = {a: n for a, n in table.items() if n > 0}
        self._by[counter] = fresh
        for account_id, calls in fresh.items():
            self._shift(account_id, calls)

    def drop(self, counter: Hashable) -> None:
        self.replace(counter, {})
        del self._by[counter]

    def total(self, account_id: str) -> int:
        return self._total.get(account_id, 0)

    def totals(self) -> dict[str, int]:
        return dict(self._total)

    def _shift(self, account_id: str, delta: int) -> None:
        if delta:
            left = self._total.get(account_id, 0) + delta
            if left > 0:
                self._total[account_id] = left
            else:
                self._total.pop(account_id, None)


class ForwardingView:
    """The forwarding set from phones, with the stamp of each value.

    A change is taken only when its stamp is newer than the value's, so replicas that receive the
    same changes in different orders end up equal (last writer by stamp wins). Values loaded at start
    carry ``base``; `force` takes a change without a stamp (this process's own, before its stamp is
    known), so any stamped change that follows overrides it.
    """

    def __init__(self, initial: Overrides, base: Stamp = (0, -1)) -> None:
        self._data: Overrides = initial
        self._stamps: dict[tuple[str, ForwardKind], Stamp] = {
            (account_id, kind): base for account_id, kinds in initial.items() for kind in kinds
        }
        self._base = base

    def snapshot(self) -> Overrides:
        return self._data

    def stamp_of(self, account_id: str, kind: ForwardKind) -> Stamp | None:
        return self._stamps.get((account_id, kind))

    def apply(self, change: ForwardingChange, stamp: Stamp) -> bool:
        """Take ``change`` if newer than what it replaces; True when taken."""
        key = (change.account_id, change.kind)
        current = self._stamps.get(key)
        if current is not None and stamp <= current:
            return False
        self._stamps[key] = stamp
        self._put(change)
        return True

    def force(self, change: ForwardingChange) -> None:
        self._stamps.setdefault((change.account_id, change.kind), self._base)
        self._put(change)

    def _put(self, change: ForwardingChange) -> None:
        accounts = {acc: dict(kinds) for acc, kinds in self._data.items()}
        accounts.setdefault(change.account_id, {})[change.kind] = change.target
        self._data = MappingProxyType({acc: MappingProxyType(kinds) for acc, kinds in accounts.items()})
