"""Which trunks an outside call tries, in which order, and the number format each carrier wants.

Pure decisions: ``order_trunks`` is given the trunks that are up (the adapter's OPTIONS probes) and a
random draw (weights); ``format_number`` writes an E.164 number the way a carrier expects it.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass

NUMBER_FORMATS = ("e164", "e164_no_plus", "national", "international_00")


@dataclass(frozen=True, slots=True)
class TrunkChoice:
    """One trunk of an ordered set: the lowest ``priority`` first; equal priorities share calls in
    proportion to ``weight``."""

    trunk: str
    priority: int = 1
    weight: int = 1


def order_trunks(
    choices: Sequence[TrunkChoice], up: Container[str], draw: Callable[[], float]
) -> tuple[str, ...]:
    """The trunks to try, best first: those ``up`` by priority, a weighted random order within one
    priority (each pick in proportion to the weights left, ``draw()`` in [0, 1)). Trunks down are
    left out, unless every trunk is down: then all are tried in the same order (a probe may be wrong,
    and a call tried beats a call refused)."""
    live = [c for c in choices if c.trunk in up]
    pool = live or list(choices)
    order: list[str] = []
    for priority in sorted({c.priority for c in pool}):
        group = [c for c in pool if c.priority == priority]
        while group:
            if len(group) == 1:
                order.append(group.pop().trunk)
                break
            total = sum(c.weight for c in group)
            point = draw() * total
            for i, c in enumerate(group):
                point -= c.weight
                if point < 0 or i == len(group) - 1:
                    order.append(group.pop(i).trunk)
                    break
    return tuple(order)


def format_number(
    e164: str, fmt: str, country_code: int = 0, national_prefix: str = "0", international_prefix: str = "00"
) -> str:
    """``+33612345678`` as a carrier wants it: ``e164`` (as is), ``e164_no_plus`` (33612345678),
    ``international_00`` (0033612345678), ``national`` (0612345678 for a number of the trunk's
    ``country_code``, else the international form). Anything not E.164 is returned unchanged."""
    if not e164.startswith("+") or fmt == "e164":
        return e164
    digits = e164[1:]
    if fmt == "e164_no_plus":
        return digits
    if fmt == "national" and country_code:
        code = str(country_code)
        if digits.startswith(code):
            return national_prefix + digits[len(code) :]
    return international_prefix + digits
