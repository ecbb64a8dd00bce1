"""Money at the edge: the rater's authorisation as routing's hook at call setup, and at call end the
settlement (free minutes, balance debit, low-balance events), the CDR into the durable pipeline and
the call debit into the ledger.

With `rating.counters.backend: memory` (the default) balances live in a MemoryCounterStore seeded at
start from the configuration's opening balances plus every ledger movement since (payments, charges,
fees and earlier call debits), so a restart does not forget what prepaid customers spent; each process
has its own copy. With `redis` they are shared by every process (server.shared_counters): authorisation
still reads a local cache synchronously, settlement moves the counters in Redis. Call debits are
appended to the ledger in batches off the call path (with Redis, once Redis has them); the CDR spool is
what makes a finished call durable.
A settled debit is on local disk (server.ledger_outbox) before it counts as handed over to the ledger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import structlog

from calls.call_ended import CallEnded
from cdr import CdrPipeline, CdrRecord, open_store
from rating.alerts import publish_low_balance
from rating.balance_redis import RedisCounterStore
from rating.counters import MemoryCounterStore
from rating.ledger import EntryKind, LedgerEntry, LedgerUnavailable, signed_micros
from rating.ledger_store import LedgerAt, ledger_at, open_ledger
from rating.model import BalanceMode, CallToRate, Direction, RatingSetup, Refusal
from rating.money import from_micros, to_micros
from rating.rater import Rater
from rating.settlement import authorise_call, day_key, settle_call
from routing import Authorisation, AuthoriseRequest
from routing.toll_fraud import hold_keys, hold_parties, seeded_key, spent_keys
from sipcore.waiting import Background, within

from .counter_seed import ledger_totals
from .ledger_outbox import LedgerOutbox
from .pending_ops import PendingOps
from .shared_counters import SharedCounters, Watch

log = structlog.get_logger("sipcore.billing")

SEED_WAIT = 5.0  # seconds the start waits for the spool replay and the CDR store's answer


class Tallies(Protocol):
    """The part of server.account_state.AccountState the daily caps use."""

    reserves_holds: bool

    def tally(self, key: str) -> int: ...

    def add_tally(self, key: str, delta: int) -> int: ...

    def add_shared(self, key: str, delta: int, bucket: str) -> None: ...

    def drop_shared(self, key: str) -> None: ...

    async def claim(self, key: str, bucket: str) -> bool: ...

    def reserve(
        self, holds: Sequence[tuple[str, str, int | None]], delta: int, bucket: str
    ) -> Awaitable[int] | None: ...


# Refusal → (SIP status, reason phrase, Warning text)
REFUSALS: dict[Refusal, tuple[int, str, str]] = {
    Refusal.NO_RATE: (404, "No Route To Destination", "destination not in the rate table"),
    Refusal.BLOCKED_CATEGORY: (403, "Destination Blocked", "destination category blocked for this account"),
    Refusal.OUT_OF_PLAN_BLOCKED: (403, "Out Of Plan", "out-of-plan calls are blocked for this account"),
    Refusal.BALANCE_EXHAUSTED: (402, "Payment Required", "prepaid balance exhausted"),
    Refusal.DAILY_CAP_REACHED: (403, "Daily Spending Cap Reached", "daily spending cap reached"),
    Refusal.ACCOUNT_DAILY_CAP_REACHED: (
        403,
        "Daily Spending Cap Reached",
        "daily spending cap of this account reached",
    ),
    Refusal.BILLING_ENDED: (403, "Billing Ended", "account past its billing end date"),
}

_DIRECTIONS = {
    "outbound": Direction.OUTBOUND,
    "inbound": Direction.INBOUND,
    "internal": Direction.INTERNAL,
    "forwarded": Direction.FORWARDED,
}


def _utc_now() -> datetime:
    return datetime.now(UTC)


def run_now(coro: Any) -> Any:
    """Run a coroutine that never suspends (the memory counter store) to completion, synchronously:
    routing's authorisation hook is a plain function on the call path."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("counter store suspended: use an async authorisation path for remote stores")


async def _hold_answer(pending: Awaitable[int]) -> Authorisation:
    """`Tallies.reserve`'s answer as routing's: 0 granted, 1 the customer's cap, 2 the account's."""
    refused = await pending
    if not refused:
        return Authorisation(True)
    cause = Refusal.DAILY_CAP_REACHED if refused == 1 else Refusal.ACCOUNT_DAILY_CAP_REACHED
    status, reason, warning = REFUSALS[cause]
    return Authorisation(False, status, reason, warning, cause=str(cause))


class Billing:
    def __init__(
        self,
        cfg: Any,
        rater: Rater,
        pipeline: CdrPipeline,
        ledger_path: LedgerAt,
        shared: SharedCounters | None = None,
        tallies: Tallies | None = None,
        seed_spend: bool = False,
        outbox: LedgerOutbox | None = None,
    ) -> None:
        """``outbox``: where call debits wait for the ledger, the one ``shared`` hands its debits to
        too (None: in memory only)."""
        self.cfg = cfg
        # the platform-wide toll-fraud tallies (server.account_state): settled spend of the day and
        # what calls in progress hold, per customer and account, summed over every process
        self.tallies = tallies
        self._spent_days: dict[str, str] = {}  # this process's spent tallies -> their day (pruning)
        self.seed_spend = seed_spend  # this process may load the day's spend from the CDR store at start
        self.rater = rater
        self.pipeline = pipeline
        self.shared = shared
        # what authorisation reads: the memory store, or the shared store's local cache
        self.counters: MemoryCounterStore = shared.cache if shared is not None else MemoryCounterStore()
        self.ledger_path = ledger_path  # the configured ledger: a SQLite file or a PostgreSQL database
        self.outbox = outbox if outbox is not None else LedgerOutbox(ledger_path, None)
        self.reach = self.outbox.reach
        self._tasks = Background()  # settlements of ended calls
        self._flusher: asyncio.Task[None] | None = None
        self.clock: Callable[[], datetime] = _utc_now  # the call-setup time authorisation prices at
        self._seeded_through = 0  # memory counters: the last ledger id the seeded balances include
        # (replaced at, configuration, rater) before each reload: a call is settled by the rater it
        # was authorised with, the one in effect when it started (``_rating_at``)
        self._earlier: list[tuple[float, Any, Rater]] = []
        self._applied: set[int] = set()  # memory counters: live entries applied since
        # the billing run (docs/rating.md "Billing run"): the latest month this process has run
        self.billing_interval = 5.0  # seconds between two looks at the clock for a due billing date
        self._fees_done: str | None = None
        self._fees_read = False  # _fees_done read from the ledger (at start, or once it is back)
        self._fees_task: asyncio.Task[None] | None = None
        self._fees_lock = asyncio.Lock()

    # -- lifecycle --
    async def start(self) -> None:
        """Replay the ledger outbox, seed the counters, start the pipeline and the loops. The ledger
        unreachable: with Redis counters already seeded the host serves and folds the ledger later;
        with memory counters (whose balances are read from the ledger) the start fails
        (docs/reliability.md "Ledger outage")."""
        from server.billing_run import last_billed

        await self.outbox.open()
        try:
            # read before the seed: fees of a month completed by then are in the seeded balances
            self._fees_done = await asyncio.to_thread(last_billed, self.ledger_path)
            self._fees_read = True
            await self.outbox.flush()  # memory counters read the ledger next: the outbox goes in first
        except LedgerUnavailable as exc:
            if self.shared is None:
                log.error("ledger_unreachable_at_start", ledger=str(self.ledger_path), error=str(exc),
                          detail="memory counters start from the ledger's balances: not serving without them")  # fmt: skip
                raise
            self.reach.failed(exc, "start")  # the Redis counters hold the balances
        await self._seed_counters()
        await self.pipeline.start()
        await self._seed_spend()
        self._flusher = asyncio.get_running_loop().create_task(self._flush_debits_loop())
        self._fees_task = asyncio.get_running_loop().create_task(self._billing_loop())

    async def _seed_spend(self) -> None:
        """Today's settled spend (operator's day), read from the CDR store into this process's share
        of the spend tallies before it serves, so a restart does not give a capped account its cap
        again. One process of the platform does it: worker 0 (a worker's end stops the whole server,
        so every start is a start of all of them); with Redis, where the day's spend is durable, only
        the first process up that day, or after Redis lost it (a marker claimed once). Waits
        (bounded) for this process's spool replay to reach the store."""
        tallies = self.tallies
        if tallies is None or not self.seed_spend:
            return
        zone = self.rater.setup.timezone
        day = day_key(self.clock(), zone)
        marker = seeded_key(day)
        if tallies.tally(marker):  # seeded already (durable in Redis): the spend is there
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SEED_WAIT
        first = datetime.combine(date.fromisoformat(day), dtime(0), ZoneInfo(zone))
        try:
            await within(self.pipeline.writer.opened.wait(), SEED_WAIT)
            while self.pipeline.spool.backlog_bytes() and loop.time() < deadline:
                await asyncio.sleep(0.05)
            rows = await within(
                self.pipeline.store.usage(first, first + timedelta(days=1), by="account"), SEED_WAIT
            )
        except Exception as exc:
            log.warning("spend_seed_failed", day=day, error=repr(exc))
            return
        if not await tallies.claim(marker, day):  # another process seeded meanwhile
            return
        spent = 0
        for usage in rows:
            micros = to_micros(usage.price, "price")
            if micros > 0 and not usage.internal:
                self._count_spend(usage.customer_id, usage.account_id, day, micros)
                spent += micros
        log.info("spend_seeded", day=day, rows=len(rows), total=str(from_micros(spent)),
                 backlog=self.pipeline.spool.backlog_bytes())  # fmt: skip

    async def _seed_counters(self) -> None:
        """Opening balance + ledger movements: into the memory store, or folded into Redis once."""
        from config.bridge import initial_balances

        opening = {c: to_micros(Decimal(v), "balance") for c, v in initial_balances(self.cfg).items()}
        if self.shared is not None:
            await self.shared.start(opening, self.ledger_path)
            return

        totals = await asyncio.to_thread(ledger_totals, self.ledger_path, 0)
        self._seeded_through = totals.last_id  # live entries up to here are in the seeded balances
        for customer_id, amount in opening.items():
            await self.counters.set_balance(customer_id, amount + totals.every.get(customer_id, 0))

    async def close(self) -> None:
        if settling := list(self._tasks):
            await asyncio.wait(settling, timeout=5)
        if self._flusher is not None:
            self._flusher.cancel()
        if self._fees_task is not None:
            self._fees_task.cancel()
        if self.shared is not None:
            await self.shared.close()  # a last replay: what Redis takes joins the ledger below
        await self.outbox.close()  # what the ledger does not take now: written at the next start
        await self.pipeline.stop()

    # -- live payments and charges (admin API) --
    async def record(
        self, customer_id: str, kind: EntryKind, amount: Decimal, operation_id: str, note: str = ""
    ) -> tuple[LedgerEntry, bool]:
        """Write a payment or charge into the ledger once per ``operation_id``: (the stored entry —
        the first one on a repeat —, whether this call wrote it). Raises ValueError on a bad amount."""
        from config.bridge import initial_balances
        from rating.money import MAX_AMOUNT_MICROS, MoneyError

        delta = signed_micros(kind, amount)
        entry = LedgerEntry(customer_id, kind, delta, _utc_now(), note, None, operation_id)
        opening = to_micros(Decimal(initial_balances(self.cfg).get(customer_id, 0)), "balance")

        def write() -> tuple[LedgerEntry, bool]:
            with open_ledger(self.ledger_path) as ledger:
                first = ledger.by_operation(operation_id)
                if first is not None:
                    return first, False  # a repeat: the first result, whatever the balance is now
                after = opening + ledger.balance_micros(customer_id) + delta
                if abs(after) > MAX_AMOUNT_MICROS:  # as `sipcore balance add-payment` refuses it
                    raise MoneyError(f"{kind} amount: {amount} would bring the balance of {customer_id} "
                                     f"to {from_micros(after)}, beyond the maximum allowed; nothing written")  # fmt: skip
                return ledger.append_once(entry)  # the unique index decides a concurrent repeat

        return await asyncio.to_thread(write)

    async def apply_entry(self, entry: LedgerEntry, origin: bool) -> int:
        """Put a live ledger entry into the balance authorisation reads, at most once; returns the
        balance (micro-units). ``origin``: this process wrote the entry. With Redis counters the
        origin folds it into Redis (once per ledger id) and the others re-read the balance; with
        memory counters every process adds it once (entries the seed already read are skipped)."""
        assert entry.id is not None
        customer_id = entry.customer_id
        if self.shared is not None:
            if origin:
                return await self.shared.fold(entry.id, customer_id, entry.amount_micros)
            return await self.shared.reload_balance(customer_id)
        if entry.id > self._seeded_through and entry.id not in self._applied:
            self._applied.add(entry.id)
            return await self.counters.adjust_balance(customer_id, entry.amount_micros)
        return await self.counters.balance(customer_id)

    # -- billing run (fees) --
    async def run_fees(
        self, year: int, month: int, customer: str | None = None, dry_run: bool = False
    ) -> list[Any]:
        """Post the fees of a month (one customer's or all) once each, and apply them to the live
        balances this process authorises from (a fee another process wrote is applied too, once by
        ledger id). Returns server.billing_run.Posted per fee."""
        from rating.billing_cycle import fee_postings
        from server.billing_run import post_fees

        setup = self.rater.setup
        b = self.cfg.file.rating.billing
        postings = fee_postings(setup, year, month, customer, b.day, b.timezone)
        opening = {c: to_micros(Decimal(v), "balance") for c, v in _opening(self.cfg).items()}
        thresholds = {c.id: to_micros(c.low_balance_threshold, "threshold") for c in setup.customers.values()}
        at = self.clock()
        async with self._fees_lock:
            done = await asyncio.to_thread(
                post_fees, self.ledger_path, postings, at, opening, thresholds, dry_run
            )
            if not dry_run:
                for posted in done:
                    await self.apply_entry(posted.entry, origin=True)
                    if posted.low is not None:
                        publish_low_balance(posted.low)
        if not dry_run and any(p.created for p in done):
            log.info("fees_posted", period=f"{year:04d}-{month:02d}", customer=customer,
                     posted=sum(p.created for p in done), total=len(done))  # fmt: skip
        return done

    async def run_billing_due(self) -> list[str]:
        """The server's own run: every month due at ``clock()`` this process has not run yet (catching
        up those missed while down), marked completed in the ledger. Returns the months run."""
        from rating.billing_cycle import month_text, months_to_run
        from server.billing_run import last_billed, mark_billed

        if not self._fees_read:  # the ledger was down at start
            self._fees_done = await asyncio.to_thread(last_billed, self.ledger_path)
            self._fees_read = True
        b = self.cfg.file.rating.billing
        months = months_to_run(self.clock(), b.day, b.timezone, b.catch_up_months, self._fees_done)
        ran = []
        for year, month in months:
            await self.run_fees(year, month)
            period = month_text(year, month)
            await asyncio.to_thread(mark_billed, self.ledger_path, period, self.clock())
            self._fees_done = period
            ran.append(period)
        return ran

    async def _billing_loop(self) -> None:
        while True:
            try:
                await self.run_billing_due()
            except LedgerUnavailable as exc:  # tried again at the next look; logged once per outage
                self.reach.failed(exc, "billing run")
            except Exception:
                log.exception("billing_run_failed")
            await asyncio.sleep(self.billing_interval)

    async def balance(self, customer_id: str) -> int:
        """The balance authorisation reads now (this process's; shared with Redis counters)."""
        return await self.counters.balance(customer_id)

    async def ledger_balance(self, customer_id: str) -> int:
        """Opening balance + every ledger movement: the book of record's balance."""
        from config.bridge import initial_balances

        opening = to_micros(Decimal(initial_balances(self.cfg).get(customer_id, 0)), "balance")

        def read() -> int:
            with open_ledger(self.ledger_path) as ledger:
                return ledger.balance_micros(customer_id)

        return opening + await asyncio.to_thread(read)

    # -- call setup --
    def authorise(self, request: AuthoriseRequest) -> Authorisation:
        """The rater's answer, with the day's spend and the holds of calls in progress (every
        process's) counted against the daily caps; a capped call holds its price at its max duration
        (capped by proxy.max_call_duration) until it is settled."""
        now = self.clock()
        call = CallToRate(Direction.OUTBOUND, request.account_id, request.number, now)
        rater = self.rater
        try:
            spend = self._spend(request.customer_id, request.account_id, day_key(now, rater.setup.timezone))
            answer = run_now(authorise_call(rater, self.counters, call, spend))
            hold = 0
            if answer.allowed and answer.max_seconds is not None and rater.capped(request.account_id):
                seconds = min(answer.max_seconds, int(self.cfg.proxy.max_call_duration))
                # free minutes are not reserved: the price as if none were left (a hold never falls short)
                priced = CallToRate(
                    Direction.OUTBOUND, request.account_id, request.number, now, duration=seconds
                )
                hold = rater.rate(priced, 0, answer.route).price_micros
        except Exception:
            log.exception("authorise_failed", account=request.account_id)
            return Authorisation(False, 500, "Rating Unavailable", "the rater could not price this call")
        if answer.allowed:
            return Authorisation(True, max_duration=answer.max_seconds, hold_micros=hold)
        status, reason, warning = REFUSALS.get(answer.reason, (403, "Forbidden", str(answer.reason)))
        out_of_plan = answer.reason is Refusal.OUT_OF_PLAN_BLOCKED
        cause = str(answer.reason) if answer.reason is not None else ""
        return Authorisation(False, status, reason, warning, out_of_plan, cause=cause)

    def reserve(self, keys: tuple[str, ...], micros: int) -> Awaitable[Authorisation] | None:
        """A hold routing granted (a `Tally` of `hold_keys`), checked against the daily caps platform-
        wide where hosts share the tallies (`Tallies.reserve`); None where the decision stands (one
        host, or tallies with no hold). The answer refuses as `authorise` refuses at the cap."""
        parties = hold_parties(keys)
        if self.tallies is None or not self.tallies.reserves_holds or parties is None or micros <= 0:
            return None  # one host: the decision stands, no plan or day to look up
        customer_id, account_id = parties
        now, rater = self.clock(), self.rater
        try:
            plan = rater.plan_for(CallToRate(Direction.OUTBOUND, account_id, "", now))
        except Exception:
            return None  # no plan, no cap: nothing to check
        day = day_key(now, rater.setup.timezone)
        spent_c, spent_a = spent_keys(customer_id, account_id, day)
        holds = ((keys[0], spent_c, plan.cap), (keys[1], spent_a, plan.acap))
        pending = self.tallies.reserve(holds, micros, day)
        return None if pending is None else _hold_answer(pending)

    def _spend(self, customer_id: str, account_id: str, day: str) -> tuple[int, int, int]:
        """(customer's settled spend on ``day``, customer's holds, account's settled spend + holds)."""
        tallies = self.tallies
        if tallies is None:
            return 0, 0, 0
        spent_c, spent_a = spent_keys(customer_id, account_id, day)
        held_c, held_a = hold_keys(customer_id, account_id)
        return tallies.tally(spent_c), tallies.tally(held_c), tallies.tally(spent_a) + tallies.tally(held_a)

    def _count_spend(self, customer_id: str, account_id: str | None, day: str, micros: int) -> None:
        """A settled call's price into the day's spend tallies (this process's share); shares of
        days before yesterday are taken back (a call is counted on the day it started)."""
        tallies = self.tallies
        if tallies is None:
            return
        for key in spent_keys(customer_id, account_id or "", day)[: 2 if account_id else 1]:
            tallies.add_shared(key, micros, day)
            self._spent_days[key] = day
        if len(self._spent_days) > 1 and min(self._spent_days.values()) < day:
            yesterday = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
            for key, kept in list(self._spent_days.items()):
                if kept < yesterday:
                    del self._spent_days[key]
                    tallies.drop_shared(key)

    def _release(self, event: CallEnded) -> None:
        """Give back what the call's priced legs held (after its price joined the spend)."""
        tallies = self.tallies
        if tallies is None:
            return
        for customer_id, account_id, micros in event.holds:
            for key in hold_keys(customer_id, account_id):
                tallies.add_tally(key, -micros)

    # -- call end --
    def on_call_ended(self, event: CallEnded) -> asyncio.Task[None]:
        """Settle a finished call and spool its CDR; the task ends once the CDR is durable (the call
        journal forgets the call then: server.call_journal)."""
        return self._tasks.spawn(self._settle(event))

    # -- reload --
    @staticmethod
    def rater_for(cfg: Any) -> Rater:
        """The rater of a configuration (built before a reload swaps anything)."""
        from config.bridge import rating_setup

        return Rater(rating_setup(cfg))

    def update(self, cfg: Any, rater: Rater, at: float) -> Any:
        """A reload at wall-clock time ``at``: rate tables and packages for the calls that start from
        now on; calls in progress are settled by the rater they were authorised with. Returns the
        configuration replaced (for ``reseed``)."""
        old = self.cfg
        keep = at - 2 * float(max(old.proxy.max_call_duration, cfg.proxy.max_call_duration)) - 3600
        self._earlier = [e for e in self._earlier if e[0] > keep]  # older ones rate no call in progress
        self._earlier.append((at, old, self.rater))
        self.cfg, self.rater = cfg, rater
        return old

    async def reseed(self, old_cfg: Any) -> None:
        """After ``update``: new customers' opening balances seeded, edited ones moved by the
        difference (what a restart would read); with Redis counters, seeded there."""
        from config.bridge import initial_balances

        old = {c: to_micros(Decimal(v), "balance") for c, v in initial_balances(old_cfg).items()}
        opening = {c: to_micros(Decimal(v), "balance") for c, v in initial_balances(self.cfg).items()}
        if self.shared is not None:
            await self.shared.reconfigure(opening, counters_watch(self.rater.setup))
            return
        new = [c for c in opening if c not in old]
        totals = await asyncio.to_thread(ledger_totals, self.ledger_path, 0) if new else None
        for customer_id, amount in opening.items():
            if totals is not None and customer_id not in old:
                await self.counters.set_balance(customer_id, amount + totals.every.get(customer_id, 0))
            elif amount != old[customer_id]:
                await self.counters.adjust_balance(customer_id, amount - old[customer_id])

    def _rating_at(self, start: float) -> tuple[Any, Rater]:
        """The configuration and rater a call that started at ``start`` (wall clock) was authorised
        with."""
        for replaced_at, cfg, rater in self._earlier:
            if start < replaced_at:
                return cfg, rater
        return self.cfg, self.rater

    async def _settle(self, event: CallEnded) -> None:
        try:
            await self._settle_call(event)
        finally:
            self._release(event)

    async def _settle_call(self, event: CallEnded) -> None:
        cfg, rater = self._rating_at(event.start)
        start = datetime.fromtimestamp(event.start, UTC)
        end = datetime.fromtimestamp(max(event.end, event.start), UTC)
        answer = datetime.fromtimestamp(event.answer, UTC) if event.answer is not None else None
        direction = _DIRECTIONS.get(event.direction, Direction.OUTBOUND)
        account = event.billed_account_id if direction is not Direction.INBOUND else None
        destination = event.did if direction is Direction.INBOUND and event.did else event.normalised
        rated = None
        leg = 0 if event.leg == "0" else int(event.leg.lstrip("f") or 0) + 1
        # one operation per CDR key: a CDR rebuilt after a crash (server.call_journal) moves no
        # shared (Redis) counter twice
        operation = f"cdr:{event.call_id}:{leg}"
        debit: LedgerEntry | None = None
        if event.disposition != "refused" and (account or direction is Direction.INBOUND):
            call = CallToRate(
                direction, account, destination, start,
                # a forwarded leg leaves through the trunk even when the call came in by a DID
                on_net=direction is Direction.INTERNAL or (event.did is not None and direction is Direction.OUTBOUND),
                answered=event.answer is not None, duration=event.duration,
            )  # fmt: skip
            try:
                if self.shared is not None:  # its debit reaches the ledger by the outbox (.taken)
                    store = self.shared.settlement(operation, end, event.call_id)
                    settled, low = await settle_call(rater, store, call)  # type: ignore[arg-type]
                else:
                    settled, low = await settle_call(rater, self.counters, call)
                rated = settled.rated
                if rated.price_micros > 0 and rated.customer_id:
                    self._count_spend(rated.customer_id, account, day_key(start, rater.setup.timezone),
                                      rated.price_micros)  # fmt: skip
                if settled.debited_micros and rated.customer_id and self.shared is None:
                    debit = LedgerEntry(rated.customer_id, EntryKind.CALL, -settled.debited_micros, end,
                                        event.call_id, call_key=operation)  # fmt: skip
                if low is not None:
                    publish_low_balance(low)
            except Exception:
                log.exception("settlement_failed", call_id=event.call_id)
        customer_id = (rated.customer_id if rated is not None else None) or event.customer_id or "unknown"
        customer = cfg.customers_by_id.get(customer_id)
        record = CdrRecord(
            call_id=event.call_id,
            leg=leg,
            customer_id=customer_id,
            customer_ref=getattr(customer, "reference", "") or "",
            internal=bool(getattr(customer, "internal", False)),
            direction=direction.value,
            caller=event.caller,
            dialed=event.dialed,
            normalised=event.normalised,
            start=start,
            end=end,
            answer=answer,
            duration=event.duration,
            billed_seconds=rated.billed_seconds if rated is not None else 0,
            disposition=event.disposition,
            sip_status=event.sip_status,
            cost=from_micros(rated.cost_micros) if rated is not None else Decimal(0),
            price=from_micros(rated.price_micros) if rated is not None else Decimal(0),
            currency=(rated.currency if rated is not None else getattr(customer, "currency", "EUR")) or "EUR",
            account_id=event.billed_account_id if direction is Direction.FORWARDED else event.account_id,
            prefix=rated.matched_prefix if rated is not None else None,
            destination=rated.destination_name if rated is not None else None,
            free_minutes=rated.free_minutes_used if rated is not None else 0,
            package=rated.package if rated is not None else None,
            hangup_by=event.hangup_by,
        )
        self.pipeline.append(record)
        try:
            await self.pipeline.wait_durable()
        finally:
            # into the ledger only once the CDR is durable (or the process goes on without it): a
            # call whose CDR is rebuilt after a crash from the call journal was not debited there yet.
            # On disk before this task ends: until then the call journal still holds the call
            if debit is not None:
                await self.outbox.hand_over(debit)

    async def _flush_debits_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.outbox.flush()
            except LedgerUnavailable:
                pass  # logged once per outage (LedgerReach); kept for the next flush
            except Exception:
                log.exception("ledger_flush_failed")


_CDR_METRICS: Any = None


def _opening(cfg: Any) -> Any:
    from config.bridge import initial_balances

    return initial_balances(cfg)


def cdr_metrics() -> Any:
    """One set of CDR metrics per process (a reload or a second server in tests reuses them)."""
    global _CDR_METRICS
    if _CDR_METRICS is None:
        from cdr.metrics import CdrMetrics

        _CDR_METRICS = CdrMetrics()
    return _CDR_METRICS


def build_billing(cfg: Any, worker: int | None = None, tallies: Tallies | None = None) -> Billing:
    """``worker``: this process's worker index (its own CDR spool and pending-operations file), None
    in a single-process server. ``tallies``: the account state the daily caps count spend in."""
    from config.bridge import rating_setup

    setup = rating_setup(cfg)
    rater = Rater(setup)
    c = cfg.cdr
    if c.backend == "postgresql":
        store = open_store(c.dsn)
    else:
        store = open_store(f"sqlite:{cfg.paths.cdr_database}")
    spool_dir = Path(cfg.paths.cdr_spool_dir)
    if worker is not None:  # a spool is one process's: each worker appends to its own
        spool_dir = spool_dir / f"worker-{worker}"
    pipeline = CdrPipeline(spool_dir, store, batch_size=c.batch_size, metrics=cdr_metrics())
    state_dir = Path(cfg.paths.state_dir)
    name = f"worker-{worker}" if worker is not None else "main"
    ledger = ledger_at(cfg)
    outbox = LedgerOutbox(ledger, PendingOps(state_dir / "ledger-pending", name, "ledger_outbox"))
    counters = cfg.rating.counters
    shared = None
    if counters.backend == "redis":
        shared = build_shared_counters(counters, setup, state_dir, worker, outbox)
    elif (cfg.server.workers > 1 or worker is not None) and worker in (None, 0):
        log.warning(
            "balances_per_process",
            detail="rating.counters.backend is memory with several workers: each process keeps its own "
            "prepaid balances, daily spend and free minutes, so a customer may spend up to workers x "
            "its balance; set rating.counters.backend: redis",
            workers=cfg.server.workers,
        )
    # every process of a Redis platform may be the first up; with workers, worker 0
    seed = worker in (None, 0) or cfg.registrar.location.backend == "redis"
    return Billing(cfg, rater, pipeline, ledger, shared, tallies, seed, outbox)


def counters_watch(setup: RatingSetup) -> Watch:
    """Authorisation reads the balance of HARD customers, today's spend of capped ones and the free
    minutes of their accounts; SOFT customers without a cap are never refused on money."""
    billed = [c for c in setup.customers.values() if not c.internal]
    hard = tuple(sorted(c.id for c in billed if c.balance_mode is BalanceMode.HARD))
    capped = tuple(sorted(c.id for c in billed if c.daily_cap is not None))
    checked = set(hard) | set(capped)
    accounts = tuple(
        a.id
        for a in setup.accounts.values()
        if a.customer_id in checked and setup.packages[a.package].free_minutes > 0
    )
    return Watch(tuple(setup.customers), hard, capped, accounts, setup.timezone)


def build_shared_counters(
    counters: Any, setup: RatingSetup, state_dir: Path, worker: int | None, outbox: LedgerOutbox | None = None
) -> SharedCounters:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    # Fail fast (one retry, for a pooled connection Redis closed): settlement falls back to the
    # cache and its queue instead of waiting; a resend is safe (operation ids).
    if counters.sentinels:  # the master the sentinels name, followed across failovers (redis-py)
        client = sentinel_master(counters.url, tuple(counters.sentinels), counters.sentinel_master)
    else:
        client = aioredis.Redis.from_url(
            counters.url, socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 1)
        )
    pending = PendingOps(state_dir / "counters-pending", f"worker-{worker}" if worker is not None else "main")
    return SharedCounters(
        RedisCounterStore(client, prefix=counters.key_prefix),
        pending,
        counters_watch(setup),
        float(counters.refresh_interval),
        outbox=outbox,
        client=client,
        outage_reserve=to_micros(counters.outage_reserve, "rating.counters.outage_reserve"),
    )


def sentinel_master(url: str, sentinels: tuple[str, ...], name: str) -> Any:
    """A redis-py client of the master ``name`` the sentinels watch: it asks them again whenever a
    connection fails or the server it reached answers READONLY (a demoted master). Same fail-fast
    timeouts as the plain client; ``url`` gives the password and db."""
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import Sentinel
    from redis.backoff import NoBackoff

    from registrar.location.resp import Endpoint
    from registrar.location.sentinel import parse_address

    e = Endpoint.from_url(url)
    watcher = Sentinel([parse_address(a) for a in sentinels], socket_timeout=1.0, socket_connect_timeout=1.0)
    return watcher.master_for(
        name, db=e.db, username=e.username, password=e.password, socket_timeout=1.0,
        socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 1),
    )  # fmt: skip
