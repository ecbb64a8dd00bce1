"""Exact money: Decimal at the edges, integers inside, one half-up rounding per call amount.

Units (why: the hot path must be integer arithmetic, and every rounding is stated once):
- amounts (balances, call prices, fees) are integer **micro-units** (1e-6 of the currency);
- per-minute rates are integer **rate units** of 1e-15 currency/minute, enough to hold
  (cost + fixed) x (1 + percent/100) exactly for costs with up to 9 decimals and percents with up to
  4 decimals, so the sell rate itself is never rounded;
- a call amount is rate x seconds / 60, rounded **once, half-up, to 6 decimals** (a micro-unit).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from math import gcd

MICROS_PER_UNIT = 1_000_000
RATE_UNITS_PER_UNIT = 10**15  # rate units per currency unit (per minute)
COST_DECIMALS = 9  # max decimals of a cost, fixed markup or override per minute
PERCENT_DECIMALS = 4  # max decimals of a markup percent
#: denominator turning rate_units x seconds into micro-units: 60 s/min x 1e15 / 1e6
AMOUNT_DIVISOR = 60 * RATE_UNITS_PER_UNIT // MICROS_PER_UNIT
_MICRO = Decimal("0.000001")

# Largest values money may take (docs/rating.md "Limits"). Why: far above any real figure, yet small
# enough that sums stay exact everywhere: a balance of 1e9 is 1e15 micro-units, so the ledger's SQLite
# SUM (signed 64-bit, 9.2e18) holds over 9,000 maximal movements and Decimal's 28 digits never round.
MAX_AMOUNT = Decimal(1_000_000_000)
"""Balances (opening and running), fees, payments, charges, thresholds, daily caps, connect fees."""
MAX_AMOUNT_MICROS = 1_000_000_000 * MICROS_PER_UNIT
MAX_PER_MINUTE = Decimal(1000)
"""Per-minute costs and prices: rate files, markup ``fixed``, overrides, ``max_cost``, incoming rates."""
MAX_PERCENT = Decimal(1000)
"""Markup ``percent``."""


class MoneyError(ValueError):
    """A money value that cannot be represented exactly (too many decimals, not a number)."""


def parse_decimal(text: str | Decimal | int, what: str = "amount") -> Decimal:
    """Parse a decimal from text (',' accepted as the decimal mark); never goes through float."""
    if isinstance(text, Decimal):
        value = text
    elif isinstance(text, int):
        value = Decimal(text)
    else:
        cleaned = str(text).strip().replace(",", ".")
        try:
            value = Decimal(cleaned)
        except InvalidOperation as exc:
            raise MoneyError(f"{what}: {text!r} is not a decimal number") from exc
    if not value.is_finite():
        raise MoneyError(f"{what}: {text!r} is not a finite number")
    return value


def check_limit(value: Decimal, limit: Decimal, what: str) -> Decimal:
    """``value`` itself when its magnitude is within ``limit``, else MoneyError saying the limit."""
    if abs(value) > limit:
        raise MoneyError(f"{what}: {value} is beyond the maximum of {limit:,} allowed")
    return value


def check_amount(value: Decimal, what: str = "amount") -> Decimal:
    """An amount within +/- MAX_AMOUNT (balances may be negative)."""
    return check_limit(value, MAX_AMOUNT, what)


def _scaled(value: Decimal, decimals: int, what: str) -> int:
    scaled = value.scaleb(decimals)
    whole = int(scaled)
    if whole != scaled:
        raise MoneyError(f"{what}: {value} has more than {decimals} decimals")
    return whole


def to_micros(amount: Decimal | int, what: str = "amount") -> int:
    """Exact Decimal -> micro-units; more than 6 decimals is an error, not a silent rounding."""
    return _scaled(Decimal(amount), 6, what)


def round_to_micros(amount: Decimal) -> int:
    """Decimal -> micro-units rounded half-up (for values computed outside the rater)."""
    return int(amount.quantize(_MICRO, rounding=ROUND_HALF_UP).scaleb(6))


def from_micros(micros: int) -> Decimal:
    """Micro-units -> Decimal with exactly 6 decimals."""
    return Decimal(micros).scaleb(-6).quantize(_MICRO)


def rate_units(per_minute: Decimal, what: str = "rate") -> int:
    """A per-minute price or cost -> integer rate units (1e-15/min); at most 9 decimals."""
    return _scaled(Decimal(per_minute), COST_DECIMALS, what) * 10**6


def marked_up_rate_units(cost: Decimal, fixed: Decimal, percent: Decimal) -> int:
    """(cost + fixed) x (1 + percent / 100) in rate units, exactly (DOMAIN.md's markup formula)."""
    base_nano = _scaled(Decimal(cost), COST_DECIMALS, "cost")
    base_nano += _scaled(Decimal(fixed), COST_DECIMALS, "markup")
    factor = 10**6 + _scaled(Decimal(percent), PERCENT_DECIMALS, "markup percent")  # (100 + p)/100 x 1e6
    return base_nano * factor


def amount_micros(rate: int, seconds: int) -> int:
    """rate (rate units/min) x seconds / 60, rounded once half-up to a micro-unit. Non-negative only."""
    return (2 * rate * seconds + AMOUNT_DIVISOR) // (2 * AMOUNT_DIVISOR)


def rate_units_to_decimal(rate: int) -> Decimal:
    """Rate units -> Decimal per minute (for display; exact)."""
    return Decimal(rate).scaleb(-15).normalize()


def amount_ratio(rate: int) -> tuple[int, int, int]:
    """(2p, q, 2q) with p/q = rate / AMOUNT_DIVISOR in lowest terms, precomputed once per rate.

    Why: amount_micros(rate, s) == (2p x s + q) // 2q exactly, but with small integers
    (0.0138/min reduces to 230/1 micro-units per second), which CPython multiplies and divides
    several times faster than the 1e-15-scaled originals. Same value, same single rounding.
    """
    g = gcd(rate, AMOUNT_DIVISOR)
    p, q = rate // g, AMOUNT_DIVISOR // g
    return 2 * p, q, 2 * q
