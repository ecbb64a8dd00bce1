"""Where the ledger is, and opening it: the one place that picks a ledger backend.

A ledger is a SQLite file (a ``Path``: the default ``<state_dir>/ledger.sqlite3``, one per host, or a
command's ``--db FILE``) or a PostgreSQL database (``PostgresLedgerAt``: ``rating.ledger: {backend:
postgresql, dsn: …}``, shared by several hosts). Callers hold a ``LedgerAt`` and open a ledger for
each piece of work with ``open_ledger`` (``with open_ledger(at) as ledger: …``), from a worker
thread or a command: both backends block.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit, urlunsplit

from rating.ledger import Ledger, LedgerEntry, LedgerTotals


@dataclass(frozen=True, slots=True)
class PostgresLedgerAt:
    """A ledger in PostgreSQL: ``dsn`` without its ``?schema=`` (given apart, used via search_path)."""

    dsn: str
    schema: str | None = None

    @classmethod
    def from_dsn(cls, dsn: str) -> PostgresLedgerAt:
        """``postgresql://…[?schema=NAME]``, as the CDR store's URLs (cdr.store.open_store)."""
        parts = urlsplit(dsn)
        query = parse_qs(parts.query, keep_blank_values=True)
        schema = query.pop("schema", [None])[0]
        rest = "&".join(f"{k}={v}" for k, vs in query.items() for v in vs)
        return cls(urlunsplit(parts._replace(query=rest)), schema)

    def __str__(self) -> str:
        """For logs and messages: without the password."""
        parts = urlsplit(self.dsn)
        host = parts.netloc.rsplit("@", 1)[-1]
        user = parts.username
        shown = urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host, query=""))
        return shown + (f"?schema={self.schema}" if self.schema else "")


LedgerAt = Path | PostgresLedgerAt


class StoredLedger(Ledger, Protocol):
    """What SqliteLedger and PostgresLedger both are (rating.ledger.Ledger, plus the server's needs)."""

    def append_once(self, entry: LedgerEntry) -> tuple[LedgerEntry, bool]: ...

    def append_all(self, entries: list[LedgerEntry]) -> list[LedgerEntry]: ...

    def by_operation(self, operation_id: str) -> LedgerEntry | None: ...

    def mark_billed(self, period: str, at: datetime) -> None: ...

    def last_billed(self) -> str | None: ...

    def totals(self, watermark: int) -> LedgerTotals: ...

    def close(self) -> None: ...

    def __enter__(self) -> StoredLedger: ...

    def __exit__(self, *exc: object) -> None: ...


def open_ledger(at: LedgerAt) -> StoredLedger:
    """Open the ledger (tables created when missing; a SQLite file with its directory)."""
    if isinstance(at, PostgresLedgerAt):
        from rating.ledger_postgres import PostgresLedger  # asyncpg stays unloaded for SQLite

        return PostgresLedger(at.dsn, schema=at.schema, where=str(at))
    from rating.ledger_sqlite import SqliteLedger

    return SqliteLedger(at)


def ledger_exists(at: LedgerAt) -> bool:
    """False for a SQLite file not created yet (reading it would create it); a database: True."""
    return not isinstance(at, Path) or at.exists()


def ledger_file(at: LedgerAt) -> Path | None:
    """The SQLite file of a ledger; None for a database."""
    return at if isinstance(at, Path) else None


def ledger_at(cfg: Any) -> LedgerAt:
    """The configured ledger (``rating.ledger``): a relative SQLite path is under ``server.state_dir``."""
    section = cfg.file.rating.ledger
    if section.backend == "postgresql":
        return PostgresLedgerAt.from_dsn(section.dsn)
    path = Path(section.path).expanduser()
    return path if path.is_absolute() else Path(cfg.paths.state_dir) / path
