"""Whether this process reaches the ledger (a PostgreSQL ledger can be down while the host serves).

Why one object: the call-debit flush (server.billing), the billing run and the seed of the shared
counters (server.shared_counters) each meet an outage on their own, every second or so; an operator
wants one warning when it starts, one line when it ends (with how long it lasted and what waited),
and one gauge to alert on, not a log line per attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from prometheus_client import Gauge

log = structlog.get_logger("sipcore.billing")

LEDGER_UP = Gauge("sipcore_ledger_up", "1 while this process reaches the balance ledger (0: an outage)")
LEDGER_WAITING = Gauge(
    "sipcore_ledger_pending_debits", "Call debits settled, kept on local disk, not yet in the ledger"
)


class LedgerReach:
    """Up or down, from what the last piece of ledger work met; ``waiting`` counts what is held back."""

    def __init__(self, where: str, waiting: Callable[[], int] = lambda: 0) -> None:
        self.where = where  # the ledger, as messages name it (no password)
        self.waiting = waiting
        self.up = True
        self._since = 0.0
        LEDGER_UP.set(1)
        LEDGER_WAITING.set_function(waiting)

    def failed(self, exc: BaseException, doing: str) -> None:
        """A piece of ledger work (``doing``) could not reach it: logged at the outage's start only."""
        if self.up:
            self._since = time.monotonic()
            log.warning("ledger_unreachable", ledger=self.where, doing=doing, error=str(exc),
                        waiting=self.waiting())  # fmt: skip
        self.up = False
        LEDGER_UP.set(0)

    def worked(self) -> None:
        """A piece of ledger work went through: the end of an outage, if there was one."""
        if not self.up:
            log.info("ledger_reachable", ledger=self.where, seconds=round(time.monotonic() - self._since, 1),
                     waiting=self.waiting())  # fmt: skip
        self.up = True
        LEDGER_UP.set(1)
