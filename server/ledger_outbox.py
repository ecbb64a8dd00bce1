"""Call debits on their way to the ledger: on local disk until the ledger has committed them.

Why an outbox: the counters take a call's debit at once, the ledger a second later in a batch, and a
PostgreSQL ledger can be unreachable for longer. So a settled debit is first written to a local file
(``state_dir/ledger-pending/``, server.pending_ops) before it counts as handed over, removed once the
ledger committed it, and written again at the next start if the process stopped first (SIGTERM during
an outage, a crash, kill -9). Each row carries its settlement's key (``cdr:<call_id>:<leg>``, the
ledger's unique ``call_key``), so a batch written twice (a crash between the ledger's commit and the
outbox's clean-up) is in the ledger once.

One object, built before the two that use it and given to both: Billing hands over the debits it
settles itself (memory counters) and flushes once a second; server.shared_counters hands over the
debits Redis has taken and flushes before a seed (an emptied Redis is seeded with them). Both tell
``reach`` what the ledger answered.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime

import structlog

from rating.ledger import EntryKind, LedgerEntry, LedgerUnavailable
from rating.ledger_store import LedgerAt, open_ledger

from .ledger_reach import LedgerReach
from .pending_ops import Op, OpKind, PendingOps

log = structlog.get_logger("sipcore.billing")


class LedgerOutbox:
    """The call debits not yet in the ledger ``ledger``: in memory, and in ``pending`` (None: memory
    only, a tool or a test)."""

    def __init__(self, ledger: LedgerAt, pending: PendingOps | None) -> None:
        self.ledger = ledger
        self.pending = pending
        self.debits: dict[str, LedgerEntry] = {}  # call_key -> call debit not in the ledger yet
        self.reach = LedgerReach(str(ledger), lambda: len(self.debits))

    async def open(self) -> None:
        """Take back what a previous run of this process (or an orphaned one) left on disk."""
        if self.pending is None:
            return
        for op in await asyncio.to_thread(self.pending.open):
            self.debits[op.id] = _entry(op)
        if self.debits:
            log.info("ledger_outbox_replay", debits=len(self.debits), ledger=str(self.ledger))

    async def close(self) -> None:
        """A last flush; what the ledger does not take stays on disk for the next start."""
        try:
            await self.flush()
        except Exception as exc:
            log.warning("ledger_debits_kept", waiting=len(self.debits), error=str(exc),
                        outbox=str(self.pending.path) if self.pending is not None else None)  # fmt: skip
        if self.pending is not None:
            await asyncio.to_thread(self.pending.close)

    async def hand_over(self, entry: LedgerEntry) -> None:
        """A settled call debit, on local disk before it counts as handed over (never raises: a
        failed write is logged and the debit kept in memory all the same)."""
        assert entry.call_key is not None
        if self.pending is not None:
            try:
                await asyncio.to_thread(self.pending.add, _op(entry))
            except Exception:
                log.exception("ledger_outbox_write_failed", call_key=entry.call_key)
        self.debits[entry.call_key] = entry

    async def taken(self, op: Op) -> None:
        """A call debit Redis has taken (server.shared_counters): the operation is ``<settlement>:d``
        (CallSettlement), the settlement is the ledger's key."""
        await self.hand_over(_entry(replace(op, id=op.id.removesuffix(":d"))))

    async def flush(self) -> None:
        """The call debits waiting, in one transaction (all or none; those the ledger holds already,
        by ``call_key``, are skipped), then out of the outbox. Raises when the ledger cannot take them:
        they stay (memory and disk) for the next flush."""
        if not self.debits:
            return
        batch = list(self.debits.values())

        def write() -> None:
            with open_ledger(self.ledger) as ledger:
                ledger.append_all(batch)

        try:
            await asyncio.to_thread(write)
        except LedgerUnavailable as exc:
            self.reach.failed(exc, "call debits")
            raise
        self.reach.worked()
        keys = [e.call_key for e in batch if e.call_key is not None]
        for key in keys:
            self.debits.pop(key, None)
        if self.pending is not None:
            try:
                await asyncio.to_thread(self.pending.remove, keys)
            except Exception:  # written again at the next start: the ledger skips them (call_key)
                log.exception("ledger_outbox_clear_failed", debits=len(keys))


def _op(entry: LedgerEntry) -> Op:
    """A call debit as an outbox row (server.pending_ops): keyed by its ``call_key``."""
    assert entry.call_key is not None
    return Op(entry.call_key, OpKind.DEBIT, entry.customer_id, "", -entry.amount_micros, entry.at.isoformat(),
              entry.memo)  # fmt: skip


def _entry(op: Op) -> LedgerEntry:
    return LedgerEntry(op.subject, EntryKind.CALL, -op.amount, datetime.fromisoformat(op.at), op.memo,
                       call_key=op.id)  # fmt: skip
