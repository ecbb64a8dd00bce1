"""The memory backend's local state file: SQLite (stdlib sqlite3, WAL) so a restart keeps bindings.

Written behind the REGISTER path by `MemoryLocationStore.flush` (whole AORs, one transaction per
batch) and read once at start. The table is namespaced so the file can hold other local state too.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path

from registrar.location import codec
from registrar.location.binding import Binding

_SCHEMA = """
CREATE TABLE IF NOT EXISTS location_bindings (
    aor TEXT NOT NULL,
    key TEXT NOT NULL,
    expires_at REAL NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (aor, key)
) WITHOUT ROWID
"""


class StateFile:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # Written from worker threads (asyncio.to_thread); the lock keeps one write at a time even when
        # a cancelled flush's thread is still finishing while close() flushes again.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def load(self, now: float) -> dict[str, list[Binding]]:
        """Every binding still alive at ``now``; the ones that expired while we were down are deleted."""
        self._db.execute("DELETE FROM location_bindings WHERE expires_at <= ?", (now,))
        out: dict[str, list[Binding]] = {}
        for aor, data in self._db.execute("SELECT aor, data FROM location_bindings ORDER BY aor"):
            bucket = out.get(aor)
            if bucket is None:
                bucket = out[aor] = []
            else:
                aor = bucket[0].aor  # share one str per AOR
            bucket.append(codec.decode(aor, data))
        return out

    def write(self, snapshot: Mapping[str, tuple[Binding, ...]]) -> None:
        """Replace the rows of each AOR in ``snapshot`` with its bindings (empty: AOR gone)."""
        rows = [(aor, b.key, b.expires_at, codec.encode(b)) for aor, bs in snapshot.items() for b in bs]
        db = self._db
        with self._lock:
            db.execute("BEGIN")
            try:
                db.executemany("DELETE FROM location_bindings WHERE aor = ?", [(a,) for a in snapshot])
                db.executemany("INSERT INTO location_bindings VALUES (?, ?, ?, ?)", rows)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()
