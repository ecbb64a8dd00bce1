"""Issue 20: a PostgreSQL outage is logged as one structured JSON line per retry of the CDR writer,
never as the driver's multi-line traceback (asyncpg's own reconnect loop used to log one per
attempt), while the spool holds the CDRs and drains them once the database is back."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from prometheus_client import CollectorRegistry

from cdr.metrics import CdrMetrics
from cdr.pipeline import CdrPipeline
from server.logs import configure_logging
from tests.cdr.conftest import pg_store
from tests.cdr.factory import make_record
from tests.cdr.helpers import TcpProxy, wait_until


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The production JSON log (server.logs' processors), written to a buffer; uncached, so no logger
    keeps that buffer after the test."""
    out = io.StringIO()
    configure_logging("json", "info")
    structlog.configure(
        logger_factory=structlog.WriteLoggerFactory(file=out), cache_logger_on_first_use=False
    )
    yield out
    structlog.reset_defaults()


def _retries(m: CdrMetrics) -> float:
    return m.retries._value.get()


async def test_postgres_outage_logs_one_line_per_retry(
    tmp_path: Path, pg_schema: str, json_log: io.StringIO, capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    await proxy.cut()  # a closed port from the start
    store = pg_store(pg_schema, f"postgresql://postgres@127.0.0.1:{proxy.port}/test")
    m = CdrMetrics(CollectorRegistry())
    p = CdrPipeline(tmp_path / "spool", store, metrics=m, batch_size=100, retry_max=0.1)
    direct = pg_store(pg_schema)
    try:
        await p.start()
        for i in range(50):
            p.append(make_record(i))
        await wait_until(lambda: _at_least(_retries(m), 3))
        await proxy.start()
        await wait_until(lambda: _stored(direct, 50), timeout=20)

        before = _retries(m)
        await proxy.cut()  # the live connections drop mid-run (asyncpg reconnects after 1 s, then 2 s…)
        for i in range(50, 120):
            p.append(make_record(i))
        await wait_until(lambda: _at_least(_retries(m), before + 3))
        await asyncio.sleep(1.5)  # long enough for asyncpg's own reconnect loop to have tried (at 1 s)
        await proxy.start()
        await wait_until(lambda: _stored(direct, 120), timeout=20)
        assert await p.stop(timeout=20)
    finally:
        await direct.close()
        await proxy.cut()

    log = json_log.getvalue()
    assert "Traceback" not in log and "Traceback" not in capfd.readouterr().err
    assert "Traceback" not in caplog.text  # asyncpg's own logger (stdlib logging)
    assert not [r for r in caplog.records if r.exc_info]
    events = [json.loads(line) for line in log.splitlines()]  # every line is one whole event
    retries = [e for e in events if e["event"] == "cdr_store_retry"]
    assert len(retries) == _retries(m) >= 6  # exactly one line per retry
    for e in retries:
        assert e["store"] == "postgresql" and e["op"] in ("open", "write")
        assert e["error"] and e["message"] and e["attempt"] >= 1 and 0 < e["retry_in"] <= 0.1
    assert {e["op"] for e in retries} == {"open", "write"}


async def _at_least(value: float, floor: float) -> bool:
    return value >= floor


async def _stored(store: object, n: int) -> bool:
    """The database holds ``n`` CDRs (read directly, not through the cut proxy)."""
    try:
        if store._pool is None:  # type: ignore[attr-defined]
            await store.open()  # type: ignore[attr-defined]
        return await store.count() == n  # type: ignore[attr-defined]
    except Exception:
        return False
