"""`sipcore report …` end to end on real stores (SQLite file, PostgreSQL schema) and a real config."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from cdr.record import CdrRecord, Direction
from cdr.store import CdrStore
from cdr.store_sqlite import SqliteCdrStore
from server.cli import main
from tests.cdr.conftest import PG_DSN, pg_store
from tests.cdr.factory import make_record

ROOT = Path(__file__).resolve().parents[2]
JAN = datetime(2026, 1, 1, tzinfo=UTC)


def demo_records() -> list[CdrRecord]:
    """Calls of the example config's customer `demo` in January and February 2026."""
    recs = []
    for i in range(12):
        recs.append(make_record(i, customer_id="demo", customer_ref="CUST-0001", internal=False,
                                account_id=f"demo/100{1 + i % 3}", start=JAN + timedelta(days=5 * i),
                                price=Decimal("0.10"), cost=Decimal("0.04")))  # fmt: skip
    recs.append(make_record(50, customer_id="demo", customer_ref="CUST-0001", internal=False, account_id=None,
                            direction=Direction.INBOUND, normalised="+33184000001", start=JAN,
                            price=Decimal("0.02"), cost=Decimal(0)))  # fmt: skip
    recs.append(make_record(60, customer_id="other", customer_ref="OTH-9", start=JAN))
    return recs


async def _fill(store: CdrStore, recs: list[CdrRecord]) -> None:
    await store.open()
    await store.migrate()
    await store.write_batch(recs)
    await store.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    db = tmp_path / "cdr.sqlite3"
    asyncio.run(_fill(SqliteCdrStore(db), demo_records()))
    return f"sqlite:{db}"


@pytest.fixture
def billed_config(tmp_path: Path) -> Path:
    """The example config with its demo customer billed (not internal): 4 monthly fees, 56.00/month."""
    text = (ROOT / "config" / "example.yaml").read_text()
    text = text.replace("internal: true", "internal: false")
    text = text.replace("rates/example.csv", str(ROOT / "config" / "rates" / "example.csv"))
    path = tmp_path / "billed.yaml"
    path.write_text(text)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["report", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_calls_json_totals_match_the_records(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "calls", "--from", "2026-01-01", "--to", "2026-01-31", "--store", sqlite_url,
                       "--format", "json")  # fmt: skip
    assert code == 0
    doc = json.loads(out)
    jan = [r for r in demo_records() if r.start < datetime(2026, 2, 1, tzinfo=UTC)]
    assert len(doc["rows"]) == len(jan)
    assert all(row["customer_ref"] for row in doc["rows"])
    assert Decimal(doc["totals"][0]["price"]) == sum((r.price for r in jan), Decimal(0))
    assert {row["internal"] for row in doc["rows"] if row["customer"] == "other"} == {False}


def test_account_report_filters_one_account(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "account", "--account", "demo/1002", "--from", "2026-01-01", "--to",
                       "2026-03-01", "--store", sqlite_url, "--format", "csv")  # fmt: skip
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    calls = [r for r in rows if not r["start"].startswith("TOTAL")]
    assert len(calls) == 4 and {r["account"] for r in calls} == {"demo/1002"}


def test_financial_with_config_fees(
    sqlite_url: str, billed_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--customer", "demo", "--store", sqlite_url, "--config", str(billed_config), "--format", "json"]
    code, out, err = run(capsys, "financial", "--from", "2026-01-01", "--to", "2026-02-28", *args)
    assert code == 0, err
    doc = json.loads(out)
    by_month = {r["month"]: r for r in doc["rows"]}
    assert set(by_month) == {"2026-01", "2026-02"}
    jan = by_month["2026-01"]
    jan_recs = [r for r in demo_records() if r.customer_id == "demo" and r.start.month == 1]
    call_rev = sum((r.price for r in jan_recs), Decimal(0))
    assert Decimal(jan["fees"]) == Decimal("56")  # pro 15 x2 + pro_plus 25 + DID 1
    assert Decimal(jan["revenue"]) == call_rev + 56
    assert Decimal(jan["margin"]) == call_rev + 56 - sum((r.cost for r in jan_recs), Decimal(0))
    assert jan["customer_ref"] == "CUST-0001" and jan["internal"] is False
    grand = next(t for t in doc["totals"] if t["month"] == "TOTAL")
    assert Decimal(grand["fees"]) == Decimal("112")


def test_financial_without_config_says_fees_are_absent(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "financial", "--from", "2026-01-01", "--to", "2026-01-31", "--store", sqlite_url
    )
    assert code == 0 and "no --config" in out and "CUST-0001" in out and "OTH-9" in out


def test_accounts_and_dids_from_config(
    sqlite_url: str, billed_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "accounts", "--from", "2026-01-01", "--to", "2026-02-28", "--store",
                         sqlite_url, "--config", str(billed_config), "--format", "json")  # fmt: skip
    assert code == 0, err
    rows = {r["account"]: r for r in json.loads(out)["rows"]}
    assert rows["demo/1002"]["package"] == "pro_plus" and rows["demo/1001"]["package"] == "pro"
    assert rows["demo/1002"]["calls"] == 4 and rows["demo/1002"]["customer_ref"] == "CUST-0001"
    code, out, err = run(capsys, "dids", "--from", "2026-01-01", "--to", "2026-02-28", "--store", sqlite_url,
                         "--config", str(billed_config), "--format", "json")  # fmt: skip
    assert code == 0, err
    (did,) = json.loads(out)["rows"]
    assert did["did"] == "+33184000001" and did["calls"] == 1 and did["monthly_fee"] == "1.000000"
    assert did["destination"] == "account:1001"


def test_usage_errors_are_one_line_with_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "calls", "--store", f"sqlite:{tmp_path / 'missing.sqlite3'}")
    assert code == 2 and "no CDR store" in err
    code, _, err = run(capsys, "dids", "--store", f"sqlite:{tmp_path / 'missing.sqlite3'}")
    assert code == 2
    code, _, err = run(capsys, "calls", "--store", "mysql://x")
    assert code == 2 and "unknown CDR store" in err
    code, _, err = run(capsys, "calls", "--from", "2026-02-01", "--to", "2026-01-01", "--store", "sqlite:x")
    assert code == 2 and "--to must be after --from" in err


def test_reports_read_postgresql_too(pg_schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_fill(pg_store(pg_schema), demo_records()))
    url = f"{PG_DSN}?schema={pg_schema}"
    code, out, err = run(capsys, "financial", "--from", "2026-01-01", "--to", "2026-02-28", "--store", url,
                         "--format", "json")  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    total = next(t for t in doc["totals"] if t["month"] == "TOTAL")
    assert Decimal(total["call_revenue"]) == sum((r.price for r in demo_records()), Decimal(0))
