"""Live counters the rater reads and moves: balances, daily spend, free minutes used.

Why an interface: one process keeps them in memory; several processes share them in Redis
(rating.balance_redis). Both honour the same contract (tests/rating/test_counters_contract.py):
each method is atomic on its own; `take_free_minutes` grants at most what the bundle has left,
so two concurrent calls can never spend the same free minute.
Keys: `day` is the date "YYYY-MM-DD" in the operator's time zone, `cycle` the UTC month "YYYY-MM"
(see settlement).
All amounts are integer micro-units.
"""

from __future__ import annotations

import threading
from typing import Protocol

Snapshot = tuple[int, int, int]  # (balance, spent today, free minutes used this cycle)


class CounterStore(Protocol):
    async def snapshot(self, customer_id: str, account_id: str | None, day: str, cycle: str) -> Snapshot:
        """(balance, spent on `day`, free minutes used in `cycle`) in one read."""
        ...

    async def balance(self, customer_id: str) -> int: ...

    async def set_balance(self, customer_id: str, micros: int) -> None:
        """Seed a balance (at start-up, from the ledger)."""
        ...

    async def adjust_balance(self, customer_id: str, delta_micros: int) -> int:
        """Add (payment) or subtract (charge) outside calls; returns the new balance."""
        ...

    async def take_free_minutes(self, account_id: str, cycle: str, wanted: int, bundle: int) -> int:
        """Atomically use up to `wanted` of the `bundle - used` minutes left; returns those granted."""
        ...

    async def debit_call(self, customer_id: str, day: str, micros: int) -> int:
        """Atomically take `micros` off the balance and add it to `day`'s spend; returns the balance."""
        ...


class MemoryCounterStore:
    """In-process counters; a lock keeps each operation atomic across threads too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._balance: dict[str, int] = {}
        self._spent: dict[tuple[str, str], int] = {}
        self._free: dict[tuple[str, str], int] = {}

    async def snapshot(self, customer_id: str, account_id: str | None, day: str, cycle: str) -> Snapshot:
        with self._lock:
            used = self._free.get((account_id, cycle), 0) if account_id else 0
            return self._balance.get(customer_id, 0), self._spent.get((customer_id, day), 0), used

    async def balance(self, customer_id: str) -> int:
        return self._balance.get(customer_id, 0)

    async def set_balance(self, customer_id: str, micros: int) -> None:
        with self._lock:
            self._balance[customer_id] = micros

    async def adjust_balance(self, customer_id: str, delta_micros: int) -> int:
        with self._lock:
            value = self._balance.get(customer_id, 0) + delta_micros
            self._balance[customer_id] = value
            return value

    async def take_free_minutes(self, account_id: str, cycle: str, wanted: int, bundle: int) -> int:
        with self._lock:
            used = self._free.get((account_id, cycle), 0)
            granted = max(0, min(wanted, bundle - used))
            if granted:
                self._free[(account_id, cycle)] = used + granted
            return granted

    async def debit_call(self, customer_id: str, day: str, micros: int) -> int:
        with self._lock:
            value = self._balance.get(customer_id, 0) - micros
            self._balance[customer_id] = value
            self._spent[(customer_id, day)] = self._spent.get((customer_id, day), 0) + micros
            return value
