"""Prepaid balances, daily spend and free minutes shared by every server process (Redis), with the
call path kept synchronous.

Why a cache: routing's authorisation hook is a plain function on the call path (server.billing
.run_now), so it cannot wait for Redis. Authorisation reads a CounterCache; settlement, at call end
and off the call path, applies the call's free minutes and debit atomically in Redis and writes the
values Redis answers into the cache at once; a refresh every `refresh_interval` pulls the counters
authorisation depends on (balance and today's spend of HARD or capped customers, free minutes of their
accounts), so another process's debit is seen within one interval. What is left: two processes may
each authorise a call against the same last euro within that interval (docs/rating.md).

Redis unreachable, or emptied (no seed marker): settlement is applied to the cache alone, queued on
disk (server.pending_ops) and the store is marked down (no more waiting on Redis per call). The
refresh task then re-seeds if needed, replays the queue and refreshes. Each operation carries an id
Redis remembers, so a replay whose first attempt did land is not applied twice; the cache always shows
Redis's value plus this process's queued operations, so a refresh never forgets a queued debit. A
debit reaches the ledger only once Redis has it (server.counter_seed relies on that): the ledger's outbox
(server.ledger_outbox) has it before the operation leaves the queue file.

Ledger unreachable (a PostgreSQL ledger down) while Redis holds seeded balances: the seed, which
only folds ledger rows past the watermark, waits; the process serves from Redis and the refresh
folds the ledger when it is back. Redis unseeded (or unreachable) as well: nothing holds the
balances, so the start fails (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import Gauge
from redis.exceptions import RedisError

from rating.balance_redis import RedisCounterStore
from rating.counters import MemoryCounterStore, Snapshot
from rating.ledger import LedgerUnavailable
from rating.ledger_store import LedgerAt
from rating.settlement import day_key
from server.counter_seed import local_balances, seed_redis
from server.ledger_outbox import LedgerOutbox
from server.ledger_reach import LedgerReach
from server.pending_ops import Op, OpKind, PendingOps
from sipcore.waiting import within

log = structlog.get_logger("sipcore.counters")

REDIS_UP = Gauge("sipcore_counters_redis_up", "1 while settlement reaches the shared counters in Redis")
PENDING = Gauge("sipcore_counters_pending_operations", "Counter operations queued for Redis (this process)")

UNREACHABLE = (RedisError, OSError, asyncio.TimeoutError)
CLOSE_TIMEOUT = 5.0


class Unseeded(Exception):
    """Redis has no seed marker (emptied or new): it must be seeded before anything is applied."""


@dataclass(frozen=True, slots=True)
class Watch:
    """Which counters to load: every customer's balance at start (and after a re-seed); at each
    refresh only what authorisation reads — the balance of `hard` (prepaid) customers, today's spend
    of `capped` ones, and the free minutes of their bundled `accounts`."""

    customers: tuple[str, ...]
    hard: tuple[str, ...]
    capped: tuple[str, ...]
    accounts: tuple[str, ...]
    timezone: str = "UTC"  # the day today's spend is counted in (rating.settlement.day_key)


class CounterCache(MemoryCounterStore):
    """The memory store, plus writing values read from Redis. ``cap``: the most of a customer's
    balance authorisation may count on (None: all of it) -- `SharedCounters.outage_cap`."""

    def __init__(self, cap: Callable[[str], int | None] | None = None) -> None:
        super().__init__()
        self._cap = cap

    async def snapshot(self, customer_id: str, account_id: str | None, day: str, cycle: str) -> Snapshot:
        snap = await super().snapshot(customer_id, account_id, day, cycle)
        cap = self._cap(customer_id) if self._cap is not None else None
        if cap is not None and cap < snap[0]:
            return (cap, snap[1], snap[2])
        return snap

    def put(
        self,
        balances: Mapping[str, int] | None = None,
        spent: Mapping[tuple[str, str], int] | None = None,
        free: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        with self._lock:
            self._balance.update(balances or {})
            self._spent.update(spent or {})
            self._free.update(free or {})


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SharedCounters:
    """The CounterStore Billing reads (snapshot and balance from the cache, never suspending) and
    settles through (`settlement()`)."""

    def __init__(
        self,
        redis: RedisCounterStore,
        pending: PendingOps,
        watch: Watch,
        refresh_interval: float,
        outbox: LedgerOutbox | None = None,
        clock: Callable[[], datetime] = _utc_now,
        client: Any = None,
        outage_reserve: int = 0,
    ) -> None:
        """``outbox``: where the call debits Redis has taken wait for the ledger (Billing's; None:
        nowhere, a benchmark). ``outage_reserve``: micro-units a HARD (prepaid) customer may still
        spend through this process while Redis is unreachable (0: its priced calls are refused until
        Redis is back)."""
        self.redis = redis
        self.pending = pending
        self.watch = watch
        self.refresh_interval = refresh_interval
        # a debit Redis has taken goes into it; it is flushed into the ledger before each seed (so an
        # emptied Redis is seeded with those debits) and told when the seed meets the ledger down
        self.outbox = outbox
        self.reach: LedgerReach | None = outbox.reach if outbox is not None else None
        self.clock = clock
        self._client = client  # closed with the store when given
        self.cache = CounterCache(self.outage_cap)
        self.up = False
        self._down_logged = False
        self._needs_seed = True
        self._opening: Mapping[str, int] = {}
        self._ledger_path: LedgerAt = Path()  # the ledger the seed reads (set by start)
        self._queued: dict[str, Op] = {}
        self._d_bal: Counter[str] = Counter()
        self._d_spent: Counter[tuple[str, str]] = Counter()
        self._d_free: Counter[tuple[str, str]] = Counter()
        self._seq = 0  # bumped by every write to the cache from an operation
        self._written: dict[tuple[str, ...], int] = {}
        self._answered: list[str] = []  # op ids whose Redis marker can go
        self._task: asyncio.Task[None] | None = None
        self._busy = asyncio.Lock()  # one seed / replay / refresh at a time
        self.outage_reserve = outage_reserve
        self._hard = frozenset(watch.hard)
        self._outage_spent: Counter[str] = Counter()  # debits applied to the cache alone, this outage

    # -- lifecycle --
    async def start(self, opening: Mapping[str, int], ledger_path: LedgerAt) -> None:
        """Seed Redis (or, unreachable, the cache from config + ledger), replay what an earlier run
        left queued, load the counters, then refresh every interval."""
        self._opening, self._ledger_path = opening, ledger_path
        for op in await asyncio.to_thread(self.pending.open):
            self._hold(op)
        if not await self.sync():  # unreachable: what the memory backend would start from
            balances = await asyncio.to_thread(local_balances, opening, ledger_path)
            self.cache.put(
                # a balance Redis answered before failing (a replayed debit) is fresher than the ledger
                {c: v + self._d_bal[c] for c, v in balances.items() if ("b", c) not in self._written},
                dict(self._d_spent),
                dict(self._d_free),
            )
        self._task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.up:  # last replay and marker clean-up; whatever is left stays on disk
            try:
                await within(self.sync(), CLOSE_TIMEOUT)
            except TimeoutError:
                log.warning("counters_close_timeout", queued=len(self._queued))
        await asyncio.to_thread(self.pending.close)
        if self._client is not None:
            await self._client.aclose()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                await self.sync()
            except LedgerUnavailable as exc:  # Redis unseeded and the ledger down: seeded when it is back
                if self.reach is not None:
                    self.reach.failed(exc, "seed")
            except Exception:
                log.exception("counters_refresh_failed")

    async def sync(self) -> bool:
        """Seed if needed, replay the queue, load counters; True when Redis answered all of it.
        An emptied Redis (no seed marker) is seeded again from config + ledger in the same pass."""
        async with self._busy:
            for attempt in (1, 2):
                try:
                    await self._sync_once()
                    break
                except (*UNREACHABLE, Unseeded) as exc:
                    if attempt == 1 and _unseeded(exc):
                        self._needs_seed = True
                        continue
                    self._down(exc)
                    return False
        if not self.up:
            log.info("counters_redis_up", queued=len(self._queued))
            self._outage_spent.clear()
        self.up, self._down_logged = True, False
        REDIS_UP.set(1)
        return True

    async def _sync_once(self) -> None:
        full = self._needs_seed or not self.up
        if self._needs_seed:
            try:
                if self.outbox is not None:
                    await self.outbox.flush()
                await seed_redis(self.redis, self._opening, self._ledger_path)
            except LedgerUnavailable as exc:
                if await self.redis.watermark() is None:  # nothing seeded: no balance to serve from
                    raise
                if self.reach is not None:
                    self.reach.failed(exc, "seed")  # Redis's balances stand; folded when it is back
            else:
                self._needs_seed = False
                if self.reach is not None:
                    self.reach.worked()
        if self._queued:
            await self._replay()
        await self._load(everything=full)
        answered, self._answered = self._answered, []
        await self.redis.forget_ops(answered)

    def _down(self, exc: BaseException) -> None:
        if _unseeded(exc):
            self._needs_seed = True
        if self.up or not self._down_logged:  # once per outage, not once per call or refresh
            log.warning("counters_redis_down", error=repr(exc), queued=len(self._queued))
            self._down_logged = True
        self.up = False
        REDIS_UP.set(0)

    # -- reads (authorisation; never suspend) --
    async def snapshot(self, customer_id: str, account_id: str | None, day: str, cycle: str) -> Snapshot:
        return await self.cache.snapshot(customer_id, account_id, day, cycle)

    def outage_cap(self, customer_id: str) -> int | None:
        """What authorisation may count on of a HARD customer's balance while Redis is unreachable:
        what is left of ``outage_reserve`` in this process (None: no cap, Redis is up or the customer
        is not HARD). Why: the other processes' debits are not seen during an outage, so a cached
        balance could be spent once per process; a prepaid carrier refuses (or allows a small
        reserve) rather than let a balance be spent several times over."""
        if self.up or customer_id not in self._hard:
            return None
        return self.outage_reserve - self._outage_spent[customer_id]

    async def balance(self, customer_id: str) -> int:
        return await self.cache.balance(customer_id)

    def settlement(self, op_id: str, at: datetime, memo: str) -> CallSettlement:
        """The CounterStore one call's settlement moves counters through; `op_id` must be unique."""
        return CallSettlement(self, op_id, at.isoformat(), memo)

    # -- operations --
    async def take_free(self, op: Op, bundle: int) -> int:
        if self.up:
            try:
                granted, used = await self.redis.take_free_once(
                    op.id, op.subject, op.period, op.amount, bundle
                )
            except UNREACHABLE as exc:
                self._down(exc)
            else:
                self._answered.append(op.id)
                self._put_free(op.subject, op.period, used)
                return granted
        granted = await self.cache.take_free_minutes(op.subject, op.period, op.amount, bundle)
        await self._queue(replace(op, amount=granted))
        return granted

    async def debit(self, op: Op) -> int:
        if self.up:
            try:
                bal, spent = await self.redis.debit_once(op.id, op.subject, op.period, op.amount)
            except UNREACHABLE as exc:
                self._down(exc)
            else:
                self._answered.append(op.id)
                self._put_debit(op.subject, op.period, bal, spent)
                if self.outbox is not None:
                    await self.outbox.taken(op)
                return await self.cache.balance(op.subject)
        balance = await self.cache.debit_call(op.subject, op.period, op.amount)
        self._outage_spent[op.subject] += op.amount
        await self._queue(op)
        return balance

    async def _queue(self, op: Op) -> None:
        """Hold an operation applied to the cache alone until Redis has it (on disk first)."""
        self._hold(op)
        try:
            await asyncio.to_thread(self.pending.add, op)
        except Exception:
            log.exception("counters_pending_write_failed", op=op.id)  # kept in memory all the same

    def _hold(self, op: Op) -> None:
        self._queued[op.id] = op
        self._shift(op, 1)
        PENDING.set(len(self._queued))

    def _shift(self, op: Op, sign: int) -> None:
        if op.kind is OpKind.DEBIT:
            self._d_bal[op.subject] -= sign * op.amount
            self._d_spent[(op.subject, op.period)] += sign * op.amount
        else:
            self._d_free[(op.subject, op.period)] += sign * op.amount

    async def _replay(self) -> None:
        done: list[str] = []
        try:
            for op in list(self._queued.values()):
                if op.kind is OpKind.DEBIT:
                    bal, spent = await self.redis.debit_once(op.id, op.subject, op.period, op.amount)
                else:
                    used = await self.redis.force_free(op.id, op.subject, op.period, op.amount)
                del self._queued[op.id]
                self._shift(op, -1)
                done.append(op.id)
                if op.kind is OpKind.DEBIT:
                    self._put_debit(op.subject, op.period, bal, spent)
                    if self.outbox is not None:  # in the ledger's outbox before it leaves the queue file
                        await self.outbox.taken(op)
                else:
                    self._put_free(op.subject, op.period, used)
        finally:
            PENDING.set(len(self._queued))
            if done:
                self._answered += done
                log.info("counters_replayed", operations=len(done), left=len(self._queued))
                await asyncio.to_thread(self.pending.remove, done)

    # -- a reload --
    async def reconfigure(self, opening: Mapping[str, int], watch: Watch) -> None:
        """New opening balances and customers: seeded again (the seed folds only what changed: new
        customers, the difference of an edited opening balance), then what to watch loaded. Redis
        unreachable: the next refresh seeds."""
        self._opening, self.watch = opening, watch
        self._hard = frozenset(watch.hard)
        self._needs_seed = True
        await self.sync()

    # -- live ledger entries (admin API payments and charges) --
    async def fold(self, entry_id: int, customer_id: str, amount: int) -> int:
        """Fold a live ledger entry into Redis once (by ledger id) and the answer into the cache at
        once; returns the balance. Raises when Redis cannot be reached (the entry stays in the ledger
        and is folded by a repeat of the request, or by the next seed)."""
        _applied, balance = await self.redis.fold_once(entry_id, customer_id, amount)
        self._put_balance(customer_id, balance)
        return await self.cache.balance(customer_id)

    async def reload_balance(self, customer_id: str) -> int:
        """Read one balance from Redis into the cache now (another process folded an entry)."""
        balance = await self.redis.balance(customer_id)
        self._put_balance(customer_id, balance)
        return await self.cache.balance(customer_id)

    # -- the cache: Redis's value plus what is still queued --
    def _put_balance(self, customer_id: str, balance: int) -> None:
        self._seq += 1
        self._written[("b", customer_id)] = self._seq
        self.cache.put({customer_id: balance + self._d_bal[customer_id]})

    def _put_debit(self, customer_id: str, day: str, balance: int, spent: int) -> None:
        self._seq += 1
        self._written[("b", customer_id)] = self._written[("s", customer_id, day)] = self._seq
        self.cache.put(
            {customer_id: balance + self._d_bal[customer_id]},
            {(customer_id, day): spent + self._d_spent[(customer_id, day)]},
        )

    def _put_free(self, account_id: str, cycle: str, used: int) -> None:
        self._seq += 1
        self._written[("f", account_id, cycle)] = self._seq
        self.cache.put(free={(account_id, cycle): used + self._d_free[(account_id, cycle)]})

    async def _load(self, everything: bool) -> None:
        """Pull the watched counters; a key an operation wrote meanwhile is left for the next pass."""
        now = self.clock()
        day, cycle = day_key(now, self.watch.timezone), now.strftime("%Y-%m")
        w = self.watch
        customers = list(w.customers if everything else w.hard)
        spent_keys = [(c, day) for c in w.capped]
        free_keys = [(a, cycle) for a in w.accounts]
        seq = self._seq
        seeded, balances, spent, used = await self.redis.read(customers, spent_keys, free_keys)
        if not seeded:
            raise Unseeded("no seed marker in Redis")

        def fresh(key: tuple[str, ...]) -> bool:
            return self._written.get(key, 0) <= seq

        self.cache.put(
            {c: v + self._d_bal[c] for c, v in zip(customers, balances, strict=True) if fresh(("b", c))},
            {k: v + self._d_spent[k] for k, v in zip(spent_keys, spent, strict=True) if fresh(("s", *k))},
            {k: v + self._d_free[k] for k, v in zip(free_keys, used, strict=True) if fresh(("f", *k))},
        )
        self._written = {k: s for k, s in self._written.items() if s > seq}


def _unseeded(exc: BaseException) -> bool:
    return isinstance(exc, Unseeded) or "UNSEEDED" in str(exc)


class CallSettlement:
    """What `rating.settlement.settle_call` sees for one call: reads from the cache, moves under
    this settlement's operation ids (one for its free minutes, one for its debit). The part of the
    CounterStore protocol settlement uses: balances are set and adjusted through the ledger."""

    def __init__(self, shared: SharedCounters, op_id: str, at: str, memo: str) -> None:
        self._shared, self._id, self._at, self._memo = shared, op_id, at, memo

    async def snapshot(self, customer_id: str, account_id: str | None, day: str, cycle: str) -> Snapshot:
        return await self._shared.snapshot(customer_id, account_id, day, cycle)

    async def balance(self, customer_id: str) -> int:
        return await self._shared.balance(customer_id)

    async def take_free_minutes(self, account_id: str, cycle: str, wanted: int, bundle: int) -> int:
        op = Op(f"{self._id}:f", OpKind.FREE, account_id, cycle, wanted)
        return await self._shared.take_free(op, bundle)

    async def debit_call(self, customer_id: str, day: str, micros: int) -> int:
        op = Op(f"{self._id}:d", OpKind.DEBIT, customer_id, day, micros, self._at, self._memo)
        return await self._shared.debit(op)
