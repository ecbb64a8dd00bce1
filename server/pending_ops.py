"""Counter operations applied to a process's cache but not yet to Redis, kept on disk until they are.

Why on disk: while Redis is unreachable a process keeps rating calls and settles them against its
cache; those debits and free minutes must reach Redis later even if the process restarts first.
Each process writes its own SQLite file (WAL: a commit survives a crash of the process) under
``state_dir/counters-pending/``, locked with flock. At start a process also adopts the files no
running process holds (a worker count lowered, a crashed run) by moving their rows into its own.
Rows are removed once Redis has them; a replay is safe because every operation carries an id that
Redis remembers (rating.balance_redis, op markers).

The same kind of file, under ``state_dir/ledger-pending/``, is the ledger's outbox (server.billing):
call debits settled but not yet committed to the ledger, one row per call debit keyed by its
settlement (the ledger's ``call_key``, unique there), removed once the ledger has them.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

import structlog

log = structlog.get_logger("sipcore.counters")

_SCHEMA = "CREATE TABLE IF NOT EXISTS pending (id TEXT PRIMARY KEY, body TEXT NOT NULL)"


class OpKind(StrEnum):
    DEBIT = "debit"  # subject: customer, period: day, amount: micro-units
    FREE = "free"  # subject: account, period: cycle, amount: minutes granted


@dataclass(frozen=True, slots=True)
class Op:
    """One counter movement of one settled call, with the ledger line a debit becomes."""

    id: str
    kind: OpKind
    subject: str
    period: str
    amount: int
    at: str = ""  # debit: call end, ISO-8601 (the ledger entry's time)
    memo: str = ""  # debit: the call id

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @staticmethod
    def from_json(text: str) -> Op:
        data = json.loads(text)
        return Op(data["id"], OpKind(data["kind"]), data["subject"], data["period"], int(data["amount"]),
                  data.get("at", ""), data.get("memo", ""))  # fmt: skip


class PendingOps:
    """This process's queue file. Methods block on disk: call them through asyncio.to_thread."""

    def __init__(self, directory: Path, name: str, what: str = "counters_pending") -> None:
        """``what``: how its log events are named (``<what>_adopted``, ``<what>_unreadable``)."""
        self.directory = directory
        self.name = name
        self.what = what
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._fd: int | None = None
        self.path: Path | None = None

    def open(self) -> list[Op]:
        """Lock this process's file (another name if it is held), adopt orphans, return every row."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for candidate in (self.name, f"{self.name}-{os.getpid()}"):
            path = self.directory / f"{candidate}.sqlite3"
            fd = _try_lock(path)
            if fd is not None:
                self.path, self._fd = path, fd
                break
        else:
            raise RuntimeError(f"cannot lock a pending-operations file in {self.directory}")
        self._db = _connect(self.path)
        for other in sorted(self.directory.glob("*.sqlite3")):
            if other != self.path:
                self._adopt(other)
        return self._load()

    def _adopt(self, path: Path) -> None:
        fd = _try_lock(path)
        if fd is None:
            return  # a running process holds it
        try:
            src = _connect(path)
            try:
                rows = src.execute("SELECT id, body FROM pending").fetchall()
                if rows:
                    assert self._db is not None
                    with self._db:
                        self._db.executemany("INSERT OR IGNORE INTO pending VALUES (?, ?)", rows)
                    log.info(f"{self.what}_adopted", source=str(path), operations=len(rows))
                with src:
                    src.execute("DELETE FROM pending")
            finally:
                src.close()
        finally:
            os.close(fd)

    def _load(self) -> list[Op]:
        assert self._db is not None
        ops = []
        for op_id, body in self._db.execute("SELECT id, body FROM pending ORDER BY rowid"):
            try:
                ops.append(Op.from_json(body))
            except (ValueError, KeyError, TypeError):
                log.error(f"{self.what}_unreadable", id=op_id, body=body[:200])
        return ops

    def add(self, op: Op) -> None:
        with self._lock:
            assert self._db is not None
            with self._db:
                self._db.execute("INSERT OR REPLACE INTO pending VALUES (?, ?)", (op.id, op.to_json()))

    def remove(self, op_ids: Iterable[str]) -> None:
        with self._lock:
            assert self._db is not None
            with self._db:
                self._db.executemany("DELETE FROM pending WHERE id = ?", [(i,) for i in op_ids])

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(_SCHEMA)
    return db


def _try_lock(path: Path) -> int | None:
    """An exclusive flock on `path` (created if missing), or None if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
