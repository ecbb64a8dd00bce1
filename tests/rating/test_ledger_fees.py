"""The ledger (memory, SQLite and PostgreSQL share one contract) and the monthly/setup fees it is fed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal as D
from pathlib import Path

import pytest

from rating.fees import fees_due
from rating.ledger import EntryKind, Ledger, MemoryLedger, post
from rating.ledger_sqlite import SqliteLedger
from rating.ledger_store import open_ledger
from rating.model import DidBilling
from tests.pg_ledger import pg_ledger_at, pg_ledger_dsn  # noqa: F401 (fixtures)
from tests.rating.builders import setup

AT = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "memory":
        yield MemoryLedger()
        return
    if request.param == "postgresql":
        with open_ledger(request.getfixturevalue("pg_ledger_at")) as book:
            yield book
        return
    with SqliteLedger(tmp_path / "var" / "ledger.sqlite3") as db:
        yield db


def test_movements_sum_to_the_balance(ledger: Ledger) -> None:
    post(ledger, "c", EntryKind.PAYMENT, D("20.00"), AT, "bank transfer")
    post(ledger, "c", EntryKind.CHARGE, D("1.234567"), AT, "manual")
    post(ledger, "c", EntryKind.CALL, D("0.0276"), AT, "call 42")
    post(ledger, "c", EntryKind.FEE, D("15"), AT, "monthly fee")
    post(ledger, "other", EntryKind.PAYMENT, D("1"), AT)
    assert ledger.balance_micros("c") == 20_000_000 - 1_234_567 - 27_600 - 15_000_000
    entries = ledger.entries("c")
    assert [e.kind for e in entries] == [EntryKind.PAYMENT, EntryKind.CHARGE, EntryKind.CALL, EntryKind.FEE]
    assert entries[1].amount == D("-1.234567")
    assert entries[0].memo == "bank transfer" and entries[0].at == AT
    assert [e.kind for e in ledger.entries("c", limit=2)] == [EntryKind.CALL, EntryKind.FEE]
    assert len({e.id for e in entries}) == 4


def test_amounts_must_be_positive_and_exact(ledger: Ledger) -> None:
    with pytest.raises(ValueError):
        post(ledger, "c", EntryKind.PAYMENT, D("-1"), AT)
    with pytest.raises(ValueError):
        post(ledger, "c", EntryKind.PAYMENT, D("0.0000001"), AT)
    assert ledger.entries("c") == []


def test_low_balance_crossing_on_a_charge(ledger: Ledger) -> None:
    _, event = post(ledger, "c", EntryKind.PAYMENT, D("10"), AT, low_balance_threshold=D("5"))
    assert event is None
    _, event = post(ledger, "c", EntryKind.CHARGE, D("5"), AT, low_balance_threshold=D("5"))
    assert event is not None and event.balance == D("5") and event.threshold == D("5")
    _, event = post(ledger, "c", EntryKind.CHARGE, D("1"), AT, low_balance_threshold=D("5"))
    assert event is None  # already below


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_stored_ledger_persists(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
    at = tmp_path / "l.sqlite3" if backend == "sqlite" else request.getfixturevalue("pg_ledger_at")
    with open_ledger(at) as db:
        post(db, "c", EntryKind.PAYMENT, D("3.5"), AT)
        db.mark_billed("2026-10", AT)
        db.mark_billed("2026-11", AT)
        db.mark_billed("2026-11", AT)  # a repeat keeps the first
    with open_ledger(at) as db:
        assert db.balance_micros("c") == 3_500_000
        assert db.entries("c")[0].at == AT
        assert db.last_billed() == "2026-11"


def test_fees_due_by_month() -> None:
    s = setup(
        package={"monthly_fee": D("15"), "setup_fee": D("30")},
        account={"billing_start": date(2026, 11, 10), "billing_end": date(2027, 1, 5)},
        dids=(DidBilling("+33184000001", "c", setup_fee=D("5"), monthly_fee=D("1")),),
    )
    nov = fees_due(s, 2026, 11)
    assert [(f.subject, f.kind, f.amount) for f in nov] == [
        ("a", "setup", D("30")),
        ("a", "monthly", D("15")),
        ("+33184000001", "monthly", D("1")),  # no start date: no setup fee to date it
    ]
    january = [(f.subject, f.kind) for f in fees_due(s, 2027, 1)]
    assert january == [("a", "monthly"), ("+33184000001", "monthly")]
    assert [f.subject for f in fees_due(s, 2027, 2)] == ["+33184000001"]  # account billing ended
    assert [f.subject for f in fees_due(s, 2026, 10)] == ["+33184000001"]  # account not started


def test_internal_customers_pay_no_fees() -> None:
    s = setup(customer={"internal": True}, package={"monthly_fee": D("15")})
    assert fees_due(s, 2026, 11) == []
