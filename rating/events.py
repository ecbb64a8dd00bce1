"""What the rater answers: authorisation decisions, rated calls, balance events (past tense)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from rating.model import Direction, Pricing, Refusal
from rating.money import from_micros


class Authorisation(NamedTuple):
    """The setup-time answer. `max_seconds` None means unlimited; else the proxy ends the call then.

    An immutable NamedTuple rather than a frozen dataclass: it is built once per call on the
    500k calls/s path, where a frozen dataclass costs ~10x more to construct (measured).

    `route` is an opaque token (the matched tariff entry) the controller may hand back to
    `Rater.rate(..., route=...)` to skip the second prefix lookup.
    """

    allowed: bool
    reason: Refusal | None
    max_seconds: int | None
    route: object | None = None


class CallRated(NamedTuple):
    """A finished call's money, as the CDR stores it. Amounts are exact micro-units.

    Immutable NamedTuple for the same reason as Authorisation (hot-path construction cost);
    `_asdict()` gives the fields for a CDR row.

    price/cost/margin Decimal views are properties so the hot path builds no Decimal.
    `margin` = price - cost, both already rounded (so sums of margins add up).
    """

    direction: Direction
    customer_id: str | None
    account_id: str | None
    package: str | None
    currency: str
    matched_prefix: str | None
    destination_name: str
    category: str
    pricing: Pricing
    billed_seconds: int
    free_minutes_used: int
    cost_micros: int
    price_micros: int

    @property
    def margin_micros(self) -> int:
        return self.price_micros - self.cost_micros

    @property
    def cost(self) -> Decimal:
        return from_micros(self.cost_micros)

    @property
    def price(self) -> Decimal:
        return from_micros(self.price_micros)

    @property
    def margin(self) -> Decimal:
        return from_micros(self.price_micros - self.cost_micros)


@dataclass(frozen=True, slots=True)
class LowBalanceCrossed:
    """A customer's balance went from above its low-balance threshold to at or below it."""

    customer_id: str
    balance: Decimal
    threshold: Decimal
    at: datetime


@dataclass(frozen=True, slots=True)
class CallSettled:
    """A rated call after the counters moved: what was debited and the balance it left."""

    rated: CallRated
    debited_micros: int
    balance_micros: int
