"""Issue 17, item 5: the documented maximum of money (rating/money.py, docs/rating.md "Limits"),
refused wherever money enters — configuration, rate files, the CLI, ledger writes — at its edges:
the maximum is accepted, the maximum plus the smallest unit is refused with a clear reason."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from config.loader import ConfigError, load_config
from rating.errors import RateFileError
from rating.ledger import EntryKind, LedgerEntry
from rating.ledger_sqlite import SqliteLedger
from rating.money import MAX_AMOUNT, MAX_AMOUNT_MICROS, MAX_PER_MINUTE, MAX_PERCENT, MoneyError
from rating.rate_files import read_rate_file
from tests.operator.conftest import Run, write_example

T0 = datetime(2026, 11, 22, tzinfo=UTC)


def test_the_limits_are_the_documented_ones() -> None:
    assert (MAX_AMOUNT, MAX_PER_MINUTE, MAX_PERCENT) == (10**9, 1000, 1000)
    assert MAX_AMOUNT_MICROS == 10**15
    doc = (Path(__file__).resolve().parents[2] / "docs" / "rating.md").read_text(encoding="utf-8")
    for text in ("1,000,000,000", "1,000 per minute", "1,000 %"):
        assert text in doc


# ------------------------------------------------------------------------------------ configuration
ACCEPTED = [
    ("markup: {fixed: 0.0025, percent: 20}", "markup: {fixed: 1000, percent: 20}"),
    ("markup: {fixed: 0.0025, percent: 20}", "markup: {fixed: 0.0025, percent: 1000}"),
    ("initial: 50.00", "initial: 1000000000"),
    ("initial: 50.00", "initial: -1000000000"),
    ("monthly_fee: 15.00", "monthly_fee: 1000000000"),
]
REFUSED = [
    (
        "markup: {fixed: 0.0025, percent: 20}",
        "markup: {fixed: 1000.000000001, percent: 20}",
        "per-minute price",
    ),
    ("markup: {fixed: 0.0025, percent: 20}", "markup: {fixed: 1e40, percent: 20}", "per-minute price"),
    ("markup: {fixed: 0.0025, percent: 20}", "markup: {fixed: 0.0025, percent: 1000.0001}", "percent"),
    ("initial: 50.00", "initial: 1000000000.000001", "amount"),
    ("initial: 50.00", "initial: -1000000000.000001", "amount"),
    ("monthly_fee: 15.00", "monthly_fee: 1000000000.000001", "amount"),
]


@pytest.mark.parametrize(("old", "new"), ACCEPTED)
def test_config_accepts_the_maximum(tmp_path: Path, old: str, new: str) -> None:
    load_config(write_example(tmp_path, str(tmp_path / "state"), (old, new)))


@pytest.mark.parametrize(("old", "new", "what"), REFUSED)
def test_config_refuses_beyond_the_maximum(tmp_path: Path, old: str, new: str, what: str) -> None:
    path = write_example(tmp_path, str(tmp_path / "state"), (old, new))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if new.split(":")[0] in text)
    assert (problem.file, problem.line) == (str(path), line)
    assert f"is beyond the maximum {what} of" in problem.reason


def test_markup_1e40_stops_at_check_config(tmp_path: Path, run: Run) -> None:
    path = write_example(tmp_path, str(tmp_path / "state"), REFUSED[1][:2])
    code, out, _ = run("check-config", str(path))
    assert code == 1 and "beyond the maximum per-minute price of 1,000" in out


# ----------------------------------------------------------------------------------------- rate files
@pytest.mark.parametrize(
    ("cost", "fee", "ok"),
    [
        ("1000", "1000000000", True),
        ("1000.000000001", "0", False),
        ("0.01", "1000000000.000001", False),
    ],
)
def test_rate_file_values_are_bounded(tmp_path: Path, cost: str, fee: str, ok: bool) -> None:
    path = tmp_path / "rates.csv"
    path.write_text(
        f"prefix,destination,category,cost_per_minute,connect_fee\n+33,France,fixed,{cost},{fee}\n"
    )
    if ok:
        assert len(read_rate_file(path).rows) == 1
        return
    with pytest.raises(RateFileError) as info:
        read_rate_file(path)
    ((file, row, reason),) = info.value.problems
    assert (file, row) == (str(path), 2) and "is beyond the maximum of" in reason


# ------------------------------------------------------------------------------------ CLI and ledger
def test_payments_are_bounded_and_nothing_is_written_beyond(tmp_path: Path, run: Run) -> None:
    """The customer opens at 0: a payment of the maximum is accepted, one unit more is refused, and
    the 9,000,000,000,000 of the issue (twice) never reaches the ledger."""
    config = write_example(tmp_path, str(tmp_path / "state"), ("initial: 50.00", "initial: 0"))
    pay = ("balance", "add-payment", "--customer", "demo", "--config", str(config), "--amount")
    for amount in ("9000000000000", "9000000000000", "1000000000.000001"):
        code, _, err = run(*pay, amount)
        assert code == 1 and "is beyond the maximum of 1,000,000,000 allowed" in err
    assert run(*pay, "1000000000")[0] == 0
    code, _, err = run(*pay, "0.000001")  # the balance would pass the maximum
    assert code == 1 and "would bring the balance of demo to 1000000000.000001" in err
    code, out, _ = run("balance", "show", "--customer", "demo", "--config", str(config))
    assert code == 0 and out.splitlines()[-1] == "balance demo: 1000000000.000000"
    code, _, err = run("balance", "add-charge", "--customer", "demo", "--config", str(config), "--amount",
                       "1000000000.000001")  # fmt: skip
    assert code == 1 and "beyond the maximum" in err


def test_rate_balance_options_are_bounded(tmp_path: Path, run: Run) -> None:
    config = write_example(tmp_path, str(tmp_path / "state"))
    base = ("rate", "--account", "demo/1001", "--to", "+33612345678", "--config", str(config))
    assert run(*base, "--balance", "1000000000")[0] == 0
    for option in ("--balance", "--spent-today"):
        code, _, err = run(*base, option, "1000000000.000001")
        assert code == 1 and "beyond the maximum of 1,000,000,000" in err


def test_ledger_refuses_rows_beyond_the_maximum(tmp_path: Path) -> None:
    with SqliteLedger(tmp_path / "ledger.sqlite3") as ledger:
        ledger.append(LedgerEntry("c", EntryKind.PAYMENT, MAX_AMOUNT_MICROS, T0))
        for kind in (EntryKind.PAYMENT, EntryKind.CHARGE, EntryKind.FEE):
            with pytest.raises(MoneyError, match="beyond the maximum"):
                ledger.append(LedgerEntry("c", kind, -(MAX_AMOUNT_MICROS + 1), T0))
        assert ledger.balance_micros("c") == MAX_AMOUNT_MICROS


def test_a_ledger_written_before_the_limits_still_reads(tmp_path: Path, run: Run) -> None:
    """Two 9e12 payments stored by an older version overflow SQLite's SUM: the balance is still shown."""
    db = tmp_path / "ledger.sqlite3"
    SqliteLedger(db).close()
    with sqlite3.connect(db) as raw:
        for _ in range(2):
            raw.execute(
                "INSERT INTO ledger (customer_id, kind, amount_micros, at, memo) VALUES ('demo', 'payment', ?, ?, '')",
                (9_000_000_000_000 * 10**6, T0.isoformat()),
            )
    with SqliteLedger(db) as ledger:
        assert ledger.balance_micros("demo") == 18_000_000_000_000 * 10**6
    config = write_example(tmp_path / "etc", str(tmp_path / "state"), ("initial: 50.00", "initial: 0"))
    code, out, err = run("balance", "show", "--customer", "demo", "--config", str(config), "--db", str(db))
    assert code == 0, err
    assert out.splitlines()[-1] == "balance demo: 18000000000000.000000"
