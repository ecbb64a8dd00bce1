"""The ledger: every movement of a customer's balance, the book of record behind `balance show`.

Why a ledger and not just a counter: invoices and disputes need each payment, charge, fee and
call debit with its date and memo; the balance is their sum. Amounts are signed (credit > 0,
debit < 0) and kept as integer micro-units; `post` reports a low-balance crossing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from rating.events import LowBalanceCrossed
from rating.money import MAX_AMOUNT, MAX_AMOUNT_MICROS, MoneyError, check_amount, from_micros, to_micros
from rating.settlement import crossed_low_balance


class EntryKind(StrEnum):
    PAYMENT = "payment"  # credit
    CHARGE = "charge"  # manual debit
    CALL = "call"  # call debit (batched from settled calls)
    FEE = "fee"  # monthly / setup fee


CREDIT_KINDS = frozenset({EntryKind.PAYMENT})


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One balance movement; `amount_micros` is signed (payments > 0, everything else < 0)."""

    customer_id: str
    kind: EntryKind
    amount_micros: int
    at: datetime
    memo: str = ""
    id: int | None = None
    operation_id: str | None = None  # the client's id of a payment/charge made through the admin API
    # a call debit's settlement operation (``cdr:<call_id>:<leg>``, server.billing): unique in a stored
    # ledger, so a batch written again after a crash (its local copy not yet cleared) adds it once.
    # Not an operation_id: those mark live entries the seed folds into Redis (server.counter_seed)
    call_key: str | None = None

    @property
    def amount(self) -> Decimal:
        return from_micros(self.amount_micros)


class LedgerUnavailable(Exception):
    """The ledger's database cannot be reached (the text names it, without a password)."""


@dataclass(frozen=True, slots=True)
class LedgerTotals:
    """What seeding the shared counters reads of a stored ledger (server.counter_seed), in one snapshot."""

    last_id: int  # highest ledger id read (0: empty ledger)
    every: Mapping[str, int]  # customer -> sum of every entry up to last_id
    since: Mapping[str, int]  # customer -> sum of non-call, non-live entries in (watermark, last_id]
    live: tuple[tuple[str, int, int], ...] = ()  # (customer, id, amount): live entries, same range

    # What both stored ledgers read, in one snapshot (PostgreSQL's numbered parameters; SQLite reads
    # them as ?1, ?2, ?3): the highest id, then with (last id) EVERY, with (watermark, last id, call
    # kind) SINCE, with (watermark, last id) LIVE.
    LAST = "SELECT COALESCE(MAX(id), 0) FROM ledger"
    EVERY = "SELECT customer_id, SUM(amount_micros) FROM ledger WHERE id <= $1 GROUP BY customer_id"
    SINCE = (
        "SELECT customer_id, SUM(amount_micros) FROM ledger WHERE id > $1 AND id <= $2 AND kind <> $3"
        " AND operation_id IS NULL GROUP BY customer_id"
    )
    LIVE = (
        "SELECT customer_id, id, amount_micros FROM ledger WHERE id > $1 AND id <= $2"
        " AND operation_id IS NOT NULL ORDER BY id"
    )

    @classmethod
    def from_rows(
        cls, last: int, every: Iterable[Any], since: Iterable[Any], live: Iterable[Any]
    ) -> LedgerTotals:
        """The totals from the rows of EVERY, SINCE and LIVE."""
        return cls(
            last,
            {str(c): int(v) for c, v in every},
            {str(c): int(v) for c, v in since},
            tuple((str(c), int(i), int(v)) for c, i, v in live),
        )


class Ledger(Protocol):
    def append(self, entry: LedgerEntry) -> LedgerEntry:
        """Store an entry; returns it with its id."""
        ...

    def balance_micros(self, customer_id: str) -> int: ...

    def entries(self, customer_id: str, limit: int | None = None) -> list[LedgerEntry]:
        """Entries oldest first (the last `limit` when given)."""
        ...


class MemoryLedger:
    """Ledger kept in a list (tests, one-shot tools)."""

    def __init__(self) -> None:
        self._entries: list[LedgerEntry] = []

    def append(self, entry: LedgerEntry) -> LedgerEntry:
        check_entry(entry)
        stored = replace(entry, id=len(self._entries) + 1)
        self._entries.append(stored)
        return stored

    def append_once(self, entry: LedgerEntry) -> tuple[LedgerEntry, bool]:
        """As SqliteLedger.append_once: the first entry with this ``operation_id``, and whether this call
        added it."""
        if not entry.operation_id:
            raise ValueError("append_once needs an operation_id")
        found = self.by_operation(entry.operation_id)
        if found is not None:
            return found, False
        return self.append(entry), True

    def by_operation(self, operation_id: str) -> LedgerEntry | None:
        return next((e for e in self._entries if e.operation_id == operation_id), None)

    def balance_micros(self, customer_id: str) -> int:
        return sum(e.amount_micros for e in self._entries if e.customer_id == customer_id)

    def entries(self, customer_id: str, limit: int | None = None) -> list[LedgerEntry]:
        mine = [e for e in self._entries if e.customer_id == customer_id]
        return mine[-limit:] if limit else mine


def signed_micros(kind: EntryKind, amount: Decimal) -> int:
    """A positive amount as the signed ledger movement of its kind (credit or debit)."""
    check_amount(amount, f"{kind} amount")
    micros = to_micros(amount, f"{kind} amount")
    if micros <= 0:
        raise ValueError(f"{kind} amount must be positive, got {amount}")
    return micros if kind in CREDIT_KINDS else -micros


def check_entry(entry: LedgerEntry) -> None:
    """A stored movement other than a call debit is within MAX_AMOUNT (call debits come from the
    rater, whose prices are bounded by the configuration's limits)."""
    if entry.kind is not EntryKind.CALL and abs(entry.amount_micros) > MAX_AMOUNT_MICROS:
        raise MoneyError(
            f"{entry.kind} amount: {entry.amount} is beyond the maximum of {MAX_AMOUNT:,} allowed"
        )


def post(
    ledger: Ledger,
    customer_id: str,
    kind: EntryKind,
    amount: Decimal,
    at: datetime,
    memo: str = "",
    low_balance_threshold: Decimal = Decimal(0),
    opening_micros: int = 0,
) -> tuple[LedgerEntry, LowBalanceCrossed | None]:
    """Append a movement (amount given positive; sign from its kind) and detect a threshold crossing.

    The balance is ``opening_micros`` (the configured opening balance) plus every movement; one that
    would leave it beyond +/- MAX_AMOUNT is refused before anything is written.
    """
    delta = signed_micros(kind, amount)
    check_amount(low_balance_threshold, "threshold")
    before = opening_micros + ledger.balance_micros(customer_id)
    after = before + delta
    if abs(after) > MAX_AMOUNT_MICROS:
        raise MoneyError(
            f"{kind} amount: {amount} would bring the balance of {customer_id} to {from_micros(after)}, "
            f"beyond the maximum of {MAX_AMOUNT:,} allowed; nothing written"
        )
    entry = ledger.append(LedgerEntry(customer_id, kind, delta, at, memo))
    event = crossed_low_balance(customer_id, before, after, to_micros(low_balance_threshold, "threshold"), at)
    return entry, event
