"""Live payments and charges, below the API: the ledger's unique operation id (one row however often a
request is repeated, also for ledgers written before the column existed), and the exactly-once fold of
a live entry into Redis whichever of the server's fold and a (re)start's seed comes first."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from rating.balance_redis import RedisCounterStore
from rating.ledger import EntryKind, LedgerEntry
from rating.ledger_sqlite import SqliteLedger
from server.counter_seed import ledger_totals, seed_redis
from tests.server.admin_helpers import REDIS_URL, drop_prefix

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def payment(amount: int, operation_id: str | None, customer: str = "c") -> LedgerEntry:
    return LedgerEntry(customer, EntryKind.PAYMENT, amount, T0, "memo", None, operation_id)


def test_append_once_keeps_the_first_row(tmp_path: Path) -> None:
    with SqliteLedger(tmp_path / "ledger.sqlite3") as ledger:
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
    tmp_path: Path, store: RedisCounterStore
) -> None:
    path = tmp_path / "ledger.sqlite3"
    opening = {"c": 1_000_000}
    assert await seed_redis(store, opening, path) == 0
    with SqliteLedger(path) as ledger:
        entry, _ = ledger.append_once(payment(2_000_000, "op-1"))
        ledger.append(LedgerEntry("c", EntryKind.CHARGE, -100_000, T0))  # offline CLI row: folded by the seed
    assert entry.id is not None
    assert await store.fold_once(entry.id, "c", entry.amount_micros) == (True, 3_000_000)
    assert await store.fold_once(entry.id, "c", entry.amount_micros) == (False, 3_000_000)  # a repeat
    await seed_redis(store, opening, path)  # a process (re)starts
    assert await store.balance("c") == 2_900_000
    await seed_redis(store, opening, path)
    assert await store.balance("c") == 2_900_000


async def test_an_entry_never_folded_is_folded_by_the_next_seed_once(
    tmp_path: Path, store: RedisCounterStore
) -> None:
    path = tmp_path / "ledger.sqlite3"
    opening = {"c": 1_000_000}
    await seed_redis(store, opening, path)
    with SqliteLedger(path) as ledger:  # written, then the server stopped before folding it
        entry, _ = ledger.append_once(payment(2_000_000, "op-1"))
    assert entry.id is not None
    assert ledger_totals(path, 0).live == (("c", entry.id, 2_000_000),)
    await seed_redis(store, opening, path)
    assert await store.balance("c") == 3_000_000
    assert await store.fold_once(entry.id, "c", entry.amount_micros) == (False, 3_000_000)  # the repeat
    await seed_redis(store, opening, path)
    assert await store.balance("c") == 3_000_000


async def test_an_emptied_redis_is_seeded_with_live_entries_once(
    tmp_path: Path, store: RedisCounterStore
) -> None:
    path = tmp_path / "ledger.sqlite3"
    with SqliteLedger(path) as ledger:
        entry, _ = ledger.append_once(payment(2_000_000, "op-1"))
    assert entry.id is not None
    await seed_redis(store, {"c": 500_000, "d": 0}, path)  # unseeded: opening + every entry
    assert await store.balance("c") == 2_500_000
    assert await store.fold_once(entry.id, "c", entry.amount_micros) == (False, 2_500_000)
