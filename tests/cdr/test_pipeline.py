"""CdrPipeline end to end: nothing lost through store outages and restarts, nothing duplicated."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from cdr.metrics import CdrMetrics
from cdr.pipeline import CdrPipeline
from cdr.store_sqlite import SqliteCdrStore
from tests.cdr.conftest import pg_store
from tests.cdr.factory import make_record
from tests.cdr.helpers import FailingSqliteStore, TcpProxy, wait_until


def counter(m: CdrMetrics, name: str) -> float:
    return getattr(m, name)._value.get()


async def test_append_then_stop_stores_everything(tmp_path: Path) -> None:
    reg = CollectorRegistry()
    p = CdrPipeline(
        tmp_path / "spool", SqliteCdrStore(tmp_path / "cdr.sqlite3"), registry=reg, batch_size=300
    )
    await p.start()
    for i in range(1000):
        p.append(make_record(i))
    assert await p.stop(timeout=20)
    check = SqliteCdrStore(tmp_path / "cdr.sqlite3")
    await check.open()
    assert await check.count() == 1000
    await check.close()
    assert reg.get_sample_value("sipcore_cdr_spooled_total") == 1000
    assert reg.get_sample_value("sipcore_cdr_written_total") == 1000
    assert reg.get_sample_value("sipcore_cdr_spool_backlog_bytes") == 0
    assert reg.get_sample_value("sipcore_cdr_spool_buffered") == 0


async def test_records_flow_while_running_and_flush_makes_them_durable(tmp_path: Path) -> None:
    store = SqliteCdrStore(tmp_path / "cdr.sqlite3")
    p = CdrPipeline(tmp_path / "spool", store, registry=CollectorRegistry())
    await p.start()
    p.append(make_record(1))
    await p.flush()
    assert p.spool.buffered == 0 and p.spool.backlog_bytes() > 0  # durable, not yet necessarily stored
    await wait_until(lambda: _count(store, 1))
    await wait_until(_zero(p))
    await p.stop()


def _zero(p: CdrPipeline):  # type: ignore[no-untyped-def]
    async def cond() -> bool:
        return p.spool.backlog_bytes() == 0

    return cond


async def _count(store: SqliteCdrStore | object, n: int) -> bool:
    try:
        return await store.count() == n  # type: ignore[attr-defined]
    except Exception:
        return False


async def test_failing_store_is_retried_until_it_recovers(tmp_path: Path) -> None:
    store = FailingSqliteStore(str(tmp_path / "cdr.sqlite3"), fail_next=4)
    m = CdrMetrics(CollectorRegistry())
    p = CdrPipeline(tmp_path / "spool", store, metrics=m, batch_size=100)
    p.writer.retry_min = 0.01
    await p.start()
    for i in range(450):
        p.append(make_record(i))
    await wait_until(lambda: _ge(counter(m, "written"), 450))
    assert await store.count() == 450
    assert counter(m, "retries") == 4 and counter(m, "written") == 450
    await p.stop()


async def test_stop_while_store_down_keeps_cdrs_for_next_start(tmp_path: Path) -> None:
    down = FailingSqliteStore(str(tmp_path / "cdr.sqlite3"), fail_next=10**9)
    p = CdrPipeline(tmp_path / "spool", down, registry=CollectorRegistry())
    await p.start()
    for i in range(200):
        p.append(make_record(i))
    assert not await p.stop(timeout=0.3)  # could not drain: the CDRs stay in the spool

    store = SqliteCdrStore(tmp_path / "cdr.sqlite3")
    p2 = CdrPipeline(tmp_path / "spool", store, registry=CollectorRegistry())
    await p2.start()
    for i in range(200, 250):
        p2.append(make_record(i))
    assert await p2.stop(timeout=20)
    check = SqliteCdrStore(tmp_path / "cdr.sqlite3")
    await check.open()
    assert await check.count() == 250
    await check.close()


async def test_postgres_unreachable_for_a_while_loses_nothing(tmp_path: Path, pg_schema: str) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    await proxy.cut()  # the database is unreachable from the very start
    store = pg_store(pg_schema, f"postgresql://postgres@127.0.0.1:{proxy.port}/test")
    m = CdrMetrics(CollectorRegistry())
    p = CdrPipeline(tmp_path / "spool", store, metrics=m, batch_size=100, retry_max=0.1)
    await p.start()  # does not wait for the database
    for i in range(300):
        p.append(make_record(i))

    async def retried() -> bool:
        return counter(m, "retries") >= 2

    await wait_until(retried)
    await proxy.start()
    direct = pg_store(pg_schema)

    async def stored(n: int) -> bool:
        try:
            if direct._pool is None:
                await direct.open()
            return await direct.count() == n
        except Exception:
            return False

    await wait_until(lambda: stored(300), timeout=20)

    # A second outage while running: live connections are dropped mid-flight.
    retries_before = counter(m, "retries")
    await proxy.cut()
    for i in range(300, 700):
        p.append(make_record(i))
    await wait_until(lambda: _ge(counter(m, "retries"), retries_before + 1))
    await proxy.start()
    await wait_until(lambda: stored(700), timeout=20)
    assert await p.stop(timeout=20)
    rows = await direct.calls(make_record(0).start, make_record(699).start.replace(year=2027))
    assert len({r.key for r in rows}) == 700
    # A commit whose reply was cut is replayed and ignored: "written" counts only new rows.
    assert 0 < counter(m, "written") <= 700 and p.writer.acked_records >= 700
    await direct.close()
    await proxy.cut()


async def _ge(a: float, b: float) -> bool:
    return a >= b


async def test_undecodable_frame_is_set_aside_and_does_not_block(tmp_path: Path) -> None:
    import msgpack

    store = SqliteCdrStore(tmp_path / "cdr.sqlite3")
    m = CdrMetrics(CollectorRegistry())
    p = CdrPipeline(tmp_path / "spool", store, metrics=m)
    await p.start()
    p.append(make_record(1))
    p.spool.append_payload(msgpack.packb([99, "from a future version"]))
    p.append(make_record(2))
    assert await p.stop(timeout=20)
    check = SqliteCdrStore(tmp_path / "cdr.sqlite3")
    await check.open()
    assert await check.count() == 2
    await check.close()
    assert (tmp_path / "spool" / "rejected.frames").stat().st_size > 0
    assert counter(m, "bad_frames") == 1


async def test_stop_right_after_start_still_stores_everything(tmp_path: Path) -> None:
    """Regression: stop() while the writer is still opening the store must not end it early.

    The writer read (nothing yet) while stop() was flushing, then saw the stop flag and quit,
    reporting a full drain with every CDR still in the spool.
    """
    for run in range(5):
        store = SqliteCdrStore(tmp_path / f"cdr{run}.sqlite3")
        await store.open()
        await store.migrate()
        p = CdrPipeline(tmp_path / f"spool{run}", store, registry=CollectorRegistry())
        await p.start()
        for i in range(500):
            p.append(make_record(i))
        assert await p.stop(timeout=20)
        assert p.writer.written == 500, f"run {run}"
