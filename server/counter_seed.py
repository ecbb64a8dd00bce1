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
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from rating.balance_redis import RedisCounterStore
from rating.ledger import EntryKind
from rating.ledger_sqlite import SqliteLedger

log = structlog.get_logger("sipcore.counters")

SEED_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class LedgerTotals:
    last_id: int  # highest ledger id read (0: empty ledger)
    every: Mapping[str, int]  # customer -> sum of every entry up to last_id
    since: Mapping[str, int]  # customer -> sum of non-call, non-live entries in (watermark, last_id]
    live: tuple[tuple[str, int, int], ...] = ()  # (customer, id, amount): live entries, same range


def ledger_totals(path: Path, watermark: int) -> LedgerTotals:
    """Sums per customer in one read transaction (the ledger's schema: rating.ledger_sqlite)."""
    SqliteLedger(path).close()  # creates the file and table when missing
    db = sqlite3.connect(str(path))
    try:
        db.execute("BEGIN")
        last = int(db.execute("SELECT COALESCE(MAX(id), 0) FROM ledger").fetchone()[0])
        every = db.execute(
            "SELECT customer_id, SUM(amount_micros) FROM ledger WHERE id <= ? GROUP BY customer_id", (last,)
        ).fetchall()
        since = db.execute(
            "SELECT customer_id, SUM(amount_micros) FROM ledger WHERE id > ? AND id <= ? AND kind != ?"
            " AND operation_id IS NULL GROUP BY customer_id",
            (watermark, last, str(EntryKind.CALL)),
        ).fetchall()
        live = db.execute(
            "SELECT customer_id, id, amount_micros FROM ledger WHERE id > ? AND id <= ?"
            " AND operation_id IS NOT NULL ORDER BY id",
            (watermark, last),
        ).fetchall()
        db.execute("COMMIT")
    finally:
        db.close()
    return LedgerTotals(
        last,
        {c: int(v) for c, v in every},
        {c: int(v) for c, v in since},
        tuple((str(c), int(i), int(v)) for c, i, v in live),
    )


async def seed_redis(store: RedisCounterStore, opening: Mapping[str, int], ledger_path: Path) -> int:
    """Fold the opening balances and the new ledger movements into Redis; returns the watermark."""
    for _ in range(SEED_ATTEMPTS):
        current = await store.watermark()
        totals = await asyncio.to_thread(ledger_totals, ledger_path, current or 0)
        last = totals.last_id
        if current is not None and last < current:
            log.error("ledger_behind_redis", ledger=str(ledger_path), ledger_last_id=last, watermark=current)
            last = current  # a replaced ledger file: rows up to the old watermark are never folded
        rows = [(c, amount, totals.every.get(c, 0), totals.since.get(c, 0)) for c, amount in opening.items()]
        if await store.seed(current, last, rows, totals.live):
            return last
    raise RuntimeError(f"could not seed the counters: the watermark kept moving ({SEED_ATTEMPTS} tries)")


def local_balances(opening: Mapping[str, int], ledger_path: Path) -> dict[str, int]:
    """What the memory backend starts from (Redis unreachable at start): opening + every entry."""
    totals = ledger_totals(ledger_path, 0)
    return {c: amount + totals.every.get(c, 0) for c, amount in opening.items()}
