"""Report building (pure): CDR query results (+ plain directory data) -> a Report table with totals.

Every line carries the customer reference and the `internal` flag. Totals are per currency (money
in different currencies is never added up). Configuration-derived inputs (fees, account and DID
lists) arrive as the plain dataclasses below, so this module never imports config/.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from cdr.money import to_money
from cdr.record import CdrRecord
from cdr.usage import Usage

ZERO = to_money(0)


@dataclass(frozen=True, slots=True)
class Report:
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    totals: list[tuple[Any, ...]] = field(default_factory=list)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MonthlyFee:
    """A fee due for one month (monthly or setup), already converted from the configuration."""

    month: str  # YYYY-MM
    customer_id: str
    customer_ref: str
    internal: bool
    currency: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class AccountInfo:
    customer_id: str
    customer_ref: str
    internal: bool
    account_id: str
    username: str
    display_name: str
    package: str
    outgoing_number: str


@dataclass(frozen=True, slots=True)
class DidInfo:
    customer_id: str
    customer_ref: str
    internal: bool
    number: str
    destination: str
    package: str
    setup_fee: Decimal
    monthly_fee: Decimal
    incoming_rate: Decimal


CALL_COLUMNS = (
    "start",
    "customer_ref",
    "customer",
    "internal",
    "account",
    "direction",
    "caller",
    "dialed",
    "normalised",
    "prefix",
    "destination",
    "duration",
    "billed_s",
    "disposition",
    "sip_status",
    "free_min",
    "package",
    "currency",
    "cost",
    "price",
    "margin",
)


def _iso(r: CdrRecord) -> str:
    return r.start.isoformat().replace("+00:00", "Z")


def calls_report(records: Sequence[CdrRecord], title: str = "Calls") -> Report:
    """One line per CDR; totals per currency of duration, billed seconds, cost, price and margin."""
    rows = [
        (
            _iso(r),
            r.customer_ref,
            r.customer_id,
            r.internal,
            r.account_id or "",
            r.direction.value,
            r.caller,
            r.dialed,
            r.normalised,
            r.prefix or "",
            r.destination or "",
            r.duration,
            r.billed_seconds,
            r.disposition.value,
            r.sip_status,
            r.free_minutes,
            r.package or "",
            r.currency,
            r.cost,
            r.price,
            r.margin,
        )
        for r in records
    ]
    acc: dict[str, list[Any]] = defaultdict(lambda: [0, 0, 0, 0, ZERO, ZERO, ZERO])
    for r in records:
        t = acc[r.currency]
        t[0] += 1
        t[1] += r.duration
        t[2] += r.billed_seconds
        t[3] += r.free_minutes
        t[4] += r.cost
        t[5] += r.price
        t[6] += r.margin
    totals = [
        (f"TOTAL {n} calls", "", "", "", "", "", "", "", "", "", "", d, b, "", "", f, "", cur, c, p, m)
        for cur, (n, d, b, f, c, p, m) in sorted(acc.items())
    ]
    return Report(title, CALL_COLUMNS, rows, totals)


FINANCIAL_COLUMNS = (
    "month",
    "customer_ref",
    "customer",
    "internal",
    "currency",
    "calls",
    "billed_min",
    "call_revenue",
    "fees",
    "revenue",
    "cost",
    "margin",
)


def financial_report(usage: Iterable[Usage], fees: Iterable[MonthlyFee] = ()) -> Report:
    """Month by month and customer: revenue = call price + fees; margin = revenue - call cost.

    billed_min is billed seconds / 60, rounded up to whole minutes per line.
    """
    lines: dict[tuple[str, str, str, bool, str], list[Any]] = {}

    def line(month: str, cid: str, ref: str, internal: bool, cur: str) -> list[Any]:
        return lines.setdefault((month, cid, ref, internal, cur), [0, 0, ZERO, ZERO, ZERO])

    for u in usage:
        t = line(u.month or "", u.customer_id, u.customer_ref, u.internal, u.currency)
        t[0] += u.calls
        t[1] += u.billed_seconds
        t[2] += u.price
        t[4] += u.cost
    for f in fees:
        line(f.month, f.customer_id, f.customer_ref, f.internal, f.currency)[3] += to_money(f.amount)
    rows = []
    month_tot: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, 0, ZERO, ZERO, ZERO])
    grand: dict[str, list[Any]] = defaultdict(lambda: [0, 0, ZERO, ZERO, ZERO])
    for (month, cid, ref, internal, cur), (n, secs, price, fee, cost) in sorted(lines.items()):
        rows.append((month, ref, cid, internal, cur, n, -(-secs // 60), price, fee, price + fee, cost,
                     price + fee - cost))  # fmt: skip
        for tot in (month_tot[(month, cur)], grand[cur]):
            tot[0] += n
            tot[1] += secs
            tot[2] += price
            tot[3] += fee
            tot[4] += cost

    def total(label: str, cur: str, t: list[Any]) -> tuple[Any, ...]:
        n, secs, price, fee, cost = t
        return (label, "", "", "", cur, n, -(-secs // 60), price, fee, price + fee, cost, price + fee - cost)

    totals = [total(f"TOTAL {m}", cur, t) for (m, cur), t in sorted(month_tot.items())]
    totals += [total("TOTAL", cur, t) for cur, t in sorted(grand.items())]
    return Report("Financial summary", FINANCIAL_COLUMNS, rows, totals)


USAGE_COLUMNS = ("calls", "billed_s", "currency", "cost", "price", "margin")


def _usage_cells(u: Usage | None) -> tuple[Any, ...]:
    if u is None:
        return (0, 0, "", ZERO, ZERO, ZERO)
    return (u.calls, u.billed_seconds, u.currency, u.cost, u.price, u.margin)


def _usage_totals(usage: Iterable[Usage], width: int) -> list[tuple[Any, ...]]:
    grand: dict[str, list[Any]] = defaultdict(lambda: [0, 0, ZERO, ZERO, ZERO])
    for u in usage:
        t = grand[u.currency]
        t[0] += u.calls
        t[1] += u.billed_seconds
        t[2] += u.cost
        t[3] += u.price
        t[4] += u.margin
    pad = ("",) * (width - 1)
    return [("TOTAL", *pad, n, s, cur, c, p, m) for cur, (n, s, c, p, m) in sorted(grand.items())]


def accounts_report(accounts: Sequence[AccountInfo], usage: Sequence[Usage]) -> Report:
    """Configured accounts with their package, and their calls in the period (from the CDRs)."""
    by_acct: dict[str, list[Usage]] = defaultdict(list)
    for u in usage:
        by_acct[u.account_id or ""].append(u)
    cols = ("customer_ref", "customer", "internal", "account", "username", "display_name", "package",
            "outgoing_number", *USAGE_COLUMNS)  # fmt: skip
    rows = []
    for a in sorted(accounts, key=lambda a: (a.customer_ref, a.account_id)):
        base = (a.customer_ref, a.customer_id, a.internal, a.account_id, a.username, a.display_name,
                a.package, a.outgoing_number)  # fmt: skip
        for u in by_acct.get(a.account_id) or [None]:
            rows.append((*base, *_usage_cells(u)))
    return Report("Accounts", cols, rows, _usage_totals(usage, 8))


def dids_report(dids: Sequence[DidInfo], usage: Sequence[Usage]) -> Report:
    """Configured DIDs with destination, package and fees, and inbound calls in the period."""
    by_number: dict[str, list[Usage]] = defaultdict(list)
    for u in usage:
        by_number[u.number or ""].append(u)
    cols = ("customer_ref", "customer", "internal", "did", "destination", "package", "setup_fee",
            "monthly_fee", "incoming_rate", *USAGE_COLUMNS)  # fmt: skip
    rows = []
    for d in sorted(dids, key=lambda d: (d.customer_ref, d.number)):
        base = (d.customer_ref, d.customer_id, d.internal, d.number, d.destination, d.package,
                to_money(d.setup_fee), to_money(d.monthly_fee), to_money(d.incoming_rate))  # fmt: skip
        for u in by_number.get(d.number) or [None]:
            rows.append((*base, *_usage_cells(u)))
    return Report("DIDs", cols, rows, _usage_totals(usage, 9))
