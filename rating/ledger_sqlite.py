"""EDGE ADAPTER: the ledger in SQLite (stdlib sqlite3), for the `sipcore balance` commands.

Amounts are stored as integer micro-units; times as ISO-8601 UTC text. One transaction per append.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from rating.ledger import EntryKind, LedgerEntry

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount_micros INTEGER NOT NULL,
    at TEXT NOT NULL,
    memo TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS ledger_customer ON ledger (customer_id, id);
"""


class SqliteLedger:
    """Ledger in a SQLite file (created with its parent directory if missing)."""

    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path))
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqliteLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, entry: LedgerEntry) -> LedgerEntry:
        with self._db:
            cur = self._db.execute(
                "INSERT INTO ledger (customer_id, kind, amount_micros, at, memo) VALUES (?, ?, ?, ?, ?)",
                (entry.customer_id, str(entry.kind), entry.amount_micros, entry.at.isoformat(), entry.memo),
            )
        return replace(entry, id=cur.lastrowid)

    def balance_micros(self, customer_id: str) -> int:
        row = self._db.execute(
            "SELECT COALESCE(SUM(amount_micros), 0) FROM ledger WHERE customer_id = ?", (customer_id,)
        ).fetchone()
        return int(row[0])

    def entries(self, customer_id: str, limit: int | None = None) -> list[LedgerEntry]:
        sql = "SELECT id, kind, amount_micros, at, memo FROM ledger WHERE customer_id = ? ORDER BY id DESC"
        params: tuple[object, ...] = (customer_id,)
        if limit:
            sql += " LIMIT ?"
            params = (customer_id, limit)
        rows = self._db.execute(sql, params).fetchall()
        return [
            LedgerEntry(customer_id, EntryKind(kind), amount, datetime.fromisoformat(at), memo, id_)
            for id_, kind, amount, at, memo in reversed(rows)
        ]
