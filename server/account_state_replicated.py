"""Account state replicated across the worker processes of one server (memory backends, no Redis).

Each worker keeps a full replica, so the call controller's reads stay local and synchronous.

Calls in progress: a call starts and ends in the worker that owns its Call-ID, which counts it (for
its caller, and for its callee once answered). After each change the worker publishes its own new
count for the account (absolute, not +1/-1); the others keep each worker's count apart and read the
sum (`CallCounts`). The channel keeps one sender's order, so a call_ended never overtakes its
call_started. An ended call is published at once, before the answer to its BYE leaves, and a
worker reads its inbox before it routes an INVITE, so hanging up and calling straight back never
finds the phone busy. Every REPORT_INTERVAL each worker also publishes its whole table, which repairs a
frame the channel had to drop. Count frames go out at the end of the loop iteration that made the
change, ahead of anything a phone can send in answer to it.

Forwarding set by feature code: the worker that took the code applies it and publishes it at once
(before its answer leaves), stamped (Lamport clock, worker index); every replica takes a change only
if its stamp is newer (`ForwardingView`), so two changes of one account in two workers end the same
everywhere. Worker 0 writes every change it takes to the forwarding file (one writer); every worker
loads the file at start.

Decisions that must not be taken twice (a new call's limits: ``max_calls``, the call rate, the daily
caps' holds) run inside `exclusive`: a lock on a file all workers share (flock) taken around the
routing of a new call, the inbox read inside it, and the changes the call makes sent at once before
it is released; so a worker that routes a call next has read what the previous one counted, and two
calls set up in two workers in the same instant are decided one after the other. What is left:
counts that do not go through `exclusive` (an answered callee's, a call's end) arrive one hand-off
later (well under a millisecond on an idle server).

Messages are msgpack arrays: ``[1, worker, account, calls]``, ``[2, worker, {account: calls}]`` (the
periodic table), ``[3, worker, clock, account, kind, target]`` (a forwarding change).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import msgpack
import structlog

from routing.feature_codes import ForwardingChange
from routing.model import ForwardKind
from routing.state import Overrides
from routing.toll_fraud import Admission
from server.account_state import (
    CallCounts,
    ForwardingView,
    HoldCheck,
    HostTurn,
    calls_only,
    claim_share,
    count_placed,
)

log = structlog.get_logger("sipcore.account_state")

CALLS = 1
TABLE = 2
FORWARDING = 3
REPORT_INTERVAL = 10.0

Publish = Callable[[bytes, bool], object]
"""Hands a message to every other worker; True sends it at once instead of at the iteration's end."""


class AccountMessageError(ValueError):
    """A replication message that cannot be read (dropped by the receiver)."""


def encode_calls(worker: int, account_id: str, calls: int) -> bytes:
    return msgpack.packb((CALLS, worker, account_id, calls))


def encode_table(worker: int, table: dict[str, int]) -> bytes:
    return msgpack.packb((TABLE, worker, table))


def encode_forwarding(worker: int, clock: int, change: ForwardingChange) -> bytes:
    return msgpack.packb((FORWARDING, worker, clock, change.account_id, change.kind.value, change.target))


def decode(payload: bytes) -> tuple:
    """``(CALLS, worker, account, calls)``, ``(TABLE, worker, table)`` or ``(FORWARDING, worker,
    clock, change)``. Raises `AccountMessageError`."""
    try:
        v = msgpack.unpackb(payload, use_list=False, raw=False, strict_map_key=False)
        kind, worker = v[0], v[1]
        if not isinstance(worker, int):
            raise TypeError("worker is not an integer")
        if kind == CALLS and isinstance(v[2], str) and isinstance(v[3], int):
            return CALLS, worker, v[2], v[3]
        if kind == TABLE and isinstance(v[2], dict):
            return TABLE, worker, {str(a): int(n) for a, n in v[2].items()}
        if kind == FORWARDING and isinstance(v[2], int) and isinstance(v[3], str):
            target = v[5]
            if target is not None and not isinstance(target, str):
                raise TypeError("target is not text")
            return FORWARDING, worker, v[2], ForwardingChange(v[3], ForwardKind(v[4]), target)
    except Exception as exc:
        raise AccountMessageError(f"unreadable account-state message: {exc!r}") from exc
    raise AccountMessageError(f"unknown account-state message kind {v[0]!r}")


class ReplicatedAccountState:
    """One worker's replica (see the module docstring). ``persist`` is given to worker 0 only."""

    reserves_holds = False  # one host: the host turn already decides every hold

    def __init__(
        self,
        index: int,
        publish: Publish,
        forwarding: Overrides,
        persist: Callable[[ForwardingChange], object] | None = None,
        report_interval: float = REPORT_INTERVAL,
        drain: Callable[[], None] = lambda: None,
        lock_path: str | None = None,
    ) -> None:
        self.index = index
        self._publish = publish
        self._persist = persist
        self._report_interval = report_interval
        self._counts = CallCounts()
        self._forwarding = ForwardingView(forwarding)
        self._clock = 0
        self._reporter: asyncio.Task[None] | None = None
        self._turn = HostTurn(lock_path, drain)  # drain: reads this worker's inbox now

    async def start(self) -> None:
        self._reporter = asyncio.get_running_loop().create_task(self._report_loop())

    async def close(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
            self._reporter = None
        self._turn.close()

    def reserve(self, holds: Sequence[HoldCheck], delta: int, bucket: str) -> Awaitable[int] | None:
        return None  # one host: the host turn decides exactly

    def admit(self, admission: Admission) -> Awaitable[int] | None:
        count_placed(self, admission)  # one host: the host turn decided exactly
        return None

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """One worker at a time (module docstring); what the block publishes goes out at once."""
        return self._turn.turn()

    # -- what the call controller reads and reports --
    def calls_of(self, account_id: str) -> int:
        return self._counts.total(account_id)

    def call_started(self, account_id: str) -> None:
        calls = self._counts.add(self.index, account_id, 1)
        self._publish(encode_calls(self.index, account_id, calls), self._turn.inside)

    def call_ended(self, account_id: str) -> None:
        # at once, ahead of the BYE's answer: a phone that hangs up and calls straight back is not
        # found busy by the other worker (which drains its inbox before routing an INVITE)
        calls = self._counts.add(self.index, account_id, -1)
        self._publish(encode_calls(self.index, account_id, calls), True)

    def overrides(self) -> Overrides:
        return self._forwarding.snapshot()

    def apply_forwarding(self, change: ForwardingChange) -> None:
        self._clock += 1
        self._take(change, (self._clock, self.index))
        self._publish(encode_forwarding(self.index, self._clock, change), True)

    def busy_accounts(self) -> dict[str, int]:
        return calls_only(self._counts.totals())

    def tally(self, key: str) -> int:
        return self._counts.total(key)

    def add_tally(self, key: str, delta: int) -> int:
        # published like a call count (absolute share), at once: a limit is read by every worker
        share = self._counts.add(self.index, key, delta)
        self._publish(encode_calls(self.index, key, share), True)
        return share

    def add_shared(self, key: str, delta: int, bucket: str) -> None:
        # a worker's end stops every worker: the day's spend is read back whole at the next start
        self.add_tally(key, delta)

    def drop_shared(self, key: str) -> None:
        self.add_tally(key, -self.add_tally(key, 0))

    async def claim(self, key: str, bucket: str) -> bool:
        return claim_share(self, key)

    # -- from the other workers --
    def receive(self, payload: bytes) -> None:
        try:
            message = decode(payload)
        except AccountMessageError as exc:
            log.warning("account_message_dropped", error=str(exc))
            return
        kind, worker = message[0], message[1]
        if worker == self.index:
            return  # our own counts are ours to keep
        if kind == CALLS:
            self._counts.set(worker, message[2], message[3])
        elif kind == TABLE:
            self._counts.replace(worker, message[2])
        else:
            clock = message[2]
            self._clock = max(self._clock, clock)
            self._take(message[3], (clock, worker))

    def _take(self, change: ForwardingChange, stamp: tuple[int, int]) -> None:
        if self._forwarding.apply(change, stamp) and self._persist is not None:
            try:
                self._persist(change)
            except Exception:  # kept in memory; the next change rewrites the whole file
                log.exception("forwarding_write_failed", account=change.account_id)

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self._report_interval)
            self._publish(encode_table(self.index, self._counts.of(self.index)), False)
