"""The CdrStore contract met by the SQLite and PostgreSQL backends, and ``open_store(url)`` to pick one.

Periods are half-open ``[start, end)`` on the call's start time; months are UTC calendar months.
The backends import only the shared row types (`cdr.usage`), never this module, so choosing a
backend here imports no circle; each backend is imported only when its URL is opened (asyncpg stays
unloaded for SQLite).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit, urlunsplit

from cdr.record import CdrRecord, Direction
from cdr.usage import Usage, UsageBy


@runtime_checkable
class CdrStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def migrate(self) -> int:
        """Bring the schema to the latest version; return it. Safe to run concurrently."""
        ...

    async def write_batch(self, records: Sequence[CdrRecord]) -> int:
        """Store records, ignoring keys already stored; return how many were new."""
        ...

    async def write_wire_batch(self, wires: Sequence[list[Any]]) -> int:
        """Same as write_batch for spool wire lists (cdr.record.record_to_wire, checked with
        check_wire): the writer's fast path, with no per-record object building."""
        ...

    async def calls(
        self,
        start: datetime,
        end: datetime,
        *,
        customer_id: str | None = None,
        account_id: str | None = None,
    ) -> list[CdrRecord]:
        """CDRs that started in [start, end), ordered by start time then key."""
        ...

    async def usage(
        self,
        start: datetime,
        end: datetime,
        *,
        by: UsageBy,
        customer_id: str | None = None,
        direction: Direction | None = None,
    ) -> list[Usage]:
        """Totals per customer (ref, internal, currency) and per `by` group, ordered by group."""
        ...

    async def count(self) -> int: ...


class StoreUrlError(ValueError):
    pass


def open_store(url: str) -> CdrStore:
    """Build (not open) a store from ``sqlite:PATH`` or ``postgresql://…[?schema=NAME]``."""
    if url.startswith("sqlite:"):
        from cdr.store_sqlite import SqliteCdrStore

        path = url.removeprefix("sqlite:").removeprefix("//")
        if not path:
            raise StoreUrlError(f"no path in {url!r}")
        return SqliteCdrStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        from cdr.store_postgres import PostgresCdrStore

        parts = urlsplit(url)
        query = parse_qs(parts.query)
        schema = query.pop("schema", [None])[0]
        rest = "&".join(f"{k}={v}" for k, vs in query.items() for v in vs)
        return PostgresCdrStore(urlunsplit(parts._replace(query=rest)), schema=schema)
    raise StoreUrlError(f"unknown CDR store {url!r}: use sqlite:PATH or postgresql://…")
