"""Memory backend specifics: the expiry sweep, the SQLite state file (write-behind, restart) and the
memory footprint per binding."""

from __future__ import annotations

import asyncio
import inspect
import os
import sqlite3
import tracemalloc
from pathlib import Path

import pytest

from registrar.location import (
    BindingExpired,
    ContactChange,
    Flow,
    MemoryLocationStore,
    RegisterChanges,
    binding,
)
from sipcore.waiting import within

T0 = 1_700_000_000.0
UDP = Flow("udp", "198.51.100.7", 5060, "203.0.113.5:5060")


def reg(call_id: str, cseq: int, uri: str, expires: int = 3600, flow: Flow = UDP, **kw) -> RegisterChanges:
    return RegisterChanges(call_id, cseq, flow, (ContactChange(uri, expires, **kw),), user_agent="baresip")


def rows(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as db:
        return sorted(db.execute("SELECT aor, key FROM location_bindings"))


# -- sweep --------------------------------------------------------------------------------------------


def test_sweep_returns_what_expired_and_nothing_else() -> None:
    s = MemoryLocationStore()
    s.register("sip:a@x", reg("1", 1, "sip:a@10.0.0.1", 60), T0)
    s.register("sip:a@x", reg("1", 2, "sip:a@10.0.0.2", 120), T0)
    s.register("sip:b@x", reg("2", 1, "sip:b@10.0.0.3", 30), T0)
    assert s.next_expiry() == T0 + 30
    assert s.sweep(T0 + 29) == []
    assert [b.contact for b in s.sweep(T0 + 60)] == ["sip:b@10.0.0.3", "sip:a@10.0.0.1"]
    assert s.aor_count() == 1 and s.contact_count() == 1
    assert [b.contact for b in s.sweep(T0 + 1000)] == ["sip:a@10.0.0.2"]
    assert s.aor_count() == 0 and s.contact_count() == 0 and s.sweep(T0 + 5000) == []


def test_sweep_after_a_refresh_does_not_expire_the_refreshed_binding() -> None:
    s = MemoryLocationStore()
    s.register("sip:a@x", reg("1", 1, "sip:a@10.0.0.1", 60), T0)
    s.register("sip:a@x", reg("1", 2, "sip:a@10.0.0.1", 60), T0 + 50)  # now expires at T0+110
    assert s.sweep(T0 + 60) == []  # the stale heap entry pops harmlessly and reschedules
    assert s.next_expiry() == T0 + 110
    assert len(s.sweep(T0 + 110)) == 1


def test_sweep_cost_follows_what_expired_not_the_store_size() -> None:
    s = MemoryLocationStore()
    for i in range(2000):
        s.register(f"sip:{i}@x", reg(str(i), 1, f"sip:{i}@10.0.0.1", 3600 if i % 100 else 10), T0)
    assert len(s.sweep(T0 + 10)) == 20
    assert len(s._heap) == 1980  # only the survivors remain scheduled


# -- state file ---------------------------------------------------------------------------------------


async def test_restart_restores_bindings_and_drops_the_expired(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    s = MemoryLocationStore(path)
    s.register("sip:a@x", reg("1", 1, "sip:a@10.0.0.1;x=1?H=v%20w", 60), T0)
    s.register("sip:b@x", reg("2", 1, "sip:b@10.0.0.2", 3600), T0)
    await s.close()

    s2 = MemoryLocationStore(path)
    assert s2.load(T0 + 10) == 2
    [a] = s2.lookup("sip:a@x", T0 + 10)
    assert (a.contact, a.cseq, a.user_agent, a.flow) == ("sip:a@10.0.0.1;x=1?H=v%20w", 1, "baresip", UDP)
    await s2.close()

    s3 = MemoryLocationStore(path)  # restarted after a's expiry: only b comes back, a's row is deleted
    assert s3.load(T0 + 61) == 1
    assert s3.lookup("sip:a@x", T0 + 61) == [] and len(s3.lookup("sip:b@x", T0 + 61)) == 1
    assert [aor for aor, _ in rows(path)] == ["sip:b@x"]  # a's expired row is gone
    # the restored store goes on applying the CSeq rule from what it loaded
    s3.register("sip:b@x", reg("2", 2, "sip:b@10.0.0.2", 3600), T0 + 62)
    await s3.close()


async def test_restart_treats_tcp_flows_as_closed(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    s = MemoryLocationStore(path)
    conn = Flow("tcp", "198.51.100.8", 40000, "203.0.113.5:5070", "h/1/1")
    s.register("sip:a@x", reg("1", 1, "sip:a@10.0.0.1;transport=tcp", flow=conn), T0)
    s.register(
        "sip:a@x", reg("2", 1, "sip:ob@10.0.0.1;transport=tcp", flow=conn, instance="<urn:1>", reg_id=1), T0
    )
    await s.close()
    s2 = MemoryLocationStore(path)
    s2.load(T0 + 1)
    [b] = s2.lookup("sip:a@x", T0 + 1)
    assert b.contact == "sip:a@10.0.0.1;transport=tcp" and not b.flow_alive
    await s2.close()
    assert len(rows(path)) == 1


async def test_register_does_not_touch_the_disk_flush_does(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    s = MemoryLocationStore(path)
    s.register("sip:a@x", reg("1", 1, "sip:a@10.0.0.1"), T0)
    s.register("sip:b@x", reg("2", 1, "sip:b@10.0.0.1"), T0)
    assert rows(path) == [] and s.dirty_count == 2
    assert await s.flush() == 2
    assert len(rows(path)) == 2 and s.dirty_count == 0
    s.register("sip:a@x", reg("1", 2, "sip:a@10.0.0.1", 0), T0 + 1)
    assert await s.flush() == 1
    assert [r[0] for r in rows(path)] == ["sip:b@x"]
    await s.close()


async def test_write_behind_flushes_once_the_batch_is_full(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    s = MemoryLocationStore(path, flush_interval=3600, flush_batch=3)  # only the batch can trigger it
    s.start()
    try:
        await asyncio.sleep(0)  # let the task arm its wake-up event
        for i in range(3):
            s.register(f"sip:{i}@x", reg(str(i), 1, f"sip:{i}@10.0.0.1"), T0)

        async def flushed() -> None:
            while len(rows(path)) < 3:
                await asyncio.sleep(0.01)

        await within(flushed(), 5)
        assert s.dirty_count == 0
    finally:
        await s.close()


async def test_close_ends_the_write_behind_woken_in_the_same_iteration(tmp_path: Path) -> None:
    """A REGISTER filling the batch as the server stops: the wake-up and the close's cancellation
    cross (with 3.11's wait_for the cancellation was dropped and close waited for ever)."""
    path = tmp_path / "state.sqlite"
    s = MemoryLocationStore(path, flush_interval=3600, flush_batch=1)
    s.start()
    await asyncio.sleep(0)  # let the task arm its wake-up event
    s.register("sip:a@x", reg("1", 1, "sip:a@10.0.0.1"), T0)  # sets the wake-up, no await after it
    closing = asyncio.ensure_future(s.close())
    await asyncio.wait({closing}, timeout=5)  # not within(): close would swallow that cancellation too
    assert closing.done(), "the write-behind ran on: close waits for it"
    assert [r[0] for r in rows(path)] == ["sip:a@x"]  # close's own flush stored it


async def test_write_behind_flushes_on_its_interval(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    s = MemoryLocationStore(path, flush_interval=0.02, flush_batch=10_000)
    s.start()
    try:
        s.register("sip:a@x", reg("1", 1, "sip:a@10.0.0.1"), T0)

        async def flushed() -> None:
            while not rows(path):
                await asyncio.sleep(0.01)

        await within(flushed(), 5)
    finally:
        await s.close()


def test_flush_now_without_a_loop(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    s = MemoryLocationStore(path)
    s.register("sip:a@x", reg("1", 1, "sip:a@10.0.0.1"), T0)
    assert s.flush_now() == 1 and len(rows(path)) == 1


# -- footprint ----------------------------------------------------------------------------------------


def _footprint_per_binding(n: int) -> float:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        s = MemoryLocationStore()
        for i in range(n):
            ip = f"198.51.{i // 250 % 250}.{i % 250}"
            flow = (
                Flow("udp", ip, 1024 + i % 60000, "203.0.113.5:5060")
                if i % 3
                else Flow("tcp", ip, 1024 + i % 60000, "203.0.113.5:5070", f"h1/{i}")
            )
            ch = RegisterChanges(
                f"{i:08x}-5c1e-4d2a-9b7f@{ip}",
                1,
                flow,
                (
                    ContactChange(
                        f"sip:{1000 + i}@{ip}:{1024 + i % 60000};transport={flow.transport};line=ab{i}", 3600
                    ),
                ),
                user_agent="Yealink SIP-T46U 66.86.0.15",
            )
            s.register(f"sip:{1000 + i}@customer{i % 500}.example", ch, T0)
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert s.contact_count() == n
    # The process-wide table of interned strings grows by doubling: a resize during the loop would be
    # billed whole to these bindings (measured 815 to 1,160 bytes/binding depending on what earlier
    # tests interned). Allocations made on binding.py's sys.intern lines are only that table's.
    interning = [i for i, line in enumerate(inspect.getsourcelines(Flow)[0]) if "sys.intern" in line]
    first = inspect.getsourcelines(Flow)[1]
    lines = {first + i for i in interning}
    used = sum(
        t.size
        for t in snapshot.traces
        if not (t.traceback[0].filename == binding.__file__ and t.traceback[0].lineno in lines)
    )
    return (used - base) / n


def test_footprint_stays_under_one_kilobyte_per_binding() -> None:
    # Measured in a forked child: tracemalloc counts every thread's allocations, and threads left by
    # earlier tests (event loops, writers) would be billed to the store. Only this thread survives fork.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.write(write, repr(_footprint_per_binding(5_000)).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and text, "the measuring child failed"
    per_binding = float(text)
    assert per_binding < 1024, f"{per_binding:.0f} bytes per binding"


async def test_sweeper_task_reports_expiry_events() -> None:
    s = MemoryLocationStore()
    s.register("sip:a@x", reg("1", 1, "sip:a@10.0.0.1", 60), T0)
    s.register("sip:b@x", reg("2", 1, "sip:b@10.0.0.1", 3600), T0)
    got: list = []
    done = asyncio.Event()

    def on_expired(events: list) -> None:
        got.extend(events)
        done.set()

    task = asyncio.create_task(s.run_sweeper(on_expired, clock=lambda: T0 + 61, max_wait=0.01))
    try:
        await within(done.wait(), 5)
    finally:
        task.cancel()
    assert [e.binding.contact for e in got] == ["sip:a@10.0.0.1"] and isinstance(got[0], BindingExpired)
    assert s.contact_count() == 1


async def test_a_failed_flush_keeps_the_aors_dirty(tmp_path: Path) -> None:
    s = MemoryLocationStore(tmp_path / "state.sqlite")
    s.register("sip:a@x", reg("1", 1, "sip:a@10.0.0.1"), T0)
    s._state._db.close()  # the disk went away under us
    with pytest.raises(sqlite3.ProgrammingError):
        await s.flush()
    assert s.dirty_count == 1
