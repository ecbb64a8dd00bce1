"""SQLite CdrStore (the embedded default): WAL, synchronous=FULL, money as integer micro-units.

sqlite3 is blocking, so every call runs on one dedicated thread that owns the connection.
synchronous=FULL because the spool is acknowledged right after a commit: a commit must survive a
power cut, or acknowledged CDRs could vanish.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from cdr.money import from_micros
from cdr.record import (
    WIRE_COST,
    WIRE_PRICE,
    CdrRecord,
    Direction,
    from_epoch_us,
    record_from_row,
    record_to_wire,
    to_epoch_us,
)
from cdr.usage import Usage, UsageBy

T = TypeVar("T")

COLUMNS = (
    "call_id, leg, customer_id, customer_ref, internal, account_id, direction, caller, dialed,"
    " normalised, prefix, destination, start_us, answer_us, end_us, duration, billed_seconds,"
    " disposition, sip_status, cost_micros, price_micros, margin_micros, currency, free_minutes, package,"
    " hangup_by"
)

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE cdr (
            call_id TEXT NOT NULL, leg INTEGER NOT NULL,
            customer_id TEXT NOT NULL, customer_ref TEXT NOT NULL, internal INTEGER NOT NULL,
            account_id TEXT, direction TEXT NOT NULL,
            caller TEXT NOT NULL, dialed TEXT NOT NULL, normalised TEXT NOT NULL,
            prefix TEXT, destination TEXT,
            start_us INTEGER NOT NULL, answer_us INTEGER, end_us INTEGER NOT NULL,
            duration INTEGER NOT NULL, billed_seconds INTEGER NOT NULL,
            disposition TEXT NOT NULL, sip_status INTEGER NOT NULL,
            cost_micros INTEGER NOT NULL, price_micros INTEGER NOT NULL, margin_micros INTEGER NOT NULL,
            currency TEXT NOT NULL, free_minutes INTEGER NOT NULL, package TEXT,
            PRIMARY KEY (call_id, leg)
        );
        CREATE INDEX cdr_start ON cdr (start_us);
        CREATE INDEX cdr_customer_start ON cdr (customer_id, start_us);
        CREATE INDEX cdr_account_start ON cdr (account_id, start_us);
        """,
    ),
    (2, "ALTER TABLE cdr ADD COLUMN hangup_by TEXT"),
]

_GROUP = {
    "month": "strftime('%Y-%m', start_us / 1000000, 'unixepoch')",
    "account": "account_id",
    "number": "normalised",
}


_WIDTH = 26  # columns of a row (COLUMNS)
_ROWS_PER_INSERT = 256  # 6,656 parameters (SQLite allows 32,766 since 3.32, 999 before: then 32 rows)


def _chunks(rows: int, most: int) -> list[int]:
    """Rows per INSERT for a batch of ``rows``: full chunks of the largest power of two allowed (at
    most ``most`` rows, by the parameter limit), then the rest by its binary digits. So at most 9
    distinct statements are ever prepared (sqlite3 keeps them) and a batch takes few steps."""
    size = _ROWS_PER_INSERT
    while size > max(1, most):
        size >>= 1
    out = [size] * (rows // size)
    rest = rows % size
    while rest:
        size >>= 1
        if rest >= size:
            out.append(size)
            rest -= size
    return out


@lru_cache(maxsize=16)
def _insert_rows(count: int) -> str:
    """One INSERT of ``count`` rows. Why not executemany: it steps the statement once per row and
    releases the GIL around every step, so a batch of n CDRs hands the GIL back and forth with the
    event loop's thread n times, each hand-off a futex wake-up that the loop pays in CPU (measured:
    ~1 GIL hand-off per call on the call path, bench_sip_cpu). INSERT OR IGNORE still skips each
    row already stored on its own (the key: call_id, leg)."""
    row = f"({', '.join('?' * _WIDTH)})"
    return f"INSERT OR IGNORE INTO cdr ({COLUMNS}) VALUES {', '.join([row] * count)}"


def _wire_row(w: Sequence[Any]) -> tuple[Any, ...]:
    """Wire list -> row: the wire already holds micro-units and epoch microseconds."""
    return (*w[1:22], w[WIRE_PRICE] - w[WIRE_COST], w[22], w[23], w[24], w[25])


def _record(t: Sequence[Any]) -> CdrRecord:
    """SQLite keeps booleans as 0/1, instants as epoch microseconds and money as micro-units."""
    row = list(t)
    row[4] = bool(row[4])
    row[12] = from_epoch_us(row[12])
    row[13] = None if row[13] is None else from_epoch_us(row[13])
    row[14] = from_epoch_us(row[14])
    row[19], row[20], row[21] = from_micros(row[19]), from_micros(row[20]), from_micros(row[21])
    return record_from_row(row)


class SqliteCdrStore:
    kind = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._pool: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._pool is None or self._db is None:
            raise RuntimeError("SqliteCdrStore is not open")
        db = self._db
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, db)

    async def open(self) -> None:
        if self._db is not None:
            return
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cdr-sqlite")

        def connect() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA cache_size=-65536")  # 64 MiB: four B-trees grow on every insert
            return db

        try:
            self._db = await asyncio.get_running_loop().run_in_executor(self._pool, connect)
        except BaseException:
            self._pool.shutdown(wait=False)
            self._pool = None
            raise

    async def close(self) -> None:
        if self._db is not None:
            await self._run(lambda db: db.close())
            self._db = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    async def migrate(self) -> int:
        def run(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("CREATE TABLE IF NOT EXISTS cdr_schema_version (version INTEGER PRIMARY KEY)")
                current = db.execute("SELECT COALESCE(MAX(version), 0) FROM cdr_schema_version").fetchone()[0]
                for version, sql in MIGRATIONS:
                    if version > current:
                        for stmt in filter(str.strip, sql.split(";")):
                            db.execute(stmt)
                        db.execute("INSERT INTO cdr_schema_version VALUES (?)", (version,))
                        current = version
                db.execute("COMMIT")
                return current
            except BaseException:
                db.execute("ROLLBACK")
                raise

        return await self._run(run)

    async def write_batch(self, records: Sequence[CdrRecord]) -> int:
        return await self.write_wire_batch([record_to_wire(r) for r in records])

    async def write_wire_batch(self, wires: Sequence[list[Any]]) -> int:
        def run(db: sqlite3.Connection) -> int:
            rows = [_wire_row(w) for w in wires]
            most = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _WIDTH
            before = db.total_changes
            db.execute("BEGIN")
            try:  # a few multi-row INSERTs, not executemany (see _insert_rows)
                i = 0
                for count in _chunks(len(rows), most):
                    db.execute(_insert_rows(count), [value for row in rows[i : i + count] for value in row])
                    i += count
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return db.total_changes - before

        return await self._run(run)

    async def calls(
        self,
        start: datetime,
        end: datetime,
        *,
        customer_id: str | None = None,
        account_id: str | None = None,
    ) -> list[CdrRecord]:
        where, args = self._where(start, end, customer_id, None)
        if account_id is not None:
            where += " AND account_id = ?"
            args.append(account_id)
        sql = f"SELECT {COLUMNS} FROM cdr WHERE {where} ORDER BY start_us, call_id, leg"
        rows = await self._run(lambda db: db.execute(sql, args).fetchall())
        return [_record(t) for t in rows]

    async def usage(
        self,
        start: datetime,
        end: datetime,
        *,
        by: UsageBy,
        customer_id: str | None = None,
        direction: Direction | None = None,
    ) -> list[Usage]:
        group = _GROUP[by]
        where, args = self._where(start, end, customer_id, direction)
        sql = (
            f"SELECT {group} AS g, customer_id, customer_ref, internal, currency, COUNT(*),"
            " SUM(disposition = 'answered'), SUM(duration), SUM(billed_seconds), SUM(free_minutes),"
            " SUM(cost_micros), SUM(price_micros), SUM(margin_micros)"
            f" FROM cdr WHERE {where}"
            " GROUP BY g, customer_id, customer_ref, internal, currency"
            " ORDER BY g, customer_id, customer_ref, currency"
        )
        rows = await self._run(lambda db: db.execute(sql, args).fetchall())
        return [
            Usage(
                customer_id=t[1],
                customer_ref=t[2],
                internal=bool(t[3]),
                currency=t[4],
                calls=t[5],
                answered=t[6],
                duration=t[7],
                billed_seconds=t[8],
                free_minutes=t[9],
                cost=from_micros(t[10]),
                price=from_micros(t[11]),
                margin=from_micros(t[12]),
                **{"month" if by == "month" else "account_id" if by == "account" else "number": t[0]},
            )
            for t in rows
        ]

    async def count(self) -> int:
        return await self._run(lambda db: db.execute("SELECT COUNT(*) FROM cdr").fetchone()[0])

    @staticmethod
    def _where(
        start: datetime, end: datetime, customer_id: str | None, direction: Direction | None
    ) -> tuple[str, list[Any]]:
        where = "start_us >= ? AND start_us < ?"
        args: list[Any] = [to_epoch_us(start), to_epoch_us(end)]
        if customer_id is not None:
            where += " AND customer_id = ?"
            args.append(customer_id)
        if direction is not None:
            where += " AND direction = ?"
            args.append(Direction(direction).value)
        return where, args
