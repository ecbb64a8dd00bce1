"""Account state that routing decides on: calls in progress per account, and forwarding set by phone.

The call controller reads it synchronously on every new call (call limits, call waiting, forwarding
overrides) and reports changes to it (a call started or ended for an account, a feature code). One
process keeps it here; several workers or hosts must see one truth (see the other backends).
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from routing.feature_codes import ForwardingChange
from routing.forwarding_store import ForwardingStore
from routing.state import Overrides


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


class LocalAccountState:
    """One process: a counter and the forwarding store."""

    def __init__(self, forwarding: ForwardingStore) -> None:
        self.forwarding = forwarding
        self._active: Counter[str] = Counter()

    def calls_of(self, account_id: str) -> int:
        return self._active[account_id]

    def call_started(self, account_id: str) -> None:
        self._active[account_id] += 1

    def call_ended(self, account_id: str) -> None:
        left = self._active[account_id] - 1
        if left <= 0:
            del self._active[account_id]
        else:
            self._active[account_id] = left

    def overrides(self) -> Overrides:
        return self.forwarding.snapshot()

    def apply_forwarding(self, change: ForwardingChange) -> None:
        self.forwarding.apply(change)

    def busy_accounts(self) -> dict[str, int]:
        return dict(self._active)
