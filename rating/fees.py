"""Monthly and setup fees due for a calendar month (pure; the ledger posts them).

Rules (docs/rating.md): a monthly fee is due in full for every month the account/DID is billed
on any day of (no proration); the setup fee is due in the month of `billing_start`; nothing is
due for internal customers, nor after `billing_end`'s month.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from rating.model import RatingSetup


@dataclass(frozen=True, slots=True)
class FeeDue:
    customer_id: str
    subject: str  # account id or DID number
    kind: str  # "monthly" | "setup"
    amount: Decimal
    period: str  # "YYYY-MM"
    memo: str


def _billed_in(start: date | None, end: date | None, first: date, last: date) -> bool:
    return (start is None or start <= last) and (end is None or end >= first)


def fees_due(setup: RatingSetup, year: int, month: int) -> list[FeeDue]:
    """Every fee of the month, accounts then DIDs, in setup order."""
    first = date(year, month, 1)
    last = date(year, month, calendar.monthrange(year, month)[1])
    period = f"{year:04d}-{month:02d}"
    out: list[FeeDue] = []

    def add(customer_id: str, subject: str, what: str, start: date | None, end: date | None,
            setup_fee: Decimal, monthly: Decimal) -> None:  # fmt: skip
        customer = setup.customers.get(customer_id)
        if customer is None or customer.internal or not _billed_in(start, end, first, last):
            return
        if setup_fee and start is not None and first <= start <= last:
            memo = f"setup fee {what} {subject}"
            out.append(FeeDue(customer_id, subject, "setup", setup_fee, period, memo))
        if monthly:
            memo = f"monthly fee {what} {subject}"
            out.append(FeeDue(customer_id, subject, "monthly", monthly, period, memo))

    for acc in setup.accounts.values():
        pkg = setup.packages.get(acc.package)
        if pkg is not None:
            add(acc.customer_id, acc.id, f"package {pkg.name}", acc.billing_start, acc.billing_end,
                pkg.setup_fee, pkg.monthly_fee)  # fmt: skip
    for did in setup.dids.values():
        add(did.customer_id, did.number, "DID", did.billing_start, did.billing_end,
            did.setup_fee, did.monthly_fee)  # fmt: skip
    return out
