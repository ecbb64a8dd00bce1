"""The on-disk queue of counter operations waiting for Redis (server.pending_ops)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from server.pending_ops import Op, OpKind, PendingOps

DEBIT = Op("s1:d", OpKind.DEBIT, "pre", "2026-11-22", 500_000, "2026-11-22T10:01:00+00:00", "call-1")
FREE = Op("s1:f", OpKind.FREE, "pre/101", "2026-11", 3)


def test_operations_survive_a_reopen_until_removed(tmp_path: Path) -> None:
    q = PendingOps(tmp_path, "worker-0")
    assert q.open() == []
    q.add(DEBIT)
    q.add(FREE)
    q.close()
    q = PendingOps(tmp_path, "worker-0")
    assert q.open() == [DEBIT, FREE]
    q.remove([DEBIT.id])
    q.close()
    q = PendingOps(tmp_path, "worker-0")
    assert q.open() == [FREE]
    q.close()


def test_a_file_held_by_a_running_process_is_left_alone(tmp_path: Path) -> None:
    running = PendingOps(tmp_path, "worker-1")
    running.open()
    running.add(DEBIT)
    other = PendingOps(tmp_path, "worker-0")
    assert other.open() == []  # worker-1 is alive: its queue is its own
    other.close()
    running.close()
    other = PendingOps(tmp_path, "worker-0")
    assert other.open() == [DEBIT]  # now an orphan: adopted
    again = PendingOps(tmp_path, "worker-1")
    assert again.open() == []  # moved, not copied
    again.close()
    other.close()


def test_a_second_process_with_the_same_name_gets_its_own_file(tmp_path: Path) -> None:
    first, second = PendingOps(tmp_path, "main"), PendingOps(tmp_path, "main")
    first.open()
    second.open()
    assert first.path != second.path
    first.close()
    second.close()


def test_an_unreadable_row_is_skipped(tmp_path: Path) -> None:
    q = PendingOps(tmp_path, "main")
    q.open()
    q.add(FREE)
    q.close()
    with sqlite3.connect(tmp_path / "main.sqlite3") as db:
        db.execute("INSERT INTO pending VALUES ('bad', '{not json')")
    q = PendingOps(tmp_path, "main")
    assert q.open() == [FREE]
    q.close()
