"""One contract for every CdrStore backend (SQLite and real PostgreSQL)."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from cdr.record import Direction, Disposition, record_to_wire
from cdr.store import CdrStore, StoreUrlError, open_store
from tests.cdr.factory import make_record

JAN = datetime(2026, 1, 1, tzinfo=UTC)
FEB = datetime(2026, 2, 1, tzinfo=UTC)
MAR = datetime(2026, 3, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


async def test_migrate_is_idempotent(store: CdrStore) -> None:
    assert await store.migrate() == 2  # 2: hangup_by
    assert await store.migrate() == 2


async def test_write_batch_is_idempotent_on_call_id_and_leg(store: CdrStore) -> None:
    batch = [make_record(i) for i in range(50)]
    assert await store.write_batch(batch) == 50
    assert await store.write_batch([*batch[10:30], make_record(50)]) == 1
    dup_in_batch = [make_record(60), make_record(60), make_record(60, leg=1)]
    assert await store.write_batch(dup_in_batch) == 2
    assert await store.write_batch([]) == 0
    assert await store.count() == 53


async def test_a_large_batch_is_stored_whole_and_in_order(store: CdrStore) -> None:
    """Beyond one statement's rows (SQLite: 256 per INSERT, power-of-two chunks): every row once,
    repeats skipped wherever they fall, each stored as sent."""
    batch = [make_record(i) for i in range(700)]
    assert await store.write_batch(batch[:300]) == 300
    assert await store.write_batch([*batch, make_record(5), make_record(699)]) == 400  # 302 repeats skipped
    assert await store.count() == 700
    stored = await store.calls(JAN - timedelta(days=400), MAR + timedelta(days=400))
    assert sorted(r.call_id for r in stored) == sorted(r.call_id for r in batch)
    assert {(r.call_id, r.leg): r for r in stored}[(batch[517].call_id, batch[517].leg)] == batch[517]


async def test_records_round_trip_exactly(store: CdrStore) -> None:
    r = make_record(
        7,
        start=datetime(2026, 1, 2, 3, 4, 5, 123457, tzinfo=UTC),
        cost=Decimal("0.000001"),
        price=Decimal("123456789012.999999"),
        direction=Direction.FORWARDED,
        disposition=Disposition.REFUSED,
        sip_status=403,
        answer=None,
        account_id=None,
        prefix=None,
        destination=None,
        package=None,
        free_minutes=4,
        leg=3,
    )
    await store.write_batch([r])
    (back,) = await store.calls(r.start, r.start + timedelta(seconds=1))
    assert back == r and back.start.microsecond == 123457
    assert back.price == Decimal("123456789012.999999") and back.internal is r.internal


async def test_calls_filter_by_half_open_period_customer_and_account(store: CdrStore) -> None:
    recs = [
        make_record(1, start=JAN),
        make_record(2, start=FEB - timedelta(microseconds=1)),
        make_record(3, start=FEB),
        make_record(4, start=FEB + timedelta(days=3)),
    ]
    await store.write_batch(recs)
    jan = await store.calls(JAN, FEB)
    assert [r.call_id for r in jan] == [recs[0].call_id, recs[1].call_id]
    feb_c0 = await store.calls(FEB, MAR, customer_id="cust0")
    assert [r.call_id for r in feb_c0] == [recs[2].call_id]
    acct = await store.calls(JAN, MAR, account_id=recs[3].account_id)
    assert [r.call_id for r in acct] == [recs[3].call_id]


async def test_usage_by_month_sums_money_exactly(store: CdrStore) -> None:
    recs = [
        make_record(i, start=JAN + timedelta(days=i), cost=Decimal("0.000001"), price=Decimal("0.1"))
        for i in range(0, 45, 3)
    ]  # cust0 only (i % 3 == 0), Jan 1..Feb 12
    await store.write_batch(recs)
    rows = await store.usage(JAN, MAR, by="month")
    assert [(u.month, u.customer_id, u.calls) for u in rows] == [
        ("2026-01", "cust0", 11),
        ("2026-02", "cust0", 4),
    ]
    jan = rows[0]
    assert jan.cost == Decimal("0.000011") and jan.price == Decimal("1.1")
    assert jan.margin == Decimal("1.099989") and jan.customer_ref == "REF-0000"
    jan_recs = [r for r in recs if r.start < FEB]
    assert jan.answered == sum(r.disposition is Disposition.ANSWERED for r in jan_recs)
    assert jan.billed_seconds == sum(r.billed_seconds for r in jan_recs)
    assert jan.duration == sum(r.duration for r in jan_recs)


async def test_usage_by_account_and_number_with_filters(store: CdrStore) -> None:
    recs = [make_record(i) for i in range(24)]
    recs.append(
        make_record(
            100,
            direction=Direction.INBOUND,
            normalised="+33144556677",
            customer_id="cust1",
            customer_ref="REF-0001",
            internal=False,
        )
    )
    recs.append(
        make_record(
            101,
            direction=Direction.INBOUND,
            normalised="+33144556677",
            customer_id="cust1",
            customer_ref="REF-0001",
            internal=False,
        )
    )
    await store.write_batch(recs)
    by_acct = await store.usage(JAN, MAR, by="account", customer_id="cust2")
    assert {u.account_id for u in by_acct} == {r.account_id for r in recs if r.customer_id == "cust2"}
    assert all(u.internal for u in by_acct)  # cust2 is the internal customer in the factory
    total = sum((u.price for u in by_acct), Decimal(0))
    assert total == sum((r.price for r in recs if r.customer_id == "cust2"), Decimal(0))
    dids = await store.usage(JAN, MAR, by="number", direction=Direction.INBOUND)
    assert [(u.number, u.customer_id, u.calls) for u in dids] == [("+33144556677", "cust1", 2)]


async def test_empty_period_gives_empty_results(store: CdrStore) -> None:
    await store.write_batch([make_record(1)])
    assert await store.calls(MAR, MAR + timedelta(days=30)) == []
    assert await store.usage(MAR, MAR + timedelta(days=30), by="month") == []


def test_open_store_parses_urls(tmp_path: object) -> None:
    s = open_store("sqlite:var/x.sqlite3")
    assert type(s).__name__ == "SqliteCdrStore"
    p = open_store("postgresql://postgres@127.0.0.1:5432/test?schema=billing&sslmode=disable")
    assert type(p).__name__ == "PostgresCdrStore"
    assert p.schema == "billing" and p.dsn.endswith("/test?sslmode=disable")  # type: ignore[attr-defined]
    with pytest.raises(StoreUrlError):
        open_store("mysql://x")


def test_no_import_circle_in_cdr() -> None:
    """`cdr.store` picks a backend and the backends import only what sits below it (`cdr.usage`,
    `cdr.record`...): no module of cdr/ reaches itself through its imports, lazy ones included."""
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "cdr").glob("*.py"):
        if path.stem == "__init__":
            continue
        edges = graph.setdefault(f"cdr.{path.stem}", set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cdr."):
                edges.add(node.module)
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name.startswith("cdr."))
    assert {"cdr.store_sqlite", "cdr.store_postgres"} <= graph["cdr.store"]  # the factory's lazy imports

    def in_a_circle(module: str) -> bool:
        seen: set[str] = set()
        todo = list(graph[module])
        while todo:
            nxt = todo.pop()
            if nxt == module:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.extend(graph.get(nxt, ()))
        return False

    assert [m for m in sorted(graph) if in_a_circle(m)] == []


async def test_wire_batch_path_matches_record_path(store: CdrStore) -> None:
    recs = [make_record(i, cost=Decimal("0.000123"), price=Decimal("1.000001")) for i in range(20)]
    assert await store.write_wire_batch([record_to_wire(r) for r in recs]) == 20
    assert await store.write_batch(recs) == 0  # same keys through the other path
    back = await store.calls(JAN, MAR)
    assert back == sorted(recs, key=lambda r: (r.start, r.call_id, r.leg))


async def test_usage_by_month_splits_at_utc_midnight_of_the_first(store: CdrStore) -> None:
    new_year = datetime(2026, 1, 1, tzinfo=UTC)
    await store.write_batch(
        [
            make_record(0, start=new_year - timedelta(microseconds=1)),
            make_record(3, start=new_year),
            make_record(6, start=new_year + timedelta(days=20)),  # outside the period
        ]
    )
    rows = await store.usage(
        datetime(2025, 12, 20, tzinfo=UTC), datetime(2026, 1, 10, tzinfo=UTC), by="month"
    )
    assert [(u.month, u.calls) for u in rows] == [("2025-12", 1), ("2026-01", 1)]


async def test_concurrent_postgres_migrations_apply_once(pg_schema: str) -> None:
    import asyncio

    from tests.cdr.conftest import pg_store

    a, b = pg_store(pg_schema), pg_store(pg_schema)
    await asyncio.gather(a.open(), b.open())
    try:
        assert await asyncio.gather(a.migrate(), b.migrate()) == [2, 2]
        async with a.pool.acquire() as con:
            assert await con.fetchval("SELECT COUNT(*) FROM cdr_schema_version") == 2
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_hangup_by_is_stored_and_read_back(store: CdrStore) -> None:
    from dataclasses import replace

    await store.write_batch([replace(make_record(1), hangup_by="system"), make_record(2)])
    got = {
        r.call_id: r.hangup_by
        for r in await store.calls(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    }
    assert sorted(got.values(), key=str) == [None, "system"]


async def test_a_version_1_sqlite_database_gains_hangup_by_and_keeps_its_rows(tmp_path: Path) -> None:
    import sqlite3

    from cdr.store_sqlite import COLUMNS, MIGRATIONS, SqliteCdrStore

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0][1])
    db.execute("CREATE TABLE cdr_schema_version (version INTEGER PRIMARY KEY)")
    db.execute("INSERT INTO cdr_schema_version VALUES (1)")
    old_columns = COLUMNS.replace(",\n", ",").rsplit(",", 1)[0]  # without hangup_by
    w = record_to_wire(make_record(7))
    row = (*w[1:22], w[21] - w[20], w[22], w[23], w[24])
    db.execute(f"INSERT INTO cdr ({old_columns}) VALUES ({', '.join('?' * 25)})", row)
    db.commit()
    db.close()
    store = SqliteCdrStore(path)
    await store.open()
    try:
        assert await store.migrate() == 2
        (kept,) = await store.calls(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
        assert (kept.call_id, kept.hangup_by) == (make_record(7).call_id, None)
    finally:
        await store.close()
