"""Seeding the shared (Redis) balances from the configuration and the ledger, once.

Why a watermark and not "SET if absent": the balance is opening balance + every ledger movement, and
both change while Redis keeps its counters: an operator posts a payment with `sipcore balance
add-payment` (a ledger row), or edits a customer's opening balance. Redis remembers the highest ledger
id it has folded in and the opening balance it used per customer; a (re)start of any process folds
only what is new — entries after the watermark, and (new - old) opening — so restarting one worker or
all of them neither resets nor double-counts a balance. Live entries (payments and charges made through
the admin API, which carry an operation id) are folded by the server at once (`fold_once`) and marked by
ledger id in Redis (`folded`); the seed folds those that carry no mark yet (a server stopped between
the ledger write and the fold) and marks them, so each is applied exactly once whichever comes first. Call debits are the exception: settlement
applies them to Redis first and appends them to the ledger only once Redis has them
(server.shared_counters), so call rows after the watermark are already in the balance and skipped.
A customer Redis has never seen (or every customer, on an empty Redis) starts at opening + every
ledger row. The fold is one Lua script guarded by the watermark (two processes starting together:
the second sees the watermark move, re-reads the ledger and folds nothing twice).

The watermark needs ledger ids committed in id order: a row committed below the watermark after a
seed read past it would never be folded. SQLite has one writer at a time; the PostgreSQL ledger,
written by several hosts, serialises its appends for it (rating.ledger_postgres).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import structlog

from rating.balance_redis import RedisCounterStore
from rating.ledger import LedgerTotals
from rating.ledger_store import LedgerAt, open_ledger

log = structlog.get_logger("sipcore.counters")

SEED_ATTEMPTS = 10


def ledger_totals(ledger: LedgerAt, watermark: int) -> LedgerTotals:
    """Sums per customer in one read snapshot of the configured ledger (created when missing)."""
    with open_ledger(ledger) as book:
        return book.totals(watermark)


async def seed_redis(store: RedisCounterStore, opening: Mapping[str, int], ledger: LedgerAt) -> int:
    """Fold the opening balances and the new ledger movements into Redis; returns the watermark."""
    for _ in range(SEED_ATTEMPTS):
        current = await store.watermark()
        totals = await asyncio.to_thread(ledger_totals, ledger, current or 0)
        last = totals.last_id
        if current is not None and last < current:
            log.error("ledger_behind_redis", ledger=str(ledger), ledger_last_id=last, watermark=current)
            last = current  # a replaced ledger: rows up to the old watermark are never folded
        rows = [(c, amount, totals.every.get(c, 0), totals.since.get(c, 0)) for c, amount in opening.items()]
        if await store.seed(current, last, rows, totals.live):
            return last
    raise RuntimeError(f"could not seed the counters: the watermark kept moving ({SEED_ATTEMPTS} tries)")


def local_balances(opening: Mapping[str, int], ledger: LedgerAt) -> dict[str, int]:
    """What the memory backend starts from (Redis unreachable at start): opening + every entry."""
    totals = ledger_totals(ledger, 0)
    return {c: amount + totals.every.get(c, 0) for c, amount in opening.items()}
