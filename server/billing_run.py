"""EDGE ADAPTER: the billing run's postings into the configured ledger (rating.billing_cycle decides what).

Each fee is one ``append_once`` under its unique operation id: two processes (or hosts sharing a
PostgreSQL ledger) running the same month at once, a repeated run, or a run resumed after a crash write
each fee exactly once; whoever did not write a row finds the one that was written. The low-balance
crossing is reported by the process that wrote the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rating.billing_cycle import FeePosting
from rating.events import LowBalanceCrossed
from rating.ledger import EntryKind, LedgerEntry, signed_micros
from rating.ledger_store import LedgerAt, open_ledger
from rating.settlement import crossed_low_balance


@dataclass(frozen=True, slots=True)
class Posted:
    posting: FeePosting
    entry: LedgerEntry | None  # None in a dry run for a fee not posted yet
    created: bool  # this run wrote it (dry run: it would)
    low: LowBalanceCrossed | None = None


def post_fees(
    at_ledger: LedgerAt,
    postings: list[FeePosting],
    at: datetime,
    opening: dict[str, int],
    thresholds: dict[str, int],
    dry_run: bool = False,
) -> list[Posted]:
    """Write every posting once, dated at its billing date (``at``: now, the time of a low-balance
    event; ``opening``: configured opening balances, micro-units; ``thresholds``:
    low-balance thresholds of the customers that have one)."""
    out: list[Posted] = []
    with open_ledger(at_ledger) as ledger:
        for p in postings:
            if dry_run:
                found = ledger.by_operation(p.operation_id)
                out.append(Posted(p, found, found is None))
                continue
            delta = signed_micros(EntryKind.FEE, p.amount)
            before = opening.get(p.customer_id, 0) + ledger.balance_micros(p.customer_id)
            entry, created = ledger.append_once(
                LedgerEntry(p.customer_id, EntryKind.FEE, delta, p.due, p.memo, None, p.operation_id)
            )
            low = None
            if created and p.customer_id in thresholds:
                low = crossed_low_balance(
                    p.customer_id, before, before + delta, thresholds[p.customer_id], at
                )
            out.append(Posted(p, entry, created, low))
    return out


def last_billed(at_ledger: LedgerAt) -> str | None:
    with open_ledger(at_ledger) as ledger:
        return ledger.last_billed()


def mark_billed(at_ledger: LedgerAt, period: str, at: datetime) -> None:
    with open_ledger(at_ledger) as ledger:
        ledger.mark_billed(period, at)
