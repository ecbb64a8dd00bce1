"""Small builders for rating tests: one rate table, one package, one customer, one account."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

from rating.model import (
    AccountBilling,
    CallToRate,
    CustomerBilling,
    DidBilling,
    Direction,
    Package,
    Pulse,
    RateRow,
    RateTable,
    RatingSetup,
)
from rating.rater import Rater

START = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)

ROWS = (
    RateRow("+33", "France", "fixed", D("0.005")),
    RateRow("+331", "France Paris", "fixed", D("0.004")),
    RateRow("+336", "France mobile", "mobile", D("0.009")),
    RateRow("+3389", "France premium", "premium", D("0.35"), Pulse(60, 60), D("0.05")),
    RateRow("+44", "United Kingdom", "international", D("0.0065")),
    RateRow("+447", "UK mobile", "international", D("0.02")),
    RateRow("+352", "Luxembourg", "international", D("0.01")),
    RateRow("+1", "USA", "international", D("0.0004")),
)


def setup(
    package: dict[str, Any] | None = None,
    customer: dict[str, Any] | None = None,
    account: dict[str, Any] | None = None,
    rows: tuple[RateRow, ...] = ROWS,
    dids: tuple[DidBilling, ...] = (),
) -> RatingSetup:
    terms: dict[str, Any] = {"markup_fixed": D("0.0025"), "markup_percent": D(20), **(package or {})}
    pkg = Package("p", "t", **terms)
    cust = CustomerBilling("c", "REF-C", **(customer or {}))
    acc = AccountBilling("a", "c", "p", **(account or {}))
    return RatingSetup(
        rate_tables={"t": RateTable("t", rows)},
        packages={"p": pkg},
        customers={"c": cust},
        accounts={"a": acc},
        dids={d.number: d for d in dids},
    )


def rater(**kw: Any) -> Rater:
    return Rater(setup(**kw))


def call(to: str = "+33612345678", duration: int = 61, **kw: Any) -> CallToRate:
    base = CallToRate(Direction.OUTBOUND, "a", to, START, duration=duration)
    return dataclasses.replace(base, **kw) if kw else base
