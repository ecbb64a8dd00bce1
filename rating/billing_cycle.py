"""The billing run (pure): which fees to post for a month, under which unique key, and which months are
due at a given time. The adapter (`server.billing_run`) writes them into the ledger; nothing here reads
a clock or a file.

Rules (docs/rating.md "Billing run"): the fees of month M are those `fees_due` gives (full month, none
for internal customers, none after `billing_end`'s month, setup in `billing_start`'s month); they are
due from the billing date of M — day `day` of M, 00:00 in the operator's time zone. Each posting has
the operation id ``fee:<customer>:<kind>:<account|did>:<subject>:<YYYY-MM>``: the ledger's unique index
on operation ids is what makes it exactly once, whoever runs it and however often.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from rating.fees import fees_due
from rating.model import RatingSetup


@dataclass(frozen=True, slots=True)
class FeePosting:
    """One fee to post: a debit of ``amount`` (positive) for ``customer_id``, once per ``operation_id``."""

    customer_id: str
    kind: str  # "monthly" | "setup"
    item: str  # "account" | "did"
    subject: str  # account id or DID number
    amount: Decimal
    period: str  # YYYY-MM
    memo: str
    operation_id: str
    due: datetime  # the billing date of ``period``: the fee's time in the ledger (statements of the month)


def fee_operation_id(customer_id: str, kind: str, item: str, subject: str, period: str) -> str:
    return f"fee:{customer_id}:{kind}:{item}:{subject}:{period}"


def fee_postings(
    setup: RatingSetup, year: int, month: int, customer: str | None = None, day: int = 1, tz: str = "UTC"
) -> list[FeePosting]:
    """The fees of a month as postings (accounts then DIDs, setup before monthly), one customer's or
    all; each dated at the month's billing date (day ``day``, 00:00 in ``tz``)."""
    due = billing_instant(year, month, day, tz)
    out = []
    for fee in fees_due(setup, year, month):
        if customer is not None and fee.customer_id != customer:
            continue
        item = "did" if fee.subject in setup.dids else "account"
        memo = f"{fee.memo} {fee.period}"
        op = fee_operation_id(fee.customer_id, fee.kind, item, fee.subject, fee.period)
        out.append(
            FeePosting(fee.customer_id, fee.kind, item, fee.subject, fee.amount, fee.period, memo, op, due)
        )
    return out


def parse_month(text: str) -> tuple[int, int]:
    """``YYYY-MM`` -> (year, month); ValueError otherwise."""
    try:
        year_text, month_text = text.split("-")
        year, month = int(year_text), int(month_text)
        if len(year_text) != 4 or len(month_text) != 2 or not 1 <= month <= 12 or year < 1970:
            raise ValueError
    except ValueError:
        raise ValueError(f"{text!r} is not a month like 2027-01") from None
    return year, month


def month_text(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"


def add_months(year: int, month: int, n: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + n
    return index // 12, index % 12 + 1


def billing_instant(year: int, month: int, day: int, tz: str) -> datetime:
    """The billing date of a month: day ``day`` at 00:00 in ``tz``, as a UTC time."""
    return datetime(year, month, day, tzinfo=ZoneInfo(tz)).astimezone(UTC)


def month_bounds(year: int, month: int, tz: str) -> tuple[datetime, datetime]:
    """A calendar month in ``tz`` as [start, end) UTC times (what a statement covers)."""
    ny, nm = add_months(year, month, 1)
    return billing_instant(year, month, 1, tz), billing_instant(ny, nm, 1, tz)


def latest_due(now: datetime, day: int, tz: str) -> tuple[int, int]:
    """The latest month whose billing date is at or before ``now``."""
    local = now.astimezone(ZoneInfo(tz))
    if now >= billing_instant(local.year, local.month, day, tz):
        return local.year, local.month
    return add_months(local.year, local.month, -1)


def months_to_run(
    now: datetime, day: int, tz: str, catch_up: int, last_done: str | None
) -> list[tuple[int, int]]:
    """Months a server run at ``now`` posts, oldest first: those after ``last_done`` (YYYY-MM of the
    latest completed run) through the latest due month, at most ``catch_up`` missed months before the
    latest one. Never run before (``None``): the latest due month alone — a first start does not bill the
    months before the server existed."""
    last = latest_due(now, day, tz)
    if last_done is None:
        return [last]
    done = parse_month(last_done)
    months = []
    for back in range(catch_up, -1, -1):
        month = add_months(*last, -back)
        if month > done:
            months.append(month)
    return months
