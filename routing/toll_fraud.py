"""Toll-fraud limits a compromised account runs into: destination blocklists and call-rate limits.

Pure: the platform-wide counts (calls placed per window) are read through ``CallState.tally`` and the
wall-clock time through ``CallState.wall``; what to count for a call placed is returned (`Admission`),
the proxy's adapter adds it to the shared tallies (server.account_state: summed over workers and
hosts), checking it again across hosts with the same rule (`Admission.refused`, in Redis).

Blocklist: the longest prefix among the blocked and allowed entries of the platform, the customer and
the account decides (an allowed entry is an exception carved out of a shorter blocked one); on one
prefix listed at two levels, the narrower level (account, then customer, then platform) wins.

Call rate: a sliding window estimated from two fixed ones (the previous window weighted by the part
of it still inside the sliding window, plus the current one), as nginx's and Cloudflare's limiters
do: no burst of twice the limit at a window boundary, two counters per account and limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from routing import refusals
from routing.refusals import Refusal

TALLY = "#"  # server.account_state.TALLY: keys of platform-wide counters that are not calls

SATELLITE_PREFIXES: tuple[str, ...] = (
    "+870",  # Inmarsat SNAC
    "+871",  # Inmarsat (former ocean regions)
    "+872",
    "+873",
    "+874",
    "+881",  # Global Mobile Satellite System (Iridium, Globalstar, Thuraya, ...)
    "+882",  # international networks (ITU-T E.164 shared codes: maritime, satellite, M2M)
    "+883",  # international networks
    "+979",  # International Premium Rate Service
)
"""The default platform blocklist: ITU-T E.164 shared country codes of satellite and international
networks and international premium rate (the destinations toll fraud goes for: a minute costs several
euros and the networks pay out to whoever holds the number)."""


@dataclass(frozen=True, slots=True)
class Blocklist:
    """Prefix → blocked (True) or allowed (False); build with `layered`."""

    entries: Mapping[str, bool] = field(default_factory=lambda: MappingProxyType({}))
    lengths: tuple[int, ...] = ()  # the entries' lengths, longest first

    @classmethod
    def layered(cls, *levels: tuple[Iterable[str], Iterable[str]]) -> Blocklist:
        """``(blocked, allowed)`` per level, widest first (platform, customer, account)."""
        entries: dict[str, bool] = {}
        for blocked, allowed in levels:
            for prefix in blocked:
                entries[prefix] = True
            for prefix in allowed:
                entries[prefix] = False
        lengths = tuple(sorted({len(p) for p in entries}, reverse=True))
        return cls(MappingProxyType(entries), lengths)

    def blocking_prefix(self, number: str) -> str | None:
        """The blocked prefix ``number`` (E.164) falls under, or None when it may be called."""
        entries = self.entries
        for length in self.lengths:
            verdict = entries.get(number[:length]) if len(number) >= length else None
            if verdict is not None:
                return number[:length] if verdict else None
        return None


NO_BLOCKLIST = Blocklist()


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``calls`` calls placed per ``window`` seconds (sliding)."""

    calls: int
    window: int

    def __post_init__(self) -> None:
        if self.calls < 1 or self.window < 1:
            raise ValueError(f"a call-rate limit needs calls >= 1 and window >= 1 s, got {self}")

    def describe(self) -> str:
        unit = {1: "second", 60: "minute"}.get(self.window)
        return f"{self.calls} per {unit}" if unit else f"{self.calls} per {self.window} s"


RATE_TALLY = f"{TALLY}rate:"


def rate_key(account_id: str, window: int, index: int) -> str:
    return f"{RATE_TALLY}{window}:{index}:{account_id}"


def window_of(limit: RateLimit, wall: float) -> tuple[int, float]:
    """(index of the fixed window ``wall`` falls in, how far into it, 0 to 1)."""
    index, into = divmod(wall, limit.window)
    return int(index), into / limit.window


def estimated_rate(previous: int, current: int, into: float) -> float:
    """Calls in the sliding window ending now: the previous fixed window's calls weighted by the part
    of it the sliding window still covers, plus the current window's."""
    return previous * (1.0 - into) + current


def over_rate(limit: RateLimit, previous: int, current: int, into: float) -> bool:
    """True when one more call would pass ``limit``."""
    return estimated_rate(previous, current, into) + 1 > limit.calls + 1e-9


def placed_keys(account_id: str, limits: Iterable[RateLimit], wall: float) -> tuple[str, ...]:
    """The tallies a call placed at ``wall`` adds one to (the current window of each limit)."""
    return tuple(rate_key(account_id, lim.window, window_of(lim, wall)[0]) for lim in limits)


@dataclass(frozen=True, slots=True)
class RateCheck:
    """One call-rate limit of a call being placed, as the platform-wide check reads it: the tallies
    of the fixed window the call falls in and of the one before, and the weight of the previous one
    in the sliding estimate (`estimated_rate`)."""

    limit: RateLimit
    current: str
    previous: str
    weight: float


@dataclass(frozen=True, slots=True)
class Admission:
    """A call placed by ``account_id``: what it counts (+1 call in progress, +1 in the current window
    of each rate limit) and the limits it is checked against where hosts share the counts
    (server.account_state ``admit``: in one step, across hosts; `refused` is that check, `refusal`
    its answer, the same as routing's)."""

    account_id: str
    max_calls: int
    rates: tuple[RateCheck, ...] = ()

    @property
    def placed(self) -> tuple[str, ...]:
        """The rate tallies the call adds one to."""
        return tuple(r.current for r in self.rates)

    def refused(self, calls: int, tally: Callable[[str], int]) -> int:
        """0 when the call may be placed, given the platform's counts with the call itself counted
        (``calls`` in progress, ``tally`` of a rate window): else 1 for the call limit, 2 + i for the
        i-th rate limit. The reference of the Lua check (server.account_state_redis `_ADMIT`)."""
        if calls > self.max_calls:
            return 1
        for i, r in enumerate(self.rates):
            if estimated_rate(tally(r.previous), tally(r.current), 1.0 - r.weight) > r.limit.calls + 1e-9:
                return 2 + i
        return 0

    def refusal(self, refused: int) -> Refusal:
        """The answer to a call `refused` says no to: routing's own (status, reason and Warning)."""
        if refused == 1:
            return refusals.call_limit(self.max_calls)
        return refusals.call_rate(self.rates[refused - 2].limit.describe())


def admission(account_id: str, max_calls: int, limits: Iterable[RateLimit], wall: float) -> Admission:
    """What a call placed at ``wall`` (the entry host's clock, which routing decided on) counts and is
    checked against."""
    rates = []
    for lim in limits:
        index, into = window_of(lim, wall)
        rates.append(RateCheck(lim, rate_key(account_id, lim.window, index),
                               rate_key(account_id, lim.window, index - 1), 1.0 - into))  # fmt: skip
    return Admission(account_id, max_calls, tuple(rates))


def stale_rate_key(key: str, wall: float) -> bool:
    """A rate tally whose window and the next one are over (no estimate reads it any more)."""
    try:
        _, window, index, _ = key.split(":", 3)
        return (int(index) + 2) * int(window) <= wall
    except ValueError:
        return False


# ---- spend held by calls in progress (read by the rater's caller, moved by the proxy) --------------
def hold_keys(customer_id: str, account_id: str) -> tuple[str, str]:
    """Tallies of the money calls in progress may still cost: the customer's, the account's."""
    return f"{HOLD_C}{customer_id}", f"{HOLD_A}{account_id}"


HOLD_C, HOLD_A = f"{TALLY}hold:c:", f"{TALLY}hold:a:"


def hold_parties(keys: tuple[str, ...]) -> tuple[str, str] | None:
    """(customer, account) of a hold's `hold_keys`; None for other tallies."""
    if len(keys) != 2 or not (keys[0].startswith(HOLD_C) and keys[1].startswith(HOLD_A)):
        return None
    return keys[0][len(HOLD_C) :], keys[1][len(HOLD_A) :]


def spent_keys(customer_id: str, account_id: str, day: str) -> tuple[str, str]:
    """Tallies of the money finished calls cost on ``day`` (the operator's date)."""
    return f"{TALLY}spent:c:{day}:{customer_id}", f"{TALLY}spent:a:{day}:{account_id}"


def seeded_key(day: str) -> str:
    """Marks that one process loaded ``day``'s spend from the CDR store (no other does it again)."""
    return f"{TALLY}seeded:{day}"


def spent_day_of(key: str) -> str | None:
    """The day of a spent tally (for pruning those of past days), None for other keys."""
    parts = key.split(":", 3)
    return parts[2] if len(parts) == 4 and parts[0] == f"{TALLY}spent" else None
