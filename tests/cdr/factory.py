"""Builds realistic CDRs for tests and benchmarks (deterministic from an index)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cdr.record import CdrRecord, Direction, Disposition

BASE = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def make_record(i: int, **over: Any) -> CdrRecord:
    start = over.pop("start", BASE + timedelta(seconds=37 * i))
    answered = i % 5 != 0
    duration = (i * 7) % 600 + 1 if answered else 0
    billed = -(-duration // 60) * 60 if answered else 0
    cost = Decimal("0.009") * billed / 60 if answered else Decimal(0)
    price = Decimal("0.0138") * billed / 60 if answered else Decimal(0)
    fields: dict[str, Any] = dict(
        call_id=f"call-{i}@sip.example",
        leg=0,
        customer_id=f"cust{i % 3}",
        customer_ref=f"REF-{i % 3:04d}",
        internal=(i % 3 == 2),
        account_id=f"cust{i % 3}/{2001 + i % 4}",
        direction=Direction.OUTBOUND,
        caller=f"+3314455{i % 1000:04d}",
        dialed=f"06{i % 100000000:08d}",
        normalised=f"+336{i % 100000000:08d}",
        prefix="336",
        destination="France mobile",
        start=start,
        answer=start + timedelta(seconds=5) if answered else None,
        end=start + timedelta(seconds=5 + duration),
        duration=duration,
        billed_seconds=billed,
        disposition=Disposition.ANSWERED if answered else Disposition.NO_ANSWER,
        sip_status=200 if answered else 480,
        cost=cost,
        price=price,
        currency="EUR",
        free_minutes=0,
        package="pro",
    )
    fields.update(over)
    return CdrRecord(**fields)
