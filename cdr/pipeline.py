"""CdrPipeline: the server's one handle on CDRs — spool append on the call path, flusher and writer
tasks in the background.

``append()`` is synchronous and cheap (msgpack + an in-memory list); a CDR is durable after the next
periodic flush (every ``flush_interval`` s, default 20 ms) or an explicit ``await flush()``.
"""

from __future__ import annotations

import asyncio
import os

import structlog
from prometheus_client import CollectorRegistry

from cdr.metrics import CdrMetrics
from cdr.record import CdrRecord
from cdr.spool import Spool
from cdr.store import CdrStore
from cdr.writer import CdrWriter
from sipcore.waiting import cancel_and_wait, within

log = structlog.get_logger("sipcore.cdr.pipeline")


class CdrPipeline:
    def __init__(
        self,
        spool_dir: str | os.PathLike[str],
        store: CdrStore,
        *,
        registry: CollectorRegistry | None = None,
        metrics: CdrMetrics | None = None,
        flush_interval: float = 0.02,  # not money: seconds
        batch_size: int = 5000,
        segment_bytes: int = 32 << 20,
        retry_max: float = 5.0,  # not money: seconds
    ) -> None:
        self.metrics = metrics or CdrMetrics(registry)
        self.spool = Spool(spool_dir, segment_bytes=segment_bytes, metrics=self.metrics)
        self.store = store
        self.writer = CdrWriter(
            self.spool, store, metrics=self.metrics, batch_size=batch_size, retry_max=retry_max
        )
        self.flush_interval = flush_interval
        self._flusher: asyncio.Task[None] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._waiting: list[asyncio.Future[None]] = []  # wait_durable callers, for the next flush

    async def start(self) -> None:
        """Open the spool (replaying what a previous run left) and start the background tasks.

        Never waits for the database: the writer connects (and retries) in the background.
        """
        await asyncio.to_thread(self.spool.open)
        self._flusher = asyncio.create_task(self._flush_loop(), name="cdr-flusher")
        self._writer_task = asyncio.create_task(self.writer.run(), name="cdr-writer")

    def append(self, record: CdrRecord) -> None:
        """Call path: hand over a finished call's CDR. Sync, no I/O; durable after the next flush."""
        self.spool.append(record)

    async def wait_durable(self) -> None:
        """Return once every CDR appended before this call is durable: after the next periodic flush
        (no flush of its own: a caller per call costs one shared fsync, not one each). Raises the
        flush's OSError when the disk refused it."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        await waiter

    async def flush(self) -> None:
        """Make every CDR appended so far durable (fsync'd in the spool).

        Always goes through Spool.flush, whose lock also waits for a flush still running in a
        worker thread (e.g. one whose awaiting task was cancelled by stop()).
        """
        await self._flush(skip_if_empty=False)

    async def _flush(self, *, skip_if_empty: bool) -> None:
        async with self._flush_lock:
            # appended before this point: in the buffer now, or durable by an earlier flush
            waiting, self._waiting = self._waiting, []
            try:
                if not (skip_if_empty and not self.spool.buffered) and await asyncio.to_thread(
                    self.spool.flush
                ):
                    self.writer.wake()
            except OSError as exc:
                for waiter in waiting:
                    if not waiter.done():
                        waiter.set_exception(exc)
                raise
            for waiter in waiting:
                if not waiter.done():
                    waiter.set_result(None)

    async def stop(self, timeout: float = 10.0) -> bool:  # not money: seconds
        """Flush, let the writer store what it can within `timeout`, close. True if fully drained.

        Whatever is not stored stays in the spool and is replayed by the next start().
        """
        if self._flusher is not None:
            await cancel_and_wait(self._flusher)
            self._flusher = None
        await self.flush()
        drained = True
        if self._writer_task is not None:
            self.writer.request_stop()
            try:
                await within(asyncio.shield(self._writer_task), timeout)
            except TimeoutError:
                if self._writer_task.done():  # it ended as the deadline passed: drained, or its error
                    self._writer_task.result()
                else:
                    drained = False
                    await cancel_and_wait(self._writer_task)
                    log.warning("cdr_stop_not_drained", backlog_bytes=self.spool.backlog_bytes())
            self._writer_task = None
        await asyncio.to_thread(self.spool.close)
        await self.store.close()
        return drained

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self._flush(skip_if_empty=True)
            except OSError as exc:  # disk trouble: frames stay buffered, try again next tick
                log.error("cdr_spool_flush_failed", error=repr(exc))
