"""Per-package tariff compilation: one dict per package answering longest-prefix in O(digits).

Why merge: overrides and free zones are prefixes of their own that need not coincide with rate
rows. Compiling the union of rate, override and free-zone prefixes, each key carrying the
longest rate row, override and free zone *of that key*, makes one longest-prefix probe of the
merged dict return exactly what three separate longest-prefix searches would (the longest
matching key is at least as long as each separate match, and inherits them).
Everything the hot path needs (integer rates, pulse, flags) is precomputed on the Route.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from rating.errors import SetupError
from rating.model import Package, Pricing, RateRow, RateTable
from rating.money import MoneyError, amount_ratio, marked_up_rate_units, rate_units, to_micros

_new = tuple.__new__
PREMIUM = 1  # Route.flags bits, tested against an account's block mask in one AND
OUT_OF_PLAN = 2


class Route(NamedTuple):
    """One (package, prefix) answer: the matched tariff line priced for that package.

    A NamedTuple so the hot path can unpack every term in one step and so a route is one compact
    object (fewer cache misses across a 100k-entry table). Amounts use (2p, q, 2q) ratios from
    rating.money.amount_ratio: amount_micros = (2p x seconds + q) // 2q.
    """

    prefix: str
    destination: str
    category: str
    pricing: Pricing
    cost_p2: int
    cost_q: int
    cost_q2: int
    cost_initial: int  # carrier increments
    cost_subsequent: int
    cost_connect: int  # micro-units
    sell_p2: int  # 0 = free (zone, included, zero override)
    sell_q: int
    sell_q2: int
    flags: int  # PREMIUM | OUT_OF_PLAN
    cost_rate: int  # rate units / minute (exact, for display)
    sell_rate: int

    @property
    def premium(self) -> bool:
        return bool(self.flags & PREMIUM)

    @property
    def out_of_plan(self) -> bool:
        return bool(self.flags & OUT_OF_PLAN)


class CompiledTable:
    """prefix -> Route, plus the distinct key lengths (longest first) to probe."""

    __slots__ = ("lengths", "routes")

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.lengths = tuple(sorted({len(k) for k in routes}, reverse=True))

    def match(self, number: str) -> Route | None:
        """Longest prefix of `number` present in the table: at most one dict probe per length."""
        get = self.routes.get
        for length in self.lengths:  # number[:L] of a shorter number is the number itself
            route = get(number[:length])
            if route is not None:
                return route
        return None

    def __len__(self) -> int:
        return len(self.routes)


def _norm_cc(code: str) -> str:
    code = code.strip()
    return code if code.startswith("+") else "+" + code


def _longest(prefixes: dict[str, object], lengths: tuple[int, ...], key: str) -> str | None:
    n = len(key)
    for length in lengths:
        if length <= n and key[:length] in prefixes:
            return key[:length]
    return None


class _RowTerms:
    """A rate row converted once to integers, shared by every package using the table."""

    __slots__ = ("connect", "cost", "cost_ratio", "initial", "row", "subsequent")

    def __init__(self, row: RateRow) -> None:
        self.row = row
        self.cost = rate_units(row.cost_per_minute, f"cost of {row.prefix}")
        self.cost_ratio = amount_ratio(self.cost)
        self.connect = to_micros(row.connect_fee, f"connect fee of {row.prefix}") if row.connect_fee else 0
        self.initial = row.carrier_pulse.initial
        self.subsequent = row.carrier_pulse.subsequent


def row_terms(table: RateTable) -> dict[str, _RowTerms]:
    """prefix -> integer terms; a duplicate prefix is a setup error (the import rejects it too)."""
    terms: dict[str, _RowTerms] = {}
    for row in table.rows:
        if row.prefix in terms:
            raise SetupError(f"rate table {table.name!r}: duplicate prefix {row.prefix}")
        try:
            terms[row.prefix] = _RowTerms(row)
        except MoneyError as exc:
            raise SetupError(f"rate table {table.name!r}: {exc}") from exc
    return terms


def compile_package(
    package: Package, terms: dict[str, _RowTerms], premium_categories: frozenset[str]
) -> CompiledTable:
    """Build the package's prefix -> Route dict (precedence: override > free zone > included > markup)."""
    try:
        overrides = {p: rate_units(v, f"override {p}") for p, v in package.overrides.items()}
        limit = package.free_cost_threshold
        threshold = None if limit is None else rate_units(limit, "free cost threshold")
        fixed = Decimal(package.markup_fixed)
        percent = Decimal(package.markup_percent)
        marked_up_rate_units(Decimal(0), fixed, percent)  # validates the markup's precision once
    except MoneyError as exc:
        raise SetupError(f"package {package.name!r}: {exc}") from exc
    free = dict.fromkeys({_norm_cc(c) for c in package.free_country_codes} | set(package.free_prefixes), True)
    included = package.included_categories

    term_lengths = tuple(sorted({len(k) for k in terms}, reverse=True))
    ov_lengths = tuple(sorted({len(k) for k in overrides}, reverse=True))
    free_lengths = tuple(sorted({len(k) for k in free}, reverse=True))
    ov_min = ov_lengths[-1] if ov_lengths else 0
    ov_heads = {p[:ov_min] for p in overrides}
    free_min = free_lengths[-1] if free_lengths else 0
    free_heads = {p[:free_min] for p in free}
    factor = 10**6 + int(percent.scaleb(4))
    fixed_nano = int(fixed.scaleb(9))

    free_ratio = amount_ratio(0)
    routes: dict[str, Route] = {}
    extra = (set(overrides) | set(free)) - terms.keys()
    for key in (*terms, *extra):
        t = terms.get(key)
        if t is None:
            found = _longest(terms, term_lengths, key)
            if found is None:
                continue  # no carrier rate covers this key: such numbers are unrated
            t = terms[found]
        row = t.row
        # cheap head test first: most keys start with no override / free-zone prefix at all
        ov = _longest(overrides, ov_lengths, key) if key[:ov_min] in ov_heads else None
        if ov is not None:
            sell, pricing = overrides[ov], Pricing.OVERRIDE
        elif (key[:free_min] in free_heads and _longest(free, free_lengths, key) is not None) or (
            threshold is not None and t.cost <= threshold
        ):
            sell, pricing = 0, Pricing.FREE_ZONE
        elif row.category in included:
            sell, pricing = 0, Pricing.INCLUDED
        else:
            sell, pricing = (t.cost // 10**6 + fixed_nano) * factor, Pricing.MARKUP
        flags = (OUT_OF_PLAN if sell else 0) | (PREMIUM if row.category in premium_categories else 0)
        cp2, cq, cq2 = t.cost_ratio
        sp2, sq, sq2 = amount_ratio(sell) if sell else free_ratio
        routes[key] = _new(Route, (
            key, row.destination, row.category, pricing, cp2, cq, cq2, t.initial, t.subsequent, t.connect,
            sp2, sq, sq2, flags, t.cost, sell,
        ))  # fmt: skip
    return CompiledTable(routes)
