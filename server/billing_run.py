"""EDGE ADAPTER: the billing run's postings into the SQLite ledger (rating.billing_cycle decides what).

Each fee is one ``append_once`` under its unique operation id: two processes (or hosts sharing the
ledger file) running the same month at once, a repeated run, or a run resumed after a crash write each
fee exactly once; whoever did not write a row finds the one that was written. The low-balance crossing
is reported by the process that wrote the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rating.billing_cycle import FeePosting
from rating.events import LowBalanceCrossed
from rating.ledger import EntryKind, LedgerEntry, signed_micros
from rating.ledger_sqlite import SqliteLedger
from rating.settlement import crossed_low_balance


@dataclass(frozen=True, slots=True)
class Posted:
    posting: FeePosting
    entry: LedgerEntry | None  # None in a dry run for a fee not posted yet
    created: bool  # this run wrote it (dry run: it would)
    low: LowBalanceCrossed | None = None


def post_fees(
    ledger_path: Path,
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
    ledger = SqliteLedger(ledger_path)
    try:
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
    finally:
        ledger.close()
    return out


def last_billed(ledger_path: Path) -> str | None:
    ledger = SqliteLedger(ledger_path)
    try:
        return ledger.last_billed()
    finally:
        ledger.close()


def mark_billed(ledger_path: Path, period: str, at: datetime) -> None:
    ledger = SqliteLedger(ledger_path)
    try:
        ledger.mark_billed(period, at)
    finally:
        ledger.close()
