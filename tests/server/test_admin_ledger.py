"""Live payments and charges, below the API: the ledger's unique operation id (one row however often a
request is repeated, also for ledgers written before the column existed), and the exactly-once fold of
a live entry into Redis whichever of the server's fold and a (re)start's seed comes first — with the
ledger in SQLite and in PostgreSQL (several writers appending while a seed reads)."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
import redis.asyncio as aioredis

from rating.balance_redis import RedisCounterStore
from rating.ledger import EntryKind, LedgerEntry
from rating.ledger_sqlite import SqliteLedger
from rating.ledger_store import LedgerAt, PostgresLedgerAt, StoredLedger, open_ledger
from server.counter_seed import ledger_totals, seed_redis
from tests.pg_ledger import pg_ledger_at, pg_ledger_dsn  # noqa: F401 (fixtures)
from tests.server.admin_helpers import REDIS_URL, drop_prefix

T = TypeVar("T")

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def payment(amount: int, operation_id: str | None, customer: str = "c") -> LedgerEntry:
    return LedgerEntry(customer, EntryKind.PAYMENT, amount, T0, "memo", None, operation_id)


@pytest.fixture(params=["sqlite", "postgresql"])
def at(request: pytest.FixtureRequest, tmp_path: Path) -> LedgerAt:
    """Where a test's ledger is: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        return tmp_path / "ledger.sqlite3"
    pg: PostgresLedgerAt = request.getfixturevalue("pg_ledger_at")
    return pg


async def in_ledger(at: LedgerAt, work: Callable[[StoredLedger], T]) -> T:
    """``work`` on the opened ledger, off the loop (as the server does: both backends block)."""

    def run() -> T:
        with open_ledger(at) as ledger:
            return work(ledger)

    return await asyncio.to_thread(run)


def test_append_once_keeps_the_first_row(at: LedgerAt) -> None:
    with open_ledger(at) as ledger:
        first, created = ledger.append_once(payment(5_000_000, "op-1"))
        again, created_again = ledger.append_once(payment(7_000_000, "op-1"))  # same id, other amount
        assert (created, created_again) == (True, False)
        assert again == first and again.amount_micros == 5_000_000
        ledger.append(payment(1, None))  # entries without an id (calls, the offline CLI) stay unconstrained
        ledger.append(payment(1, None))
        assert ledger.balance_micros("c") == 5_000_002
        assert ledger.by_operation("op-1") == first
        with pytest.raises(ValueError):
            ledger.append_once(payment(1, None))


def test_append_all_writes_a_batch_in_order_or_nothing(at: LedgerAt) -> None:
    """The server's call debits go in as one batch: all rows, in order, or none (a retried batch is
    never half in twice)."""
    with open_ledger(at) as ledger:
        batch = [LedgerEntry("c", EntryKind.CALL, -i, T0, f"call {i}") for i in (1, 2, 3)]
        stored = ledger.append_all(batch)
        assert [(e.id, e.memo) for e in stored] == [(e.id, e.memo) for e in ledger.entries("c")]
        assert [e.memo for e in stored] == ["call 1", "call 2", "call 3"]
        assert ledger.append_all([]) == []
        with pytest.raises(Exception):  # noqa: B017 (the driver's unique violation) — the second row fails
            ledger.append_all([payment(5, "twice"), payment(7, "twice")])
        assert ledger.balance_micros("c") == -6 and ledger.by_operation("twice") is None


def test_a_ledger_from_before_operation_ids_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE ledger (id INTEGER PRIMARY KEY AUTOINCREMENT, customer_id TEXT NOT NULL, kind TEXT NOT NULL,"
        " amount_micros INTEGER NOT NULL, at TEXT NOT NULL, memo TEXT NOT NULL DEFAULT '');"
        f"INSERT INTO ledger (customer_id, kind, amount_micros, at, memo) VALUES ('c', 'payment', 3, '{T0.isoformat()}', '');"
    )
    db.commit()
    db.close()
    with SqliteLedger(path) as ledger:
        assert [(e.amount_micros, e.operation_id) for e in ledger.entries("c")] == [(3, None)]
        assert ledger.append_once(payment(4, "op"))[1] is True
        assert ledger.append_once(payment(4, "op"))[1] is False
        assert ledger.balance_micros("c") == 7


@pytest.fixture
async def store() -> AsyncIterator[RedisCounterStore]:
    prefix = f"sipcore-test-fold-{secrets.token_hex(4)}:"
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        yield RedisCounterStore(client, prefix=prefix)
    finally:
        await client.aclose()
        await drop_prefix(prefix)


async def test_fold_then_restart_seed_counts_a_live_entry_once(
    at: LedgerAt, store: RedisCounterStore
) -> None:
    path = at
    opening = {"c": 1_000_000}
    assert await seed_redis(store, opening, path) == 0

    def write(ledger: StoredLedger) -> LedgerEntry:
        entry, _ = ledger.append_once(payment(2_000_000, "op-1"))
        ledger.append(LedgerEntry("c", EntryKind.CHARGE, -100_000, T0))  # offline CLI row: folded by the seed
        return entry

    entry = await in_ledger(at, write)
    assert entry.id is not None
    assert await store.fold_once(entry.id, "c", entry.amount_micros) == (True, 3_000_000)
    assert await store.fold_once(entry.id, "c", entry.amount_micros) == (False, 3_000_000)  # a repeat
    await seed_redis(store, opening, path)  # a process (re)starts
    assert await store.balance("c") == 2_900_000
    await seed_redis(store, opening, path)
    assert await store.balance("c") == 2_900_000


async def test_an_entry_never_folded_is_folded_by_the_next_seed_once(
    at: LedgerAt, store: RedisCounterStore
) -> None:
    path = at
    opening = {"c": 1_000_000}
    await seed_redis(store, opening, path)
    # written, then the server stopped before folding it
    entry, _ = await in_ledger(at, lambda ledger: ledger.append_once(payment(2_000_000, "op-1")))
    assert entry.id is not None
    assert (await asyncio.to_thread(ledger_totals, path, 0)).live == (("c", entry.id, 2_000_000),)
    await seed_redis(store, opening, path)
    assert await store.balance("c") == 3_000_000
    assert await store.fold_once(entry.id, "c", entry.amount_micros) == (False, 3_000_000)  # the repeat
    await seed_redis(store, opening, path)
    assert await store.balance("c") == 3_000_000


async def test_an_emptied_redis_is_seeded_with_live_entries_once(
    at: LedgerAt, store: RedisCounterStore
) -> None:
    path = at
    entry, _ = await in_ledger(at, lambda ledger: ledger.append_once(payment(2_000_000, "op-1")))
    assert entry.id is not None
    await seed_redis(store, {"c": 500_000, "d": 0}, path)  # unseeded: opening + every entry
    assert await store.balance("c") == 2_500_000
    assert await store.fold_once(entry.id, "c", entry.amount_micros) == (False, 2_500_000)


# every row's commit delayed by 0-4 ms after it drew its id: what makes commits overtake each other
SLOW_COMMIT = """
CREATE FUNCTION {schema}.slow_commit() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN PERFORM pg_sleep(random() * 0.004); RETURN NULL; END $$;
CREATE TRIGGER slow_commit AFTER INSERT ON {schema}.ledger FOR EACH ROW EXECUTE FUNCTION {schema}.slow_commit();
"""


async def test_writers_on_several_hosts_and_seeds_in_between_fold_every_row_once(
    request: pytest.FixtureRequest, store: RedisCounterStore
) -> None:
    """Four writers (four hosts' connections) append to one PostgreSQL ledger while seeds read it and
    move the watermark: Redis ends with every row exactly once. With ids drawn before commits are
    ordered (a naive watermark), a row committed after a seed read past its id is never folded."""
    at: PostgresLedgerAt = request.getfixturevalue("pg_ledger_at")
    await in_ledger(at, lambda ledger: None)  # the tables
    con = await asyncpg.connect(at.dsn)
    try:
        await con.execute(SLOW_COMMIT.format(schema=f'"{at.schema}"'))
    finally:
        await con.close()
    opening = {"c": 0}
    await seed_redis(store, opening, at)
    writers, rows = 4, 40
    started = threading.Barrier(writers)

    def write(n: int) -> None:
        with open_ledger(at) as ledger:
            started.wait(5)
            for i in range(rows):  # distinct amounts: a lost and a doubled row cannot cancel out
                ledger.append(LedgerEntry("c", EntryKind.PAYMENT, 1 + n * rows + i, T0))

    writing = asyncio.gather(*(asyncio.to_thread(write, n) for n in range(writers)))
    seeds = 0
    while not writing.done():
        await seed_redis(store, opening, at)
        seeds += 1
    await writing
    await seed_redis(store, opening, at)
    assert seeds >= 5  # the seeds did read in between
    assert await store.balance("c") == sum(range(1, writers * rows + 1))


def test_a_ledger_in_a_schema_is_its_own(request: pytest.FixtureRequest) -> None:
    """``?schema=NAME`` keeps a ledger apart from one in the database's public schema (the search
    path also names public: the tables are looked for in the schema itself)."""
    at: PostgresLedgerAt = request.getfixturevalue("pg_ledger_at")
    with open_ledger(PostgresLedgerAt(at.dsn)) as public:
        public.append(payment(5, None))
    with open_ledger(at) as own:
        assert own.balance_micros("c") == 0
        own.append(payment(7, None))
    with open_ledger(PostgresLedgerAt.from_dsn(f"{at.dsn}?schema={at.schema}")) as again:
        assert again.balance_micros("c") == 7
