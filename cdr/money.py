"""Exact money for CDRs: decimal.Decimal with 6 decimals, stored as integer micro-units where needed.

Rule (the only rounding done in this package): a money value given with more than 6 decimals is
rounded to 6 decimals, half away from zero (ROUND_HALF_UP, the invoicing convention). Floats are
refused so that no binary rounding error can slip in.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

MONEY_PLACES = 6
MICRO = 10**MONEY_PLACES
_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)  # Decimal("0.000001")
# NUMERIC(18,6): 12 integer digits.
MONEY_LIMIT = Decimal(10) ** (18 - MONEY_PLACES)


def to_money(value: Decimal | int | str) -> Decimal:
    """Return `value` as a Decimal with exactly 6 decimals (half-up); refuse floats and overflow."""
    if isinstance(value, float):
        raise TypeError("money must be Decimal, int or str, never float")
    d = value if isinstance(value, Decimal) else Decimal(value)
    if not d.is_finite():
        raise ValueError(f"money must be finite, got {value!r}")
    q = d.quantize(_QUANTUM, rounding=ROUND_HALF_UP)
    if abs(q) >= MONEY_LIMIT:
        raise ValueError(f"money out of NUMERIC(18,6) range: {value!r}")
    return q


def to_micros(value: Decimal) -> int:
    """Exact integer micro-units of a 6-decimal money value (as stored in SQLite)."""
    return int(to_money(value).scaleb(MONEY_PLACES))


def from_micros(micros: int) -> Decimal:
    """Inverse of to_micros: integer micro-units back to a 6-decimal Decimal."""
    return Decimal(int(micros)).scaleb(-MONEY_PLACES).quantize(_QUANTUM)
