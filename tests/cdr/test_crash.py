"""kill -9 of a real writer process mid-drain: after restart, no CDR lost, none duplicated."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from cdr.pipeline import CdrPipeline
from cdr.store_sqlite import SqliteCdrStore
from sipcore.waiting import within
from tests.cdr.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
N = 2000


def _stored(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM cdr").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


async def test_kill_9_mid_drain_then_restart(tmp_path: Path) -> None:
    spool, db = tmp_path / "spool", tmp_path / "cdr.sqlite3"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.cdr.crash_writer",
        str(spool),
        str(db),
        str(N),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = b""
        while line.strip() != b"durable":  # structlog also writes to stdout
            line = await within(proc.stdout.readline(), 30)
            assert line, "writer process ended before spooling"

        async def some_stored() -> bool:
            return _stored(db) >= 200

        await wait_until(some_stored, timeout=30)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await within(proc.wait(), 10)
    before = _stored(db)
    assert 0 < before < N, "the kill must land in the middle of draining"

    store = SqliteCdrStore(db)
    p = CdrPipeline(spool, store, registry=CollectorRegistry())
    await p.start()
    assert await p.stop(timeout=30)
    assert _stored(db) == N  # nothing lost; the primary key makes duplicates impossible
    assert p.writer.written == N - before  # replayed CDRs already stored were recognised as such
    con = sqlite3.connect(db)
    ids = {row[0] for row in con.execute("SELECT call_id FROM cdr")}
    con.close()
    assert ids == {f"call-{i}@sip.example" for i in range(N)}
    assert not [p for p in spool.glob("*.seg") if p.stat().st_size > 0]  # fully acknowledged
