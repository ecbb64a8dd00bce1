"""Pure report building and rendering: totals per currency, revenue = price + fees, refs on lines."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import pytest

from cdr.report_render import render
from cdr.reports import (
    AccountInfo,
    DidInfo,
    MonthlyFee,
    accounts_report,
    calls_report,
    dids_report,
    financial_report,
)
from cdr.usage import Usage
from tests.cdr.factory import make_record

D = Decimal


def usage(
    month: str | None, cid: str, cur: str = "EUR", cost: str = "1", price: str = "3", **kw: object
) -> Usage:
    base: dict[str, object] = dict(
        customer_id=cid, customer_ref=f"REF-{cid}", internal=cid == "lab", currency=cur, calls=2,
        answered=1, duration=100, billed_seconds=121, free_minutes=0, cost=D(cost), price=D(price),
        margin=D(price) - D(cost), month=month,
    )  # fmt: skip
    base.update(kw)
    return Usage(**base)  # type: ignore[arg-type]


def test_financial_adds_fees_to_revenue_and_totals_by_month_and_currency() -> None:
    rows = [usage("2026-01", "acme"), usage("2026-01", "lab", price="0"), usage("2026-02", "acme"),
            usage("2026-02", "acme", cur="USD", cost="0.5", price="0.75")]  # fmt: skip
    fees = [MonthlyFee("2026-01", "acme", "REF-acme", False, "EUR", D("15.00")),
            MonthlyFee("2026-03", "acme", "REF-acme", False, "EUR", D("1"))]  # fmt: skip
    r = financial_report(rows, fees)
    col = {c: i for i, c in enumerate(r.columns)}
    jan_acme = r.rows[0]
    assert jan_acme[col["customer_ref"]] == "REF-acme" and jan_acme[col["billed_min"]] == 3
    assert (jan_acme[col["call_revenue"]], jan_acme[col["fees"]], jan_acme[col["revenue"]]) == (3, 15, 18)
    assert jan_acme[col["margin"]] == D("17")
    lab = r.rows[1]
    assert lab[col["internal"]] is True and lab[col["margin"]] == D("-1")
    march = [x for x in r.rows if x[0] == "2026-03"]
    assert march and march[0][col["revenue"]] == D("1") and march[0][col["calls"]] == 0  # fee-only month
    totals = {(t[0], t[col["currency"]]): t for t in r.totals}
    assert totals[("TOTAL 2026-01", "EUR")][col["revenue"]] == D("18")  # lab adds cost, no revenue
    assert totals[("TOTAL", "EUR")][col["revenue"]] == D("3") + 0 + 3 + 15 + 1
    assert totals[("TOTAL", "EUR")][col["cost"]] == D("3")
    assert totals[("TOTAL", "USD")][col["margin"]] == D("0.25")  # currencies are never mixed


def test_calls_report_totals_per_currency() -> None:
    recs = [make_record(i) for i in range(10)] + [make_record(99, currency="CHF", price=D("2"), cost=D("1"))]
    r = calls_report(recs)
    assert len(r.rows) == 11 and all(row[1].startswith("REF-") for row in r.rows)
    col = {c: i for i, c in enumerate(r.columns)}
    eur = next(t for t in r.totals if t[col["currency"]] == "EUR")
    assert eur[0] == "TOTAL 10 calls"
    assert eur[col["price"]] == sum((x.price for x in recs[:10]), D(0))
    assert eur[col["margin"]] == eur[col["price"]] - eur[col["cost"]]
    assert eur[col["billed_s"]] == sum(x.billed_seconds for x in recs[:10])


def test_accounts_and_dids_reports_join_configuration_with_usage() -> None:
    accts = [AccountInfo("acme", "REF-acme", False, "acme/1001", "alice", "Alice", "pro", "+331"),
             AccountInfo("acme", "REF-acme", False, "acme/1002", "bob", "", "pro_plus", "")]  # fmt: skip
    used = [usage(None, "acme", account_id="acme/1001")]
    r = accounts_report(accts, used)
    col = {c: i for i, c in enumerate(r.columns)}
    assert [(x[col["account"]], x[col["package"]], x[col["calls"]]) for x in r.rows] == [
        ("acme/1001", "pro", 2),
        ("acme/1002", "pro_plus", 0),
    ]
    assert r.totals[0][col["price"]] == D("3")
    dids = [
        DidInfo("acme", "REF-acme", False, "+33184000001", "account:1001", "pro", D(0), D("1"), D("0.01"))
    ]
    r2 = dids_report(dids, [usage(None, "acme", number="+33184000001")])
    assert r2.rows[0][r2.columns.index("monthly_fee")] == D("1.000000")
    assert r2.rows[0][r2.columns.index("calls")] == 2


def test_renderers_keep_money_exact() -> None:
    r = calls_report([make_record(1, price=D("0.01518"), cost=D("0.009"))])
    doc = json.loads(render(r, "json"))
    assert doc["rows"][0]["price"] == "0.015180" and doc["totals"][0]["margin"] == "0.006180"
    rows = list(csv.reader(io.StringIO(render(r, "csv"))))
    assert rows[0][0] == "start" and rows[1][rows[0].index("customer_ref")] == "REF-0001"
    table = render(r, "table")
    assert "REF-0001" in table and "0.015180" in table and "TOTAL 1 calls" in table
    with pytest.raises(ValueError):
        render(r, "xml")


def test_month_slices_cut_at_utc_month_boundaries() -> None:
    from datetime import UTC, datetime

    from cdr.periods import month_slices, months_between

    start, end = datetime(2025, 12, 15, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    assert months_between(start, end) == [(2025, 12), (2026, 1)]
    assert month_slices(start, end) == [
        ("2025-12", start, datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01", datetime(2026, 1, 1, tzinfo=UTC), end),
    ]
    assert month_slices(start, start) == []
