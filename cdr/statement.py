"""A customer's monthly statement (pure): opening balance, payments, charges, fees item by item, calls by
category, closing balance — from ledger movements and CDRs handed in (docs/rating.md "Statement").

Money is integer micro-units throughout; nothing is rounded. The calls of the statement are the CDRs
that started in the month (their prices, which are what settlement debits); every other movement is a
ledger row whose time is in the month. Hence, exactly:

    opening = configured opening + ledger payments/charges/fees before the month - CDR prices before it
    closing = opening + payments - charges - fees - calls  (= the next month's opening)
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from cdr.record import CdrRecord
from rating.ledger import EntryKind, LedgerEntry
from rating.money import from_micros, to_micros


@dataclass(frozen=True, slots=True)
class Movement:
    at: datetime
    kind: str  # payment | charge | fee
    memo: str
    amount_micros: int  # signed as in the ledger (payments > 0)


@dataclass(frozen=True, slots=True)
class CallLine:
    category: str
    count: int
    billed_seconds: int
    free_minutes: int
    amount_micros: int


@dataclass(frozen=True, slots=True)
class Statement:
    customer_id: str
    reference: str
    currency: str
    period: str  # YYYY-MM
    start: datetime
    end: datetime
    opening_micros: int
    movements: list[Movement] = field(default_factory=list)
    calls: list[CallLine] = field(default_factory=list)
    timezone: str = "UTC"  # the dates shown

    def local_date(self, at: datetime) -> str:
        return at.astimezone(ZoneInfo(self.timezone)).date().isoformat()

    def total(self, kind: str) -> int:
        return sum(m.amount_micros for m in self.movements if m.kind == kind)

    @property
    def calls_micros(self) -> int:
        return sum(c.amount_micros for c in self.calls)

    @property
    def closing_micros(self) -> int:
        return self.opening_micros + sum(m.amount_micros for m in self.movements) - self.calls_micros


def build_statement(
    customer_id: str,
    reference: str,
    currency: str,
    period: str,
    start: datetime,
    end: datetime,
    configured_opening_micros: int,
    ledger: Iterable[LedgerEntry],
    cdr_prices_before: Decimal,
    cdrs: Iterable[CdrRecord],
    category_of: Callable[[CdrRecord], str],
    timezone: str = "UTC",
) -> Statement:
    """``ledger``: the customer's entries up to ``end`` at least (call rows are ignored: calls come
    from ``cdrs``, those that started in [start, end)); ``cdr_prices_before``: the sum of the prices of
    its CDRs that started before ``start``."""
    opening = configured_opening_micros - to_micros(cdr_prices_before, "calls")
    movements = []
    for e in ledger:
        if e.kind is EntryKind.CALL or e.customer_id != customer_id or e.at >= end:
            continue
        if e.at < start:
            opening += e.amount_micros
        else:
            movements.append(Movement(e.at, str(e.kind), e.memo, e.amount_micros))
    movements.sort(key=lambda m: (m.at, m.kind))
    lines: dict[str, list[int]] = {}
    for r in cdrs:
        if r.customer_id != customer_id or not start <= r.start < end:
            continue
        line = lines.setdefault(category_of(r), [0, 0, 0, 0])
        line[0] += 1
        line[1] += r.billed_seconds
        line[2] += r.free_minutes
        line[3] += to_micros(r.price, "price")
    calls = [CallLine(cat, *v) for cat, v in sorted(lines.items())]
    return Statement(
        customer_id, reference, currency, period, start, end, opening, movements, calls, timezone
    )


def _m(micros: int) -> str:
    """Exact: cents when there is no finer part, else every decimal."""
    amount = from_micros(micros)
    cents = amount.quantize(Decimal("0.01"))
    return str(cents if cents == amount else amount.normalize())


def _minutes(seconds: int) -> str:
    return f"{seconds // 60}:{seconds % 60:02d}"


def rows(s: Statement) -> list[tuple[str, str, str, str, str, str, str]]:
    """(section, date, description, calls, billed m:ss, free minutes, amount) lines of a statement."""
    out = [("opening", s.local_date(s.start), "opening balance", "", "", "", _m(s.opening_micros))]
    for m in s.movements:
        out.append((m.kind, s.local_date(m.at), m.memo, "", "", "", _m(m.amount_micros)))
    for c in s.calls:
        out.append(("calls", "", c.category, str(c.count), _minutes(c.billed_seconds), str(c.free_minutes),
                    _m(-c.amount_micros)))  # fmt: skip
    out.append(("closing", "", "closing balance", "", "", "", _m(s.closing_micros)))
    return out


COLUMNS = ("section", "date", "description", "calls", "billed", "free_min", "amount")


def as_json(s: Statement) -> str:
    doc = {
        "customer": s.customer_id,
        "reference": s.reference,
        "currency": s.currency,
        "period": s.period,
        "from": s.start.isoformat(),
        "to": s.end.isoformat(),
        "opening": _m(s.opening_micros),
        "payments": _m(s.total("payment")),
        "charges": _m(-s.total("charge")),
        "fees": _m(-s.total("fee")),
        "movements": [
            {"at": m.at.isoformat(), "kind": m.kind, "memo": m.memo, "amount": _m(m.amount_micros)}
            for m in s.movements
        ],
        "calls": [
            {
                "category": c.category,
                "count": c.count,
                "billed_seconds": c.billed_seconds,
                "free_minutes": c.free_minutes,
                "amount": _m(c.amount_micros),
            }
            for c in s.calls
        ],
        "calls_total": _m(s.calls_micros),
        "closing": _m(s.closing_micros),
    }
    return json.dumps(doc, indent=2) + "\n"


def as_html(s: Statement) -> str:
    e = html.escape
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>\n" for r in rows(s))
    head = "".join(f"<th>{e(c)}</th>" for c in COLUMNS)
    title = f"Statement {s.period} — {s.reference or s.customer_id}"
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{e(title)}</title></head><body>\n'
        f"<h1>{e(title)}</h1>\n<p>Customer {e(s.customer_id)}, reference {e(s.reference)}, "
        f"amounts in {e(s.currency)}; period {e(s.local_date(s.start))} to {e(s.local_date(s.end - timedelta(microseconds=1)))} ({e(s.timezone)}).</p>\n"
        f"<table>\n<tr>{head}</tr>\n{body}</table>\n"
        f"<p>Opening {e(_m(s.opening_micros))} + payments {e(_m(s.total('payment')))} - charges "
        f"{e(_m(-s.total('charge')))} - fees {e(_m(-s.total('fee')))} - calls {e(_m(s.calls_micros))} = "
        f"closing {e(_m(s.closing_micros))} {e(s.currency)}</p>\n</body></html>\n"
    )
