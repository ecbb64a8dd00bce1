"""The billing cycle (issue 18): fees posted once per (item, month) whoever runs it and however often,
the server's own run at the billing date in the operator's time zone with catch-up after downtime, and
monthly statements that reconcile to the micro-unit over a simulated quarter."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cdr.record import CdrRecord, Direction, Disposition
from cdr.store import open_store
from config.bridge import rating_setup
from config.loader import load_config
from rating.billing_cycle import billing_instant, fee_postings, latest_due, month_bounds, months_to_run
from rating.ledger import EntryKind, LedgerEntry
from rating.ledger_sqlite import SqliteLedger
from rating.model import CallToRate
from rating.money import from_micros, to_micros
from rating.rater import Rater
from server.cli import main

ROOT = Path(__file__).resolve().parents[2]

RATES = """\
prefix,destination,category,cost_per_minute
+331,France fixed,fixed,0.009
+336,France mobile,mobile,0.02
+44,United Kingdom,international,0.01
"""

CONFIG = """\
server:
  state_dir: {state}
  metrics: null
  admin: null
rating:
  billing: {{day: 1, timezone: Europe/Paris}}
  rate_tables: {{t: rates.csv}}
  packages:
    pro:
      rate_table: t
      markup: {{fixed: 0.0025, percent: 20}}
      pulse: 60
      included_categories: [fixed]
      free_minutes: 2
      monthly_fee: 15.00
      setup_fee: 5.00
customers:
  - id: acme
    name: Acme
    reference: ACME-7
    country: FR
    domains: [acme.test]
    balance: {{mode: SOFT, initial: 10.00}}
    default_package: pro
    dids:
      - {{number: "+33184000501", to: "100", setup_fee: 2.00, monthly_fee: 1.50, billing_start: 2027-01-10}}
    accounts:
      - {{extension: "100", username: "100", password: pw100, billing_start: 2027-01-10}}
      - {{extension: "101", username: "101", password: pw101, billing_start: 2027-01-10}}
  - id: gone
    name: Gone
    reference: GONE-1
    country: FR
    domains: [gone.test]
    default_package: pro
    accounts:
      - {{extension: "200", username: "200", password: pw200, billing_end: 2027-02-14}}
  - id: house
    name: House
    reference: HOUSE-0
    country: FR
    domains: [house.test]
    internal: true
    default_package: pro
    dids:
      - {{number: "+33184000901", to: "300", monthly_fee: 1.00}}
    accounts:
      - {{extension: "300", username: "300", password: pw300}}
"""

MONTHS = ["2027-01", "2027-02", "2027-03"]
DECEMBER = "fee:gone:monthly:account:gone/200:2026-12"
PARIS_MIDNIGHT_JAN = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)  # 2027-01-01 00:00 Europe/Paris


def write(tmp_path: Path) -> Path:
    (tmp_path / "rates.csv").write_text(RATES, encoding="utf-8")
    path = tmp_path / "sipcore.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state"), encoding="utf-8")
    return path


def fee_rows(ledger: Path) -> list[tuple[str, int, str]]:
    db = sqlite3.connect(ledger)
    try:
        return db.execute(
            "SELECT customer_id, amount_micros, operation_id FROM ledger WHERE kind = 'fee' ORDER BY operation_id"
        ).fetchall()
    finally:
        db.close()


EXPECTED = {
    "2027-01": {  # setup fees in the month of billing_start, monthly in full (no proration)
        "fee:acme:setup:account:acme/100:2027-01": -5_000_000,
        "fee:acme:monthly:account:acme/100:2027-01": -15_000_000,
        "fee:acme:setup:account:acme/101:2027-01": -5_000_000,
        "fee:acme:monthly:account:acme/101:2027-01": -15_000_000,
        "fee:acme:setup:did:+33184000501:2027-01": -2_000_000,
        "fee:acme:monthly:did:+33184000501:2027-01": -1_500_000,
        "fee:gone:monthly:account:gone/200:2027-01": -15_000_000,
    },
    "2027-02": {
        "fee:acme:monthly:account:acme/100:2027-02": -15_000_000,
        "fee:acme:monthly:account:acme/101:2027-02": -15_000_000,
        "fee:acme:monthly:did:+33184000501:2027-02": -1_500_000,
        "fee:gone:monthly:account:gone/200:2027-02": -15_000_000,  # billing_end 2027-02-14: February billed
    },
    "2027-03": {  # gone: nothing after its billing_end month; house (internal): never anything
        "fee:acme:monthly:account:acme/100:2027-03": -15_000_000,
        "fee:acme:monthly:account:acme/101:2027-03": -15_000_000,
        "fee:acme:monthly:did:+33184000501:2027-03": -1_500_000,
    },
}


# ------------------------------------------------------------------------------------------ pure core
def test_billing_date_is_midnight_of_the_day_in_the_operators_time_zone() -> None:
    assert billing_instant(2027, 1, 1, "Europe/Paris") == PARIS_MIDNIGHT_JAN
    assert billing_instant(2027, 7, 5, "Europe/Paris") == datetime(
        2027, 7, 4, 22, 0, tzinfo=UTC
    )  # summer time
    # the edge: one microsecond before the billing date the month is not due yet, at it it is
    assert latest_due(PARIS_MIDNIGHT_JAN - timedelta(microseconds=1), 1, "Europe/Paris") == (2026, 12)
    assert latest_due(PARIS_MIDNIGHT_JAN, 1, "Europe/Paris") == (2027, 1)
    assert latest_due(PARIS_MIDNIGHT_JAN, 1, "UTC") == (2026, 12)  # still December in UTC
    assert latest_due(datetime(2027, 3, 14, 23, tzinfo=UTC), 15, "UTC") == (2027, 2)
    assert latest_due(datetime(2027, 3, 15, tzinfo=UTC), 15, "UTC") == (2027, 3)
    assert month_bounds(2027, 2, "Europe/Paris") == (
        datetime(2027, 1, 31, 23, tzinfo=UTC),
        datetime(2027, 2, 28, 23, tzinfo=UTC),
    )


def test_months_to_run_catch_up_missed_ones_only() -> None:
    now = datetime(2027, 4, 2, tzinfo=UTC)
    assert months_to_run(now, 1, "UTC", 3, None) == [(2027, 4)]  # first start: this month alone
    assert months_to_run(now, 1, "UTC", 3, "2027-04") == []
    assert months_to_run(now, 1, "UTC", 3, "2027-01") == [(2027, 2), (2027, 3), (2027, 4)]
    assert months_to_run(now, 1, "UTC", 1, "2026-06") == [(2027, 3), (2027, 4)]  # at most catch_up back
    assert months_to_run(now, 1, "UTC", 0, "2027-02") == [(2027, 4)]
    assert months_to_run(datetime(2027, 1, 1, tzinfo=UTC), 1, "UTC", 3, "2026-11") == [(2026, 12), (2027, 1)]


def test_fee_postings_follow_fees_due_with_unique_keys(tmp_path: Path) -> None:
    setup = rating_setup(load_config(write(tmp_path)))
    for month, expected in EXPECTED.items():
        postings = fee_postings(setup, int(month[:4]), int(month[5:]))
        assert {p.operation_id: -to_micros(p.amount) for p in postings} == expected
        assert all(p.memo.endswith(month) for p in postings)
    assert fee_postings(setup, 2027, 1, "house") == []  # internal: no fees
    assert [p.operation_id for p in fee_postings(setup, 2027, 4, "gone")] == []


# ---------------------------------------------------------------------------------- simulated quarter
def _calls(cfg: Any, month: str) -> list[CdrRecord]:
    """Three calls of acme's in the month, priced by the rater (one within the free minutes)."""
    rater = Rater(rating_setup(cfg))
    y, m = int(month[:4]), int(month[5:])
    out = []
    for i, (account, number, seconds) in enumerate(
        [
            ("acme/100", "+33612345678", 61),
            ("acme/101", "+441234567890", 125),
            ("acme/100", "+33145000000", 300),
        ]
    ):
        start = datetime(y, m, 3 + i, 10, tzinfo=UTC)
        call = CallToRate(Direction.OUTBOUND, account, number, start, answered=True, duration=seconds)  # type: ignore[arg-type]
        rated = rater.rate(call, 1 if i == 0 else 0)
        out.append(
            CdrRecord(
                call_id=f"{month}-{i}",
                leg=0,
                customer_id="acme",
                customer_ref="ACME-7",
                internal=False,
                direction=Direction.OUTBOUND,
                caller="100",
                dialed=number,
                normalised=number,
                start=start,
                end=start + timedelta(seconds=seconds),
                answer=start,
                duration=seconds,
                billed_seconds=rated.billed_seconds,
                disposition=Disposition.ANSWERED,
                sip_status=200,
                cost=rated.cost,
                price=rated.price,
                currency="EUR",
                account_id=account,
                free_minutes=rated.free_minutes_used,
            )
        )
    return out


def _billing_run_cli(config: Path, month: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "server.cli", "billing", "run", "--month", month, "--config", str(config), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _statement(run: Any, config: Path, customer: str, month: str, fmt: str = "json") -> Any:
    code, out, err = run("report", "statement", "--customer", customer, "--month", month, "--config", str(config),
                         "--format", fmt)  # fmt: skip
    assert code == 0, err
    return json.loads(out) if fmt == "json" else out


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Any:
    def go(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return go


@pytest.mark.timeout(60)
def test_a_quarter_every_fee_once_and_statements_reconcile(tmp_path: Path, run: Any) -> None:
    config = write(tmp_path)
    cfg = load_config(config)
    ledger_path = tmp_path / "state" / "ledger.sqlite3"
    store = open_store(f"sqlite:{tmp_path / 'state' / 'cdr.sqlite3'}")
    cdr_total: dict[str, int] = {}

    async def store_calls(records: list[CdrRecord]) -> None:
        await store.open()
        await store.migrate()
        await store.write_batch(records)
        await store.close()

    for month in MONTHS:
        # the month's calls: CDRs, and the call debits settlement writes into the ledger
        records = _calls(cfg, month)
        asyncio.run(store_calls(records))
        cdr_total[month] = sum(to_micros(r.price) for r in records)
        with SqliteLedger(ledger_path) as ledger:
            for r in records:
                if r.price:
                    ledger.append(LedgerEntry("acme", EntryKind.CALL, -to_micros(r.price), r.end, r.call_id))
            if month == "2027-02":
                at = datetime(2027, 2, 20, 9, tzinfo=UTC)
                ledger.append(LedgerEntry("acme", EntryKind.PAYMENT, 100_000_000, at, "transfer"))
        # a dry run writes nothing; then two processes at once, then twice more by hand
        code, out, _ = run("billing", "run", "--month", month, "--config", str(config), "--dry-run")
        assert code == 0 and f"would post {len(EXPECTED[month])} of {len(EXPECTED[month])} fees" in out
        assert not any(op.endswith(month) for _, _, op in fee_rows(ledger_path))
        both = [_billing_run_cli(config, month), _billing_run_cli(config, month)]
        outs = [p.communicate(timeout=30) for p in both]
        assert [p.returncode for p in both] == [0, 0], outs
        posted = [int(o.split("posted ")[-1].split(" of")[0]) for o, _ in outs]
        assert sum(posted) == len(EXPECTED[month]), outs  # together: each fee by exactly one of them
        for _ in range(2):
            code, out, _ = run("billing", "run", "--month", month, "--config", str(config))
            assert code == 0 and f"posted 0 of {len(EXPECTED[month])} fees" in out and "already posted" in out
    rows = fee_rows(ledger_path)
    assert {op: amount for _, amount, op in rows} == {k: v for m in MONTHS for k, v in EXPECTED[m].items()}
    assert len(rows) == sum(len(v) for v in EXPECTED.values())  # exactly once each

    # statements: opening + movements = closing, each closing the next opening, calls = CDR prices
    opening = Decimal("10.00")
    for month in MONTHS:
        s = _statement(run, config, "acme", month)
        assert s["reference"] == "ACME-7" and Decimal(s["opening"]) == opening
        fees = {m["memo"]: Decimal(m["amount"]) for m in s["movements"] if m["kind"] == "fee"}
        assert sum(fees.values()) == from_micros(sum(v for k, v in EXPECTED[month].items() if ":acme:" in k))
        assert len(fees) == sum(1 for k in EXPECTED[month] if ":acme:" in k)  # item by item
        assert Decimal(s["calls_total"]) == from_micros(cdr_total[month])
        assert sum(Decimal(c["amount"]) for c in s["calls"]) == Decimal(s["calls_total"])
        assert sum(c["count"] for c in s["calls"]) == 3
        assert sum(c["free_minutes"] for c in s["calls"]) == 1
        payments = Decimal(s["payments"])
        assert payments == (Decimal(100) if month == "2027-02" else 0)
        closing = opening + payments - Decimal(s["charges"]) - Decimal(s["fees"]) - Decimal(s["calls_total"])
        assert Decimal(s["closing"]) == closing
        opening = closing
    with SqliteLedger(ledger_path) as ledger:  # the last closing is the book's balance
        assert opening == Decimal("10.00") + from_micros(ledger.balance_micros("acme"))

    # billing_end mid-quarter: statements still produced, no fee after it
    gone = [_statement(run, config, "gone", m) for m in MONTHS]
    assert [len([x for x in s["movements"] if x["kind"] == "fee"]) for s in gone] == [1, 1, 0]
    assert gone[2]["opening"] == gone[2]["closing"] == "-30.00"
    # internal customer: no fees, a statement showing none
    house = _statement(run, config, "house", "2027-02")
    assert house["movements"] == [] and house["fees"] == "0.00" and house["closing"] == "0.00"
    # the other formats carry the same figures, the HTML the customer's reference
    page = _statement(run, config, "acme", "2027-02", "html")
    assert "ACME-7" in page and "<table>" in page and "transfer" in page
    table = _statement(run, config, "acme", "2027-02", "table")
    assert "closing balance" in table and "monthly fee package pro acme/100 2027-02" in table
    csv_text = _statement(run, config, "acme", "2027-02", "csv")
    assert csv_text.splitlines()[0] == "section,date,description,calls,billed,free_min,amount"


# ------------------------------------------------------------------------------ the server's own run
@pytest.mark.parametrize("processes", [1, 2])
async def test_server_runs_it_at_the_billing_date_and_catches_up_after_downtime(
    tmp_path: Path, processes: int
) -> None:
    """Each process of the server runs it (workers: 2 -> two at once on one ledger): fees once, and
    every process's live balances carry them once."""
    from server.billing import build_billing

    cfg = load_config(write(tmp_path))
    ledger = tmp_path / "state" / "ledger.sqlite3"
    now = [PARIS_MIDNIGHT_JAN - timedelta(seconds=1)]

    async def start(n: int) -> list[Any]:
        out = []
        for w in range(n):
            b = build_billing(cfg, w if n > 1 else None)
            b.clock = lambda: now[0]
            b.billing_interval = 3600.0  # the test drives the runs
            await b.start()
            out.append(b)
        await asyncio.sleep(0.05)
        return out

    async def run_all(billings: list[Any]) -> None:
        await asyncio.gather(*(b.run_billing_due() for b in billings))

    def ops() -> list[str]:
        return [op for _, _, op in fee_rows(ledger)] if ledger.exists() else []

    try:
        billings = await start(processes)
        await run_all(billings)
        # 31 Dec 23:59:59 Paris: a first start bills the month due (December: gone's only); January not yet
        assert ops() == [DECEMBER]
        now[0] = PARIS_MIDNIGHT_JAN
        await run_all(billings)
        await run_all(billings)
        assert sorted(ops()) == sorted([DECEMBER, *EXPECTED["2027-01"]])
        for b in billings:  # every process's live balance: opening 10 - January's 43.50, once
            assert await b.balance("acme") == 10_000_000 - 43_500_000
            assert await b.balance("house") == 0
    finally:
        for b in billings:
            await b.close()
    # down through February's billing date; started again mid-March: February and March caught up
    now[0] = datetime(2027, 3, 14, 12, tzinfo=UTC)
    billings = await start(processes)
    try:
        await run_all(billings)
        assert sorted(ops()) == sorted([DECEMBER, *(k for m in MONTHS for k in EXPECTED[m])])
        for b in billings:
            assert await b.balance("acme") == 10_000_000 - 43_500_000 - 2 * 31_500_000
            assert await b.balance("gone") == -45_000_000  # December, January, February
    finally:
        for b in billings:
            await b.close()


def test_a_run_resumed_after_a_crash_half_way_posts_the_rest_once_and_the_crossing_fires_once(
    tmp_path: Path,
) -> None:
    from server.billing_run import post_fees

    setup = rating_setup(load_config(write(tmp_path)))
    ledger = tmp_path / "ledger.sqlite3"
    postings = fee_postings(setup, 2027, 1, "acme", 1, "Europe/Paris")
    now = PARIS_MIDNIGHT_JAN
    opening, threshold = {"acme": 10_000_000}, {"acme": 0}
    first = post_fees(ledger, postings[:2], now, opening, threshold)  # the crash: 2 of 6 written
    assert [p.created for p in first] == [True, True]
    # 10 - 5 = 5 stays above the threshold 0; 5 - 15 = -10 crosses it: one event, on that fee
    assert first[0].low is None
    assert first[1].low is not None and (first[1].low.balance, first[1].low.threshold) == (Decimal(-10), 0)
    again = post_fees(ledger, postings, now, opening, threshold)
    assert [p.created for p in again] == [False, False, True, True, True, True]
    assert all(p.low is None for p in again)  # already below: no second crossing
    assert fee_rows(ledger) == sorted(
        (("acme", v, k) for k, v in EXPECTED["2027-01"].items() if ":acme:" in k), key=lambda r: r[2]
    )
    assert {p.entry.at for p in again if p.entry is not None} == {
        PARIS_MIDNIGHT_JAN
    }  # dated at the billing date


@pytest.mark.parametrize(
    ("billing", "error"),
    [
        ("{day: 28, catch_up_months: 24, timezone: America/New_York}", None),
        ("{day: 1, catch_up_months: 0}", None),
        ("{day: 29}", "less than or equal to 28"),
        ("{day: 0}", "greater than or equal to 1"),
        ("{catch_up_months: 25}", "less than or equal to 24"),
        ("{timezone: Mars/Olympus}", "unknown time zone"),
    ],
)
def test_billing_settings_limits(tmp_path: Path, billing: str, error: str | None) -> None:
    from config.loader import ConfigError

    path = write(tmp_path)
    path.write_text(
        path.read_text(encoding="utf-8").replace(
            "billing: {day: 1, timezone: Europe/Paris}", f"billing: {billing}"
        ),
        encoding="utf-8",
    )
    if error is None:
        load_config(path)
        return
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert error in "\n".join(str(p) for p in exc.value.problems)
