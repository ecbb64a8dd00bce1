"""Per-package tariff compilation: longest-prefix search over the package's merged prefixes.

Why merge: overrides and free zones are prefixes of their own that need not coincide with rate
rows. Compiling the union of rate, override and free-zone prefixes, each key carrying the
longest rate row, override and free zone *of that key*, makes one longest-prefix search of the
merged keys return exactly what three separate longest-prefix searches would (the longest
matching key is at least as long as each separate match, and inherits them).
Everything the hot path needs (integer rates, pulse, flags) is precomputed on the entry.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import NamedTuple

from rating.errors import SetupError
from rating.model import Package, Pricing, RateRow, RateTable
from rating.money import AMOUNT_DIVISOR, MoneyError, amount_ratio, marked_up_rate_units, rate_units, to_micros

PREMIUM = 1  # flag bits, tested against an account's block mask in one AND
OUT_OF_PLAN = 2

#: What the hot path reads, as *plain* tuples (measured, CPython 3.11: unpacking or indexing a
#: plain tuple is specialised, a NamedTuple's goes through the generic iterator protocol).
#: Entry = (prefix, destination, cost_p2, sell_p2, shape, extended): only the values proper to one
#: prefix, so a lookup over a large table touches few distinct objects (cache misses bound the
#: uniform-traffic figure); `extended` is CompiledTable's search flag.
#: Shape = (category, pricing, cost_q, cost_q2, cost_initial, cost_subsequent, cost_connect,
#: sell_q, sell_q2, flags): few distinct values (q divides 2 x AMOUNT_DIVISOR), one shared object each.
#: Amounts use (2p, q, 2q) ratios from rating.money.amount_ratio: micros = (2p x s + q) // 2q.
Entry = tuple  # type alias, documented above
Shape = tuple


class Route(NamedTuple):
    """One (package, prefix) answer as a readable value: the matched tariff line priced for that package.

    Built on demand from an entry (Rater.match, CompiledTable.match); the hot path never builds one.
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

    @classmethod
    def of(cls, entry: Entry) -> Route:
        prefix, destination, cost_p2, sell_p2, shape, _extended = entry
        category, pricing, cq, cq2, ci, cs, cconn, sq, sq2, flags = shape
        return cls(
            prefix, destination, category, pricing, cost_p2, cq, cq2, ci, cs, cconn, sell_p2, sq, sq2, flags
        )

    @property
    def premium(self) -> bool:
        return bool(self.flags & PREMIUM)

    @property
    def out_of_plan(self) -> bool:
        return bool(self.flags & OUT_OF_PLAN)

    @property
    def cost_rate(self) -> int:
        """Carrier cost in rate units / minute (exact: p/q is rate / AMOUNT_DIVISOR in lowest terms)."""
        return self.cost_p2 * AMOUNT_DIVISOR // self.cost_q2

    @property
    def sell_rate(self) -> int:
        """Sell price in rate units / minute (exact, as cost_rate)."""
        return self.sell_p2 * AMOUNT_DIVISOR // self.sell_q2


class CompiledTable:
    """Longest-prefix search over a package's entries in about two dict probes.

    One dict per key length. The first probe is at a *pivot* length P, in a dict that holds the
    keys of length P plus a marker for every P-long head of a longer key (Waldvogel-style
    binary search on lengths, one level). A miss there proves no key of length >= P matches, so
    only the shorter lengths are probed (longest first); a hit whose entry is not `extended` (no
    longer key starts with it) is the answer; otherwise the longer lengths are probed and the
    hit (or the marker's best shorter match) answers. P minimises the expected probe count for
    traffic spread like the keys: on the 100k-prefix benchmark table, 2.3 probes instead of 3.2
    longest-first, and each probe is a likely cache miss on a large table (measured).

    Every dict also holds a None key: a dict with a non-str key stores each key's hash in its
    entry, so a probe passing other keys compares hashes without reading those key objects
    (CPython 3.11 str-only dicts read each key's cached hash from the key object itself). On the
    100k-prefix benchmark: ~2 fewer simulated L2 misses per call (cachegrind, 2 MB L2) and a few
    percent in timing; it never changes an answer (no number is None).
    """

    __slots__ = ("entries", "lower", "pivot", "pivot_get", "upper")

    def __init__(self, entries: dict[str, Entry], pivot: int) -> None:
        """`entries`: prefix -> entry, whose `extended` flags were computed for `pivot` (search_plan)."""
        self.entries = entries
        lengths = sorted(set(map(len, entries)), reverse=True)
        p = pivot
        heads = {key[:p] for key in entries if len(key) > p}
        lower = [n for n in lengths if n < p]
        by_length: dict[int, dict[object, Entry | None]] = {n: {None: None} for n in lengths}
        for key, entry in entries.items():
            by_length[len(key)][key] = entry
        pivot_dict = by_length.get(p, {None: None})
        for head in heads - pivot_dict.keys():
            best = _longest_entry(by_length, lower, head)
            pivot_dict[head] = best if best is not None else _MARK_ONLY
        self.pivot = slice(p)
        self.pivot_get = pivot_dict.get
        self.lower = tuple((slice(n), by_length[n].get) for n in lower)
        self.upper = tuple((slice(n), by_length[n].get) for n in lengths if n > p)

    def find(self, number: str) -> Entry | None:
        """The entry of the longest prefix of `number` in the table (Rater.authorise inlines this)."""
        entry = self.pivot_get(number[self.pivot])  # number[:P] of a shorter number is the number
        if entry is None or entry[5]:
            for head, get in self.lower if entry is None else self.upper:
                hit = get(number[head])
                if hit is not None:
                    return hit  # type: ignore[no-any-return]
        return None if entry is None or entry[0] is None else entry

    def match(self, number: str) -> Route | None:
        """find(), as a readable Route."""
        entry = self.find(number)
        return None if entry is None else Route.of(entry)

    def __len__(self) -> int:
        return len(self.entries)


#: pivot-dict value for the head of longer keys that no shorter key covers (extended, unrated)
_MARK_ONLY: Entry = (None, None, 0, 0, None, True)


def search_plan(keys: list[str]) -> tuple[int, set[str]]:
    """(pivot length, keys to flag `extended`) for CompiledTable.

    The pivot has the fewest expected probes, weighting each key length by its key count: a key of
    the pivot length costs 1 probe (its extensions are ignored here: an estimate that only affects
    speed), a longer or shorter one 1 + its rank among the longer or shorter lengths, longest
    first. Ties go to the longest pivot (fewer markers); the longest length is plain longest-first
    search. `extended` holds every string of length <= pivot that starts a key longer than the
    pivot (so a key in it may be beaten by a longer one).
    """
    count = Counter(map(len, keys))
    lengths = sorted(count, reverse=True)
    best, best_cost = lengths[0] if lengths else 0, -1
    for p in lengths:
        cost = count[p]
        cost += sum(count[n] * (2 + i) for i, n in enumerate(n for n in lengths if n > p))
        cost += sum(count[n] * (2 + i) for i, n in enumerate(n for n in lengths if n < p))
        if best_cost < 0 or cost < best_cost:
            best, best_cost = p, cost
    heads = {key[:best] for key in keys if len(key) > best}
    lower = [n for n in lengths if n < best]
    return best, heads | {h[:n] for h in heads for n in lower}


def _longest_entry(
    by_length: dict[int, dict[object, Entry | None]], lengths: list[int], key: str
) -> Entry | None:
    for n in lengths:  # longest first
        entry = by_length[n].get(key[:n])
        if entry is not None:
            return entry
    return None


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
    """Build the package's prefix -> entry table (precedence: override > free zone > included > markup)."""
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
    shapes: dict[Shape, Shape] = {}  # one object per distinct shape (see Entry)
    share = shapes.setdefault
    # override / free-zone prefixes no carrier rate covers are left out: such numbers are unrated
    extra = [k for k in (set(overrides) | set(free)) - terms.keys() if _longest(terms, term_lengths, k)]
    keys = [*terms, *extra]
    pivot, extended = search_plan(keys)
    entries: dict[str, Entry] = {}
    for key in keys:
        t = terms.get(key) or terms[_longest(terms, term_lengths, key)]  # type: ignore[index]
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
        shape = (row.category, pricing, cq, cq2, t.initial, t.subsequent, t.connect, sq, sq2, flags)
        entries[key] = (key, row.destination, cp2, sp2, share(shape, shape), key in extended)
    return CompiledTable(entries, pivot)
