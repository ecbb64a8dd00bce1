"""PostgreSQL ledgers for tests: one throwaway database per test session (dropped at its end), one
schema per test. Skips when PostgreSQL is not running at 127.0.0.1:5432 (user postgres, trust)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest

from rating.ledger_store import PostgresLedgerAt

PG_ROOT = os.environ.get("SIPCORE_TEST_PG_ROOT", "postgresql://postgres@127.0.0.1:5432/postgres")


def _in_thread(sql: str) -> str | None:
    """Run one statement on the server's maintenance database (from any context, a loop running or
    not); the failure's text when PostgreSQL cannot be reached."""

    async def go() -> None:
        con = await asyncpg.connect(PG_ROOT, timeout=5)
        try:
            await con.execute(sql)
        finally:
            await con.close()

    with ThreadPoolExecutor(1) as ex:
        try:
            ex.submit(asyncio.run, go()).result(timeout=30)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            return repr(exc)
    return None


@contextlib.contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """The DSN of a database created for the caller (its name: ``prefix``_<random>), dropped after;
    skips the test when PostgreSQL is unreachable."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    problem = _in_thread(f"CREATE DATABASE {name}")
    if problem:
        pytest.skip(f"PostgreSQL unreachable at {PG_ROOT}: {problem}")
    try:
        yield f"{PG_ROOT.rsplit('/', 1)[0]}/{name}"
    finally:
        _in_thread(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def pg_ledger_dsn() -> Iterator[str]:
    """The DSN of a database created for this session (its name: sipcore_ledger_test_<random>)."""
    with scratch_database("sipcore_ledger_test") as dsn:
        yield dsn


@pytest.fixture
def pg_ledger_at(pg_ledger_dsn: str) -> PostgresLedgerAt:
    """A ledger of its own (a fresh schema, created on first open) in the session's database."""
    return PostgresLedgerAt(pg_ledger_dsn, f"ledger_{secrets.token_hex(6)}")
