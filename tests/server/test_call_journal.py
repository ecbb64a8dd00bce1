"""The call journal's file (server.call_journal): what a process gets back after a crash, across a
change of worker count, with a torn tail, after compaction; and ``CdrPipeline.wait_durable``, which
the journal waits on before it forgets a call."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from calls.call_ended import CallEnded
from calls.dialog_record import DialogRecord
from calls.model import Destination
from cdr.pipeline import CdrPipeline
from server.call_journal import CallJournal, journal_path, recover_journals
from sipcore.flow import Flow
from sipcore.ownership import owner_of_call_id
from sipcore.waiting import within


def _record(call_id: str, answered: float = 1000.0) -> DialogRecord:
    caller = Destination("udp", "192.0.2.10", 5062, Flow("udp", ("192.0.2.10", 5062), ("192.0.2.1", 5060)))
    callee = Destination(
        "tcp", "192.0.2.20", 5070, Flow("tcp", ("192.0.2.20", 5070), ("192.0.2.1", 5060), "w0-tcp-3")
    )
    return DialogRecord(
        call_id, "ftag", "ttag", "outbound", "demo", "demo/1001", "demo/1001", "+33184000001", "0140000000",
        "+33140000000", None, None, True, answered - 2, answered, answered + 14400, "max_duration", caller,
        callee, "<sip:1001@demo>;tag=ftag", "<sip:1001@192.0.2.10:5062>", 2, "<sip:+33140000000@x>;tag=ttag",
        "<sip:carrier@192.0.2.20:5070>",
    )  # fmt: skip


def _ended(call_id: str, end: float = 1010.0) -> CallEnded:
    return CallEnded(
        call_id, "0", "outbound", "demo", "demo/1001", "demo/1001", "+33184000001", "0140000000", "+33140000000",
        None, None, 998.0, 1000.0, end, "answered", 200, "caller", True,
    )  # fmt: skip


def test_open_ended_and_done_calls_after_a_crash(tmp_path: Path) -> None:
    path = journal_path(tmp_path, 0)
    recover_journals(tmp_path, 1)
    journal = CallJournal(path)
    assert journal.open().open == []
    for call_id in ("open-1", "ended-1", "done-1"):
        journal.answered(_record(call_id))
    journal.ended(_ended("ended-1"))
    journal.ended(_ended("done-1"))
    journal.done("done-1")
    journal.heartbeat(1234.5)
    # no close: the process is killed; the file holds what sync wrote
    assert recover_journals(tmp_path, 1) == (1, 1)
    again = CallJournal(path).open()
    (restored,) = again.open
    # the TCP flow died with the process: the callee is reached at its address again
    tcp = Destination("tcp", "192.0.2.20", 5070, None)
    assert restored == dataclasses.replace(_record("open-1"), alive_until=1234.5, callee_dest=tcp)
    (ended,) = again.ended
    assert ended == _ended("ended-1")
    assert restored.caller_dest == _record("x").caller_dest


def test_a_call_answered_and_ended_unsynced_frames_are_not_lost_by_a_clean_close(tmp_path: Path) -> None:
    recover_journals(tmp_path, 1)
    journal = CallJournal(journal_path(tmp_path, 0))
    journal.open()
    journal.answered(_record("a"))
    assert journal.dirty
    journal.close()
    recover_journals(tmp_path, 1)
    assert [r.call_id for r in CallJournal(journal_path(tmp_path, 0)).open().open] == ["a"]


def test_calls_go_to_the_worker_owning_them_when_the_worker_count_changes(tmp_path: Path) -> None:
    recover_journals(tmp_path, 2)
    ids = [f"call-{i}" for i in range(40)]
    for index in range(2):
        journal = CallJournal(journal_path(tmp_path, index))
        journal.open()
        for call_id in ids:
            if owner_of_call_id(call_id, 2) == index:
                journal.answered(_record(call_id))
        journal.sync()
    assert recover_journals(tmp_path, 3) == (40, 0)
    assert not journal_path(tmp_path, 3).exists()
    for index in range(3):
        got = [r.call_id for r in CallJournal(journal_path(tmp_path, index)).open().open]
        assert sorted(got) == sorted(c for c in ids if owner_of_call_id(c, 3) == index)
    assert recover_journals(tmp_path, 1) == (40, 0)
    assert sorted(p.name for p in tmp_path.glob("calls-*.journal")) == ["calls-0.journal"]
    assert sorted(r.call_id for r in CallJournal(journal_path(tmp_path, 0)).open().open) == sorted(ids)


def test_a_torn_tail_loses_only_the_frame_being_written(tmp_path: Path) -> None:
    path = journal_path(tmp_path, 0)
    recover_journals(tmp_path, 1)
    journal = CallJournal(path)
    journal.open()
    journal.answered(_record("whole"))
    journal.answered(_record("torn"))
    journal.sync()
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # the crash cut the last frame
    recover_journals(tmp_path, 1)
    assert [r.call_id for r in CallJournal(path).open().open] == ["whole"]


def test_compaction_keeps_only_what_is_live(tmp_path: Path) -> None:
    path = journal_path(tmp_path, 0)
    recover_journals(tmp_path, 1)
    journal = CallJournal(path, compact_bytes=20_000)
    journal.open()
    for i in range(200):
        journal.answered(_record(f"c{i}"))
        if i % 10:
            journal.ended(_ended(f"c{i}"))
            journal.done(f"c{i}")
        journal.sync()
    assert path.stat().st_size < 20_000 + 2_000
    recover_journals(tmp_path, 1)
    assert sorted(r.call_id for r in CallJournal(path).open().open) == sorted(
        f"c{i}" for i in range(0, 200, 10)
    )


async def test_wait_durable_returns_once_the_cdr_is_flushed(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from cdr.store_sqlite import SqliteCdrStore
    from tests.cdr.factory import make_record

    store = SqliteCdrStore(tmp_path / "cdr.sqlite3")
    pipeline = CdrPipeline(tmp_path / "spool", store, registry=CollectorRegistry(), flush_interval=0.05)
    await pipeline.start()
    try:
        pipeline.append(make_record(1))
        assert pipeline.spool.buffered
        await within(pipeline.wait_durable(), 5)
        assert not pipeline.spool.buffered
    finally:
        await pipeline.stop()
