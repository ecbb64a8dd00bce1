"""The CDR: one immutable record per call leg, as the rater hands it over when a call ends.

Money fields are normalised to 6-decimal Decimals (see cdr.money); times must be timezone-aware and
are kept in UTC. The idempotency key is (call_id, leg): writing the same key twice stores it once,
which is what makes spool replay after a crash safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from cdr.money import from_micros, to_money

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


class Direction(StrEnum):
    OUTBOUND = "outbound"
    INBOUND = "inbound"
    INTERNAL = "internal"
    FORWARDED = "forwarded"


class Disposition(StrEnum):
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REFUSED = "refused"


def to_epoch_us(dt: datetime) -> int:
    """Exact integer microseconds since the Unix epoch of an aware datetime."""
    return (dt - EPOCH) // _US


def from_epoch_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def _utc(name: str, dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {dt!r}")
    return dt.astimezone(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class CdrRecord:
    """One call leg's detail record (DOMAIN.md "Each call ends as a CDR")."""

    call_id: str
    leg: int
    customer_id: str
    customer_ref: str
    internal: bool
    direction: Direction
    caller: str
    dialed: str
    normalised: str
    start: datetime
    end: datetime
    duration: int
    billed_seconds: int
    disposition: Disposition
    sip_status: int
    cost: Decimal
    price: Decimal
    currency: str
    account_id: str | None = None
    prefix: str | None = None
    destination: str | None = None
    answer: datetime | None = None
    free_minutes: int = 0
    package: str | None = None
    # caller | callee | system (cut-off, shutdown, operator) | orphan (across a crash, end estimated); None: unknown
    hangup_by: str | None = None
    margin: Decimal | None = None  # None: computed as price - cost

    def __post_init__(self) -> None:
        put = object.__setattr__
        if not self.call_id:
            raise ValueError("call_id is required")
        put(self, "direction", Direction(self.direction))
        put(self, "disposition", Disposition(self.disposition))
        for name in ("start", "end", "answer"):
            put(self, name, _utc(name, getattr(self, name)))
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        if self.duration < 0 or self.billed_seconds < 0 or self.free_minutes < 0:
            raise ValueError("duration, billed_seconds and free_minutes must be >= 0")
        cost, price = to_money(self.cost), to_money(self.price)
        put(self, "cost", cost)
        put(self, "price", price)
        if self.margin is None:
            put(self, "margin", price - cost)
        else:
            margin = to_money(self.margin)
            if margin != price - cost:
                raise ValueError(f"margin {margin} != price {price} - cost {cost}")
            put(self, "margin", margin)

    @property
    def key(self) -> tuple[str, int]:
        """Idempotency key: the call's unique id and the leg number."""
        return (self.call_id, self.leg)


ROW_FIELDS = (
    "call_id", "leg", "customer_id", "customer_ref", "internal", "account_id", "direction", "caller",
    "dialed", "normalised", "prefix", "destination", "start", "answer", "end", "duration",
    "billed_seconds", "disposition", "sip_status", "cost", "price", "margin", "currency",
    "free_minutes", "package", "hangup_by",
)  # fmt: skip
"""Field order of a stored row, as every store selects its columns."""


def record_from_row(row: Sequence[Any]) -> CdrRecord:
    """A CdrRecord from a stored row in ROW_FIELDS order, values already converted by the store."""
    return CdrRecord(**dict(zip(ROW_FIELDS, row, strict=True)))


WIRE_VERSION = 2  # 2: hangup_by appended (version 1 frames, left in a spool by an older server, still read)
WIRE_LENGTH = 26
# Wire positions of the integer micro-unit money fields (used by the stores' fast path).
WIRE_COST, WIRE_PRICE = 20, 21


def _micros(d: Decimal) -> int:
    """Micro-units of a money value already normalised to 6 decimals by CdrRecord."""
    return int(d.scaleb(6))


def record_to_wire(r: CdrRecord) -> list[Any]:
    """Compact msgpack-able list: money as integer micro-units, times as epoch microseconds."""
    return [
        WIRE_VERSION,
        r.call_id,
        r.leg,
        r.customer_id,
        r.customer_ref,
        r.internal,
        r.account_id,
        r.direction,  # a StrEnum: msgpack packs it as its string value
        r.caller,
        r.dialed,
        r.normalised,
        r.prefix,
        r.destination,
        to_epoch_us(r.start),
        None if r.answer is None else to_epoch_us(r.answer),
        to_epoch_us(r.end),
        r.duration,
        r.billed_seconds,
        r.disposition,
        r.sip_status,
        _micros(r.cost),
        _micros(r.price),
        r.currency,
        r.free_minutes,
        r.package,
        r.hangup_by,
    ]


def check_wire(w: Any) -> list[Any]:
    """Reject anything that is not a wire list (before it reaches a store); a version 1 list (no
    hangup_by) comes back as a current one."""
    if isinstance(w, list) and len(w) == 25 and w[0] == 1:
        return [WIRE_VERSION, *w[1:], None]
    if not isinstance(w, list) or not w or w[0] != WIRE_VERSION:
        raise ValueError(f"unknown CDR wire version {w[0] if isinstance(w, list) and w else w!r}")
    if len(w) != WIRE_LENGTH:
        raise ValueError(f"CDR wire list has {len(w)} fields, expected {WIRE_LENGTH}")
    return w


def record_from_wire(w: list[Any]) -> CdrRecord:
    w = check_wire(w)
    (
        _,
        call_id,
        leg,
        customer_id,
        customer_ref,
        internal,
        account_id,
        direction,
        caller,
        dialed,
        normalised,
        prefix,
        destination,
        start,
        answer,
        end,
        duration,
        billed,
        disposition,
        sip_status,
        cost,
        price,
        currency,
        free_minutes,
        package,
        hangup_by,
    ) = w
    return CdrRecord(
        call_id=call_id,
        leg=leg,
        customer_id=customer_id,
        customer_ref=customer_ref,
        internal=internal,
        account_id=account_id,
        direction=Direction(direction),
        caller=caller,
        dialed=dialed,
        normalised=normalised,
        prefix=prefix,
        destination=destination,
        start=from_epoch_us(start),
        answer=None if answer is None else from_epoch_us(answer),
        end=from_epoch_us(end),
        duration=duration,
        billed_seconds=billed,
        disposition=Disposition(disposition),
        sip_status=sip_status,
        cost=from_micros(cost),
        price=from_micros(price),
        currency=currency,
        free_minutes=free_minutes,
        package=package,
        hangup_by=hangup_by,
    )
