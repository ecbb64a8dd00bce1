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

The same replication carries *tallies*: platform-wide counters other than calls, kept apart by a
key that starts with ``TALLY`` (toll-fraud limits: calls placed per rate window, today's settled
spend, the spend held by calls in progress; see routing.toll_fraud). Each process adds to its own
share and reads the sum, exactly as for calls. Where hosts share the state, a call placed and a
capped leg's hold are checked again in Redis in one step before the leg starts (`admit`, `reserve`).

The pure parts shared by the replicas are here: `CallCounts` (each process counts only its own
calls, the total is the sum of what each reports) and `ForwardingView` (last writer wins by stamp).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from routing.feature_codes import ForwardingChange
from routing.forwarding_store import ForwardingStore
from routing.model import ForwardKind
from routing.state import Overrides
from routing.toll_fraud import Admission

TALLY = "#"
"""First character of a tally's key (never an account id: those are ``customer/extension``)."""

HoldCheck = tuple[str, str, int | None]
"""A hold to reserve: (its hold tally, the spent tally it adds to, the cap in micros or None)."""

Stamp = tuple[int, int]
"""Orders forwarding changes: (version, writer). Compared as tuples; larger is newer."""


class AccountState(Protocol):
    # whether `reserve` checks holds against the caps beyond this host (Redis); when False it
    # returns None and the caller need not prepare the holds at all
    reserves_holds: bool

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

    def tally(self, key: str) -> int:
        """The platform-wide total of a tally (``key`` starts with `TALLY`): every process's share."""
        ...

    def add_tally(self, key: str, delta: int) -> int:
        """Move this process's share of a tally (never below 0); its new share."""
        ...

    def add_shared(self, key: str, delta: int, bucket: str) -> None:
        """Add ``delta`` (>= 0) to a tally that must outlive this process (a day's settled spend):
        durable in Redis (per ``bucket``, kept three days); elsewhere this process's share, as a
        worker's end stops the whole server and the day's spend is read back at start."""
        ...

    def drop_shared(self, key: str) -> None:
        """Forget a shared tally no one reads any more (a past day's), where it is this process's."""
        ...

    async def claim(self, key: str, bucket: str) -> bool:
        """True for the first process to claim ``key`` (a once-per-platform job, like a seed)."""
        ...

    def reserve(self, holds: Sequence[HoldCheck], delta: int, bucket: str) -> Awaitable[int] | None:
        """Add ``delta`` to this process's share of each hold tally only if, for every hold with a
        cap, the platform's holds plus its spent tally (in ``bucket``) stay within the cap, in one step
        (Redis: across hosts). Resolves to 0 when added, else the 1-based index of the hold refused;
        either way the caller takes ``delta`` back when the call ends (`add_tally`). None where one host is the platform: the host turn (`exclusive`) already makes routing's
        decision exact and the caller adds the tally as usual."""
        ...

    def admit(self, admission: Admission) -> Awaitable[int] | None:
        """Count a call placed, at once: +1 against its account, +1 in each of its rate windows. Where
        hosts share the counts (Redis), also check it against the account's limits platform-wide in one
        step with the counting (`Admission.refused`): resolves to 0 when admitted, else the refusal's
        index, and a refused call's rate windows are taken back (its +1 goes with its end, as any
        call's). None where one host is the platform: the host turn already made routing's decision
        exact."""
        ...

    def exclusive(self) -> AbstractContextManager[None]:
        """Around a new call's routing: what it reads and counts is decided by one process of the
        host at a time, having read what the others counted (server.account_state_replicated)."""
        ...


class AccountStateService(AccountState, Protocol):
    """An account state with a life: replicas start their refresh and stop it."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class LocalAccountState:
    """One process: a counter and the forwarding store."""

    reserves_holds = False

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
        return calls_only(self._counts.totals())

    def tally(self, key: str) -> int:
        return self._counts.total(key)

    def add_tally(self, key: str, delta: int) -> int:
        return self._counts.add(None, key, delta)

    def add_shared(self, key: str, delta: int, bucket: str) -> None:
        self.add_tally(key, delta)

    def drop_shared(self, key: str) -> None:
        self.add_tally(key, -self.add_tally(key, 0))

    async def claim(self, key: str, bucket: str) -> bool:
        return claim_share(self, key)

    def reserve(self, holds: Sequence[HoldCheck], delta: int, bucket: str) -> Awaitable[int] | None:
        return None

    def admit(self, admission: Admission) -> Awaitable[int] | None:
        count_placed(self, admission)
        return None

    def exclusive(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()


def claim_share(state: AccountState, key: str) -> bool:
    """`AccountState.claim` where every process's share is summed (no Redis): the first to see 0."""
    if state.tally(key):
        return False
    state.add_tally(key, 1)
    return True


def count_placed(state: AccountState, admission: Admission) -> None:
    """`AccountState.admit` where routing's decision stands (one host): what a call placed counts."""
    state.call_started(admission.account_id)
    for key in admission.placed:
        state.add_tally(key, 1)


@dataclass(frozen=True, slots=True)
class HostPeers:
    """The other workers of this host, for an account state shared through Redis: ``publish`` a
    message to them (``True``: at once), ``drain`` this worker's inbox, the host's ``lock_path``."""

    publish: Callable[[bytes, bool], object]
    drain: Callable[[], None]
    lock_path: str | None


class HostTurn:
    """One process of the host at a time around a new call's routing (`AccountState.exclusive`): a
    lock on a file the host's workers share (flock; the kernel releases it if its holder dies), then
    the inbox read, so what the previous holder counted (sent at once, before it let go) is known.
    ``inside`` tells the state to send its changes at once."""

    def __init__(self, lock_path: str | None, drain: Callable[[], None]) -> None:
        self._fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600) if lock_path else None
        self._drain = drain
        self.inside = False

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        fd = self._fd
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        self.inside = True
        try:
            self._drain()
            yield
        finally:
            self.inside = False
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def calls_only(totals: dict[str, int]) -> dict[str, int]:
    """Accounts' call counts without the tallies that share their table."""
    return {k: n for k, n in totals.items() if not k.startswith(TALLY)}


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
