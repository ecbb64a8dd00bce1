"""PostgreSQL CdrStore via asyncpg: NUMERIC(18,6) money, timestamptz times, versioned migrations.

A batch is COPY'd into a per-connection temporary staging table and moved with
``INSERT … SELECT … ON CONFLICT DO NOTHING``: COPY speed with idempotency on (call_id, leg).
An optional ``schema`` isolates a deployment (or a test run) through the connections' search_path.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from cdr.periods import month_slices
from cdr.record import CdrRecord, Direction, record_from_row, record_to_wire
from cdr.usage import Usage, UsageBy

COLUMNS = (
    "call_id",
    "leg",
    "customer_id",
    "customer_ref",
    "internal",
    "account_id",
    "direction",
    "caller",
    "dialed",
    "normalised",
    "prefix",
    "destination",
    "start_at",
    "answer_at",
    "end_at",
    "duration",
    "billed_seconds",
    "disposition",
    "sip_status",
    "cost",
    "price",
    "margin",
    "currency",
    "free_minutes",
    "package",
    "hangup_by",
)
_COLS = ", ".join(COLUMNS)
_MIGRATION_LOCK = 0x5C0DE_CD5  # pg_advisory_xact_lock key: one migrator at a time

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE cdr (
            call_id text NOT NULL, leg integer NOT NULL,
            customer_id text NOT NULL, customer_ref text NOT NULL, internal boolean NOT NULL,
            account_id text, direction text NOT NULL,
            caller text NOT NULL, dialed text NOT NULL, normalised text NOT NULL,
            prefix text, destination text,
            start_at timestamptz NOT NULL, answer_at timestamptz, end_at timestamptz NOT NULL,
            duration integer NOT NULL, billed_seconds integer NOT NULL,
            disposition text NOT NULL, sip_status integer NOT NULL,
            cost numeric(18,6) NOT NULL, price numeric(18,6) NOT NULL, margin numeric(18,6) NOT NULL,
            currency text NOT NULL, free_minutes integer NOT NULL, package text,
            PRIMARY KEY (call_id, leg)
        );
        CREATE INDEX cdr_start ON cdr (start_at);
        CREATE INDEX cdr_customer_start ON cdr (customer_id, start_at);
        CREATE INDEX cdr_account_start ON cdr (account_id, start_at);
        """,
    ),
    (2, "ALTER TABLE cdr ADD COLUMN hangup_by text"),
]

_GROUP = {
    "account": "account_id",
    "number": "normalised",
}


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# Staging rows are the spool wire layout (integers for money and times); the INSERT converts them
# exactly: micro-units x 0.000001 as NUMERIC, epoch + n microseconds as timestamptz.
STAGE_COLUMNS = (
    "call_id", "leg", "customer_id", "customer_ref", "internal", "account_id", "direction", "caller",
    "dialed", "normalised", "prefix", "destination", "start_us", "answer_us", "end_us", "duration",
    "billed_seconds", "disposition", "sip_status", "cost_micros", "price_micros", "currency",
    "free_minutes", "package", "hangup_by",
)  # fmt: skip
_STAGE_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS cdr_stage_wire ("
    " call_id text, leg integer, customer_id text, customer_ref text, internal boolean, account_id text,"
    " direction text, caller text, dialed text, normalised text, prefix text, destination text,"
    " start_us bigint, answer_us bigint, end_us bigint, duration integer, billed_seconds integer,"
    " disposition text, sip_status integer, cost_micros bigint, price_micros bigint, currency text,"
    " free_minutes integer, package text, hangup_by text) ON COMMIT DELETE ROWS"
)
_US = "timestamptz 'epoch' + {} * interval '1 microsecond'"
_MONEY = "({} * 0.000001)::numeric(18,6)"
_STAGE_SELECT = ", ".join(
    [
        *STAGE_COLUMNS[:12],
        _US.format("start_us"),
        _US.format("answer_us"),
        _US.format("end_us"),
        "duration",
        "billed_seconds",
        "disposition",
        "sip_status",
        _MONEY.format("cost_micros"),
        _MONEY.format("price_micros"),
        _MONEY.format("(price_micros - cost_micros)"),
        "currency",
        "free_minutes",
        "package",
        "hangup_by",
    ]
)


def _record(t: asyncpg.Record) -> CdrRecord:
    return record_from_row(t)  # asyncpg already gives datetimes, Decimals and booleans


class PostgresCdrStore:
    kind = "postgresql"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        max_connections: int = 4,
        command_timeout: float = 30.0,  # not money: seconds
        connect_timeout: float = 5.0,  # not money: seconds
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.max_connections = max_connections
        self.command_timeout = command_timeout
        self.connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("PostgresCdrStore is not open")
        return self._pool

    async def open(self) -> None:
        if self._pool is not None:
            return
        settings = {"search_path": f"{quote_ident(self.schema)}, public"} if self.schema else None
        # min_size=0: with a floor, asyncpg reconnects in a background task of its own during an
        # outage and logs a full traceback on each attempt; the CDR writer's retry (one event per
        # attempt, with backoff) is the only retry. Connections are still kept for reuse.
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=0,
            max_size=self.max_connections,
            command_timeout=self.command_timeout,
            timeout=self.connect_timeout,
            server_settings=settings,
        )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def migrate(self) -> int:
        async with self.pool.acquire() as con, con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            if self.schema:
                await con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.schema)}")
            await con.execute(
                "CREATE TABLE IF NOT EXISTS cdr_schema_version"
                " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            current = await con.fetchval("SELECT COALESCE(MAX(version), 0) FROM cdr_schema_version")
            for version, sql in MIGRATIONS:
                if version > current:
                    await con.execute(sql)
                    await con.execute("INSERT INTO cdr_schema_version (version) VALUES ($1)", version)
                    current = version
            return int(current)

    async def write_batch(self, records: Sequence[CdrRecord]) -> int:
        return await self.write_wire_batch([record_to_wire(r) for r in records])

    async def write_wire_batch(self, wires: Sequence[list[Any]]) -> int:
        if not wires:
            return 0
        rows = [w[1:] for w in wires]
        async with self.pool.acquire() as con, con.transaction():
            await con.execute(_STAGE_DDL)
            await con.copy_records_to_table("cdr_stage_wire", records=rows, columns=STAGE_COLUMNS)
            status = await con.execute(
                f"INSERT INTO cdr ({_COLS}) SELECT {_STAGE_SELECT} FROM cdr_stage_wire ON CONFLICT DO NOTHING"
            )
        return int(status.rsplit(" ", 1)[-1])

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
            args.append(account_id)
            where += f" AND account_id = ${len(args)}"
        sql = f"SELECT {_COLS} FROM cdr WHERE {where} ORDER BY start_at, call_id, leg"
        async with self.pool.acquire() as con:
            rows = await con.fetch(sql, *args)
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
        # By month: one query per month slice. Grouping by a computed month makes the planner
        # expect a group per row and sort 1M rows on disk; plain columns hash-aggregate in memory.
        if by == "month":
            out: list[Usage] = []
            for label, lo, hi in month_slices(start, end):
                out += await self._usage(lo, hi, None, customer_id, direction, month=label)
            return out
        return await self._usage(start, end, _GROUP[by], customer_id, direction)

    async def _usage(
        self,
        start: datetime,
        end: datetime,
        group: str | None,
        customer_id: str | None,
        direction: Direction | None,
        month: str | None = None,
    ) -> list[Usage]:
        where, args = self._where(start, end, customer_id, direction)
        keys = "customer_id, customer_ref, internal, currency"
        sql = (
            f"SELECT {group or 'NULL'} AS g, {keys}, COUNT(*),"
            " COUNT(*) FILTER (WHERE disposition = 'answered'), SUM(duration), SUM(billed_seconds),"
            " SUM(free_minutes), SUM(cost), SUM(price), SUM(margin)"
            f" FROM cdr WHERE {where}"
            f" GROUP BY {'g, ' if group else ''}{keys}"
            f" ORDER BY {'g, ' if group else ''}customer_id, customer_ref, currency"
        )
        async with self.pool.acquire() as con:
            rows = await con.fetch(sql, *args)
        key = "account_id" if group == _GROUP["account"] else "number"
        return [
            Usage(
                customer_id=t[1],
                customer_ref=t[2],
                internal=t[3],
                currency=t[4],
                calls=t[5],
                answered=t[6],
                duration=int(t[7]),
                billed_seconds=int(t[8]),
                free_minutes=int(t[9]),
                cost=t[10],
                price=t[11],
                margin=t[12],
                month=month,
                **({key: t[0]} if group else {}),
            )
            for t in rows
        ]

    async def count(self) -> int:
        async with self.pool.acquire() as con:
            return int(await con.fetchval("SELECT COUNT(*) FROM cdr"))

    @staticmethod
    def _where(
        start: datetime, end: datetime, customer_id: str | None, direction: Direction | None
    ) -> tuple[str, list[Any]]:
        where = "start_at >= $1 AND start_at < $2"
        args: list[Any] = [start, end]
        if customer_id is not None:
            args.append(customer_id)
            where += f" AND customer_id = ${len(args)}"
        if direction is not None:
            args.append(Direction(direction).value)
            where += f" AND direction = ${len(args)}"
        return where, args
