"""UTC calendar months, the unit of billing periods (pure)."""

from __future__ import annotations

from datetime import UTC, datetime


def month_start(year: int, month: int) -> datetime:
    return datetime(year, month, 1, tzinfo=UTC)


def next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def months_between(start: datetime, end: datetime) -> list[tuple[int, int]]:
    """Calendar months (UTC) intersecting [start, end)."""
    s = start.astimezone(UTC)
    out: list[tuple[int, int]] = []
    if end <= start:
        return out
    y, m = s.year, s.month
    while month_start(y, m) < end:
        out.append((y, m))
        y, m = next_month(y, m)
    return out


def month_slices(start: datetime, end: datetime) -> list[tuple[str, datetime, datetime]]:
    """[start, end) cut at month boundaries: ("YYYY-MM", slice start, slice end) in order."""
    out = []
    for y, m in months_between(start, end):
        lo = max(start, month_start(y, m))
        hi = min(end, month_start(*next_month(y, m)))
        out.append((f"{y:04d}-{m:02d}", lo, hi))
    return out
