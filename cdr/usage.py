"""`Usage`, the aggregated rows every CDR store computes and the reports render.

Why a module of its own: the backends (store_sqlite, store_postgres) build these rows and
`cdr.store` picks a backend, so the shared types live below both and nothing imports in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

UsageBy = Literal["month", "account", "number"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Aggregated CDRs of one group (a month, an account or a called number) of one customer."""

    customer_id: str
    customer_ref: str
    internal: bool
    currency: str
    calls: int
    answered: int
    duration: int
    billed_seconds: int
    free_minutes: int
    cost: Decimal
    price: Decimal
    margin: Decimal
    month: str | None = None  # "YYYY-MM" when by="month"
    account_id: str | None = None  # when by="account"
    number: str | None = None  # normalised called number when by="number"
