"""Fixtures for the CDR tests: real SQLite files and a throwaway PostgreSQL schema per test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from cdr.metrics import CdrMetrics
from cdr.store import CdrStore
from cdr.store_postgres import PostgresCdrStore, quote_ident
from cdr.store_sqlite import SqliteCdrStore

T = TypeVar("T")

PG_DSN = os.environ.get("SIPCORE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def run_in_thread(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on a private loop in a worker thread (usable from sync and async fixtures)."""
    with ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro_fn()).result(timeout=30)


async def _pg_reachable() -> str | None:
    try:
        con = await asyncpg.connect(PG_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL unreachable at {PG_DSN}: {exc!r}"
    await con.close()
    return None


async def _drop_schema(schema: str) -> None:
    con = await asyncpg.connect(PG_DSN, timeout=5)
    try:
        await con.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    finally:
        await con.close()


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A unique schema, dropped afterwards; skips if PostgreSQL is not running."""
    reason = run_in_thread(_pg_reachable)
    if reason:
        pytest.skip(reason)
    schema = f"cdr_test_{uuid.uuid4().hex[:12]}"
    yield schema
    run_in_thread(lambda: _drop_schema(schema))


def pg_store(schema: str, dsn: str = PG_DSN) -> PostgresCdrStore:
    return PostgresCdrStore(dsn, schema=schema)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CdrStore]:
    """An open, migrated store of each backend (the contract suite runs against both)."""
    if request.param == "sqlite":
        s: CdrStore = SqliteCdrStore(tmp_path / "cdr.sqlite3")
    else:
        schema = request.getfixturevalue("pg_schema")
        s = pg_store(schema)
    await s.open()
    await s.migrate()
    yield s
    await s.close()


@pytest.fixture
def metrics() -> CdrMetrics:
    return CdrMetrics(CollectorRegistry())
