"""Bans mirrored into nftables sets, so the kernel drops a banned flooder before it reaches the socket.

Why: a source banned by the guard is dropped by a dict lookup before parsing, but every one of its
datagrams still crosses the socket buffer and the event loop; at full speed the buffer overflows and
the kernel drops the good clients' datagrams with the flooder's. An nftables set with the ``timeout``
flag holds each banned source for its remaining ban time and a rule drops it on input
(docs/security.md gives the rules to install).

The adapter never blocks the loop: ``add`` queues, and one ``nft -f -`` subprocess (asyncio) adds a
batch of elements shortly after. A failure (nft missing, not permitted, no such set) is logged and
counted, never raised: the server goes on dropping banned sources itself.
"""

from __future__ import annotations

import asyncio
import math

import structlog

from sipcore.waiting import within

log = structlog.get_logger("sipcore.guard")

MAX_QUEUED = 4096  # elements waiting for the next nft run (beyond: dropped, counted as failed)
NFT_TIMEOUT = 10.0  # seconds one nft run may take


def nft_script(batch: dict[str, float], set4: str | None, set6: str | None) -> tuple[str, int]:
    """The ``nft -f`` input adding ``batch`` (source key -> seconds) to the sets, and how many
    elements it holds (a family without a configured set is left out)."""
    lines = []
    count = 0
    for target, v6 in ((set4, False), (set6, True)):
        if target is None:
            continue
        items = [f"{key} timeout {max(1, math.ceil(seconds))}s" for key, seconds in batch.items()
                 if (":" in key) == v6]  # fmt: skip
        if items:
            lines.append(f"add element {target} {{ {', '.join(items)} }}")
            count += len(items)
    return "".join(line + "\n" for line in lines), count


class NftBanMirror:
    """Queues banned sources and adds them to the nftables sets in batches (asyncio subprocess)."""

    def __init__(
        self, set4: str | None, set6: str | None = None, nft: str = "nft", delay: float = 0.02
    ) -> None:
        self.set4 = set4
        self.set6 = set6
        self.nft = nft
        self.delay = delay
        self._queue: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self.added = 0
        self.failed = 0

    def add(self, source: str, seconds: float) -> None:
        """Mirror a ban of ``source`` (an address, or an IPv6 network) for ``seconds``; returns at once."""
        queue = self._queue
        if source not in queue and len(queue) >= MAX_QUEUED:
            self.failed += 1
            return
        queue[source] = seconds
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush_soon())

    async def wait_idle(self) -> None:
        """Until every queued element has been handed to nft (tests, shutdown)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _flush_soon(self) -> None:
        try:
            await asyncio.sleep(self.delay)  # gather the bans of one burst into one nft run
            while self._queue:
                batch, self._queue = self._queue, {}
                await self._run(batch)
        finally:
            self._task = None

    async def _run(self, batch: dict[str, float]) -> None:
        script, count = nft_script(batch, self.set4, self.set6)
        if not count:
            return
        try:
            proc = await asyncio.create_subprocess_exec(
                self.nft, "-f", "-",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                _, err = await within(proc.communicate(script.encode()), NFT_TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise
        except (OSError, TimeoutError) as exc:
            self.failed += count
            log.error("nft_ban_failed", elements=count, error=repr(exc))
            return
        if proc.returncode != 0:
            self.failed += count
            log.error("nft_ban_failed", elements=count, error=err.decode(errors="replace").strip()[:500])
            return
        self.added += count
        log.info("nft_ban_mirrored", elements=count, sources=list(batch)[:20])
