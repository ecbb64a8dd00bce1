"""EDGE ADAPTER: the ledger in SQLite (stdlib sqlite3), one file per host (the default backend).

Amounts are stored as integer micro-units; times as ISO-8601 UTC text. One transaction per append;
SQLite lets one writer at a time commit, so ids are committed in id order (what the seed's watermark
needs, server.counter_seed; rating.ledger_postgres has to take a lock for it).
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from rating.ledger import EntryKind, LedgerEntry, LedgerTotals, check_entry

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount_micros INTEGER NOT NULL,
    at TEXT NOT NULL,
    memo TEXT NOT NULL DEFAULT '',
    operation_id TEXT,
    call_key TEXT
);
CREATE INDEX IF NOT EXISTS ledger_customer ON ledger (customer_id, id);
"""

# Payments and charges made through the admin API carry the client's operation id; the unique index
# makes a repeated request find the first row instead of adding a second (one statement, no
# check-then-write). Ledgers written before it get the column on open.
_OPERATION_ID = """
CREATE UNIQUE INDEX IF NOT EXISTS ledger_operation ON ledger (operation_id) WHERE operation_id IS NOT NULL;
"""

# A call debit carries its settlement's key (rating.ledger.LedgerEntry.call_key): a batch of call debits
# written again (replayed from the local outbox after a crash between the commit and the outbox's
# clean-up, server.billing) adds each row once. Ledgers written before it get the column on open.
_CALL_KEY = """
CREATE UNIQUE INDEX IF NOT EXISTS ledger_call_key ON ledger (call_key) WHERE call_key IS NOT NULL;
"""

# Months the server's billing run completed (every fee of the month posted): where a restart resumes.
_BILLING_RUNS = """
CREATE TABLE IF NOT EXISTS billing_runs (period TEXT PRIMARY KEY, at TEXT NOT NULL);
"""

_COLUMNS = "id, customer_id, kind, amount_micros, at, memo, operation_id, call_key"
_INSERT = (
    "INSERT INTO ledger (customer_id, kind, amount_micros, at, memo, operation_id, call_key)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class SqliteLedger:
    """Ledger in a SQLite file (created with its parent directory if missing)."""

    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=10.0)
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(ledger)")}
        for column in ("operation_id", "call_key"):  # a ledger from before operation ids / call keys
            if column in columns:
                continue
            try:
                with self._db:
                    self._db.execute(f"ALTER TABLE ledger ADD COLUMN {column} TEXT")
            except sqlite3.OperationalError as exc:  # another worker opening it added it first
                if "duplicate column" not in str(exc):
                    raise
        self._db.executescript(_OPERATION_ID)
        self._db.executescript(_CALL_KEY)
        self._db.executescript(_BILLING_RUNS)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqliteLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, entry: LedgerEntry) -> LedgerEntry:
        check_entry(entry)
        with self._db:
            cur = self._db.execute(_INSERT, _values(entry))
        return replace(entry, id=cur.lastrowid)

    def append_all(self, entries: list[LedgerEntry]) -> list[LedgerEntry]:
        """Store a batch in one transaction: all of it or none (a retried batch is not half in twice).
        An entry whose ``call_key`` the ledger holds already is skipped (a replayed call debit);
        returns the entries stored now."""
        for entry in entries:
            check_entry(entry)
        out = []
        sql = _INSERT + " ON CONFLICT (call_key) WHERE call_key IS NOT NULL DO NOTHING"
        with self._db:
            for entry in entries:
                cur = self._db.execute(sql, _values(entry))
                if cur.rowcount == 1:
                    out.append(replace(entry, id=cur.lastrowid))
        return out

    def append_once(self, entry: LedgerEntry) -> tuple[LedgerEntry, bool]:
        """Store an entry carrying an ``operation_id`` unless one with that id exists: returns the
        stored entry (the first one, on a repeat) and whether this call added it. The unique index
        decides, in one statement, even between processes writing the same file."""
        if not entry.operation_id:
            raise ValueError("append_once needs an operation_id")
        check_entry(entry)
        with self._db:
            cur = self._db.execute(
                _INSERT + " ON CONFLICT (operation_id) WHERE operation_id IS NOT NULL DO NOTHING",
                _values(entry),
            )
        if cur.rowcount == 1:
            return replace(entry, id=cur.lastrowid), True
        found = self.by_operation(entry.operation_id)
        assert found is not None
        return found, False

    def mark_billed(self, period: str, at: datetime) -> None:
        """Record that the billing run of ``period`` (YYYY-MM) completed (a repeat keeps the first)."""
        with self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO billing_runs (period, at) VALUES (?, ?)", (period, at.isoformat())
            )

    def last_billed(self) -> str | None:
        """The latest month whose billing run completed, or None."""
        row = self._db.execute("SELECT MAX(period) FROM billing_runs").fetchone()
        return str(row[0]) if row and row[0] is not None else None

    def by_operation(self, operation_id: str) -> LedgerEntry | None:
        sql = f"SELECT {_COLUMNS} FROM ledger WHERE operation_id = ?"
        row = self._db.execute(sql, (operation_id,)).fetchone()
        return _entry(row) if row is not None else None

    def balance_micros(self, customer_id: str) -> int:
        try:
            row = self._db.execute(
                "SELECT COALESCE(SUM(amount_micros), 0) FROM ledger WHERE customer_id = ?", (customer_id,)
            ).fetchone()
        except sqlite3.OperationalError as exc:
            if "overflow" not in str(exc):
                raise
            # rows written before amounts were bounded can overflow SQLite's 64-bit SUM: Python's
            # integers are exact at any size, so the balance still reads (slowly, once)
            rows = self._db.execute("SELECT amount_micros FROM ledger WHERE customer_id = ?", (customer_id,))
            return sum(int(amount) for (amount,) in rows)
        return int(row[0])

    def entries(self, customer_id: str, limit: int | None = None) -> list[LedgerEntry]:
        sql = f"SELECT {_COLUMNS} FROM ledger WHERE customer_id = ? ORDER BY id DESC"
        params: tuple[object, ...] = (customer_id,)
        if limit:
            sql += " LIMIT ?"
            params = (customer_id, limit)
        rows = self._db.execute(sql, params).fetchall()
        return [_entry(row) for row in reversed(rows)]

    def totals(self, watermark: int) -> LedgerTotals:
        """The seed's sums (server.counter_seed), in one read transaction."""
        db = self._db
        db.execute("BEGIN")
        try:
            last = int(db.execute(LedgerTotals.LAST).fetchone()[0])
            every = db.execute(_numbered(LedgerTotals.EVERY), (last,)).fetchall()
            since = db.execute(
                _numbered(LedgerTotals.SINCE), (watermark, last, str(EntryKind.CALL))
            ).fetchall()
            live = db.execute(_numbered(LedgerTotals.LIVE), (watermark, last)).fetchall()
        finally:
            db.execute("COMMIT")
        return LedgerTotals.from_rows(last, every, since, live)


def _numbered(sql: str) -> str:
    """PostgreSQL's $n parameters as SQLite's ?n."""
    return sql.replace("$", "?")


def _values(entry: LedgerEntry) -> tuple[object, ...]:
    return (entry.customer_id, str(entry.kind), entry.amount_micros, entry.at.isoformat(), entry.memo,
            entry.operation_id, entry.call_key)  # fmt: skip


def _entry(row: tuple[object, ...]) -> LedgerEntry:
    id_, customer_id, kind, amount, at, memo, operation_id, call_key = row
    return LedgerEntry(str(customer_id), EntryKind(str(kind)), int(amount), datetime.fromisoformat(str(at)),  # type: ignore[arg-type]
                       str(memo), int(id_), str(operation_id) if operation_id is not None else None,  # type: ignore[arg-type]
                       str(call_key) if call_key is not None else None)  # fmt: skip
