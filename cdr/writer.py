"""Background writer: drains durable spool frames into a CdrStore in batches, acking after commit.

A failed write (database down, network cut) keeps the batch in memory and retries it with capped
exponential backoff; nothing is acknowledged until the store has committed it, and the store ignores
keys it already holds, so a crash between commit and ack only causes a harmless replay.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgpack
import structlog

from cdr.metrics import CdrMetrics
from cdr.record import check_wire
from cdr.spool import Spool, SpoolBatch
from cdr.store import CdrStore
from sipcore.waiting import wait_set

log = structlog.get_logger("sipcore.cdr.writer")


class CdrWriter:
    def __init__(
        self,
        spool: Spool,
        store: CdrStore,
        *,
        metrics: CdrMetrics | None = None,
        batch_size: int = 5000,
        idle_poll: float = 0.2,  # not money: seconds
        linger: float = 0.25,  # not money: seconds
        retry_min: float = 0.05,  # not money: seconds
        retry_max: float = 5.0,  # not money: seconds
    ) -> None:
        self.spool = spool
        self.store = store
        self.store_kind: str = getattr(store, "kind", type(store).__name__)  # named in the retry events
        self.metrics = metrics
        self.batch_size = batch_size
        self.idle_poll = idle_poll
        # After a batch smaller than batch_size, wait this long before the next read so that a steady
        # trickle of calls is stored in a few large transactions per second rather than one small one
        # per spool flush (each costs thread hand-offs and two fsyncs). CDRs are already durable in the
        # spool; this only delays their arrival in the database.
        self.linger = linger
        self._stop_event = asyncio.Event()
        self.retry_min = retry_min
        self.retry_max = retry_max
        self._wake = asyncio.Event()
        self._stopping = False
        self.opened = asyncio.Event()  # the store is open and migrated (readers may query it)
        self.written = 0  # new rows stored by this writer
        self.acked_records = 0  # records acknowledged (new or already stored)

    def wake(self) -> None:
        """New durable frames are waiting (called by the flusher)."""
        self._wake.set()

    def request_stop(self) -> None:
        """Finish once every durable frame is stored."""
        self._stopping = True
        self._wake.set()
        self._stop_event.set()

    async def run(self) -> None:
        await self._retry("open", self._open_store)
        self.opened.set()
        prefetch: asyncio.Future[SpoolBatch] | None = None
        prefetch_stopping = False
        try:
            while True:
                if prefetch is None:
                    stopping, batch = await self._read()
                else:
                    stopping, batch = prefetch_stopping, await prefetch
                    prefetch = None
                if not batch.payloads:
                    if batch.end != self.spool.acked:
                        await asyncio.to_thread(self.spool.ack, batch.end)
                    if stopping:
                        return
                    await wait_set(self._wake, self.idle_poll)
                    continue
                records = self._decode(batch)
                full = len(batch.payloads) >= self.batch_size
                if full:
                    # A backlog: read the next batch while this one is stored (one reader: order kept).
                    self._wake.clear()
                    prefetch_stopping = self._stopping
                    prefetch = asyncio.ensure_future(
                        asyncio.to_thread(self.spool.read_batch, self.batch_size)
                    )
                new = await self._retry("write", lambda recs=records: self._timed_write(recs))
                await asyncio.to_thread(self.spool.ack, batch.end)
                self.written += new
                self.acked_records += len(records)
                if self.metrics is not None:
                    self.metrics.written.inc(new)
                if not full and not self._stopping and self.linger > 0:
                    await wait_set(self._stop_event, self.linger)
        finally:
            if prefetch is not None:
                prefetch.cancel()

    async def _read(self) -> tuple[bool, SpoolBatch]:
        """Read a batch; also say whether stop was requested *before* the read began.

        stop() sets the flag after its final flush, so only a read that began after that has seen
        every CDR: an empty read may end the writer only then. The wake event is cleared first so
        that a wake() during the read is not missed.
        """
        self._wake.clear()
        stopping = self._stopping
        return stopping, await asyncio.to_thread(self.spool.read_batch, self.batch_size)

    async def _open_store(self) -> None:
        await self.store.open()
        await self.store.migrate()

    async def _timed_write(self, records: list[list[Any]]) -> int:
        started = time.perf_counter()
        new = await self.store.write_wire_batch(records)
        if self.metrics is not None:
            self.metrics.write_seconds.observe(time.perf_counter() - started)
        return new

    async def _retry(self, what: str, op):  # type: ignore[no-untyped-def]
        """Run ``op`` until it succeeds; each failure is one structured event (no traceback: an outage
        retried every few seconds must not flood the log with the driver's stack)."""
        delay = self.retry_min
        attempt = 0
        while True:
            try:
                return await op()
            except Exception as exc:
                attempt += 1
                if self.metrics is not None:
                    self.metrics.retries.inc()
                    self.metrics.store_errors.inc()
                log.warning("cdr_store_retry", store=self.store_kind, op=what, error=type(exc).__name__,
                            message=str(exc), attempt=attempt, retry_in=delay)  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)

    def _decode(self, batch: SpoolBatch) -> list[list[Any]]:
        out: list[list[Any]] = []
        unpackb = msgpack.unpackb
        for payload in batch.payloads:
            try:
                out.append(check_wire(unpackb(payload)))
            except Exception as exc:  # CRC-valid but unreadable: keep it aside, never block the rest
                self.spool.reject(payload, reason=repr(exc))
        return out
