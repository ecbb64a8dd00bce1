"""Subprocess for the kill -9 test: spools N CDRs, reports them durable, then drains slowly.

Run as ``python -m tests.cdr.crash_writer SPOOL_DIR DB_PATH N``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from cdr.pipeline import CdrPipeline
from cdr.store_sqlite import SqliteCdrStore
from tests.cdr.factory import make_record


class SlowStore(SqliteCdrStore):
    """Real SQLite writes, slowed so the parent can kill us in the middle of draining."""

    async def write_wire_batch(self, wires: Sequence[list[Any]]) -> int:
        await asyncio.sleep(0.05)
        return await super().write_wire_batch(wires)


async def main(spool: str, db: str, n: int) -> None:
    p = CdrPipeline(spool, SlowStore(db), registry=CollectorRegistry(), batch_size=40)
    await p.start()
    for i in range(n):
        p.append(make_record(i))
    await p.flush()
    print("durable", flush=True)
    await asyncio.sleep(60)  # the parent kills us long before this


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
