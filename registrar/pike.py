"""Request-rate limit per source (like Kamailio's ``pike``): a source sending more than ``requests``
messages within ``window`` seconds is reported once, so the server can ban it (through the guard's
ban list) and drop everything it sends before parsing.

Pure and bounded: ``hit`` takes ``now`` and returns a value; the table has a hard size cap (a flood
of distinct, spoofed sources evicts the oldest counters, counted). The rate is a sliding-window
estimate — the previous window's count weighted by how much of it still overlaps, plus the current
window's — so a burst across a window boundary is not let through twice. IPv6 sources are keyed by
their /64 (configurable), as the guard keys them: one host owns a whole /64.

Exemptions (the guard's whitelist, trunks) are the caller's: checking them on every message would
cost more than counting, so the caller checks only the rare source that goes over the limit.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .guard import address_key

__all__ = ["Pike", "PikeConfig", "PikeStats", "RateExceeded"]


@dataclass(frozen=True, slots=True)
class PikeConfig:
    """``requests`` per ``window`` seconds per source; over it, a ban of ``ban_time`` seconds."""

    requests: int = 200
    window: float = 2.0
    ban_time: float = 300.0
    ipv6_prefix: int = 64
    max_tracked: int = 65_536

    def __post_init__(self) -> None:
        if self.requests < 1 or self.window <= 0 or self.ban_time <= 0:
            raise ValueError("requests must be at least 1, window and ban_time positive")
        if self.max_tracked < 1:
            raise ValueError("max_tracked must be at least 1")
        if not 1 <= self.ipv6_prefix <= 128:
            raise ValueError("ipv6_prefix must be within 1..128")


@dataclass(frozen=True, slots=True)
class RateExceeded:
    """``source`` (the key: the address, or its /64) went over the limit at ``rate`` messages/s
    (measured since its first message when it had no earlier window, else over the window)."""

    source: str
    rate: float


@dataclass(frozen=True, slots=True)
class PikeStats:
    exceeded_total: int
    evictions_total: int
    tracked: int


class _Slot:
    __slots__ = ("count", "previous", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 0
        self.previous = 0


class Pike:
    """Per-source message counters. Not thread-safe: one per event loop / process."""

    def __init__(self, config: PikeConfig | None = None) -> None:
        self.config = config = config or PikeConfig()
        self._limit = config.requests
        self._window = config.window
        self._slots: OrderedDict[str, _Slot] = OrderedDict()  # ordered by window start
        self.exceeded_total = 0
        self.evictions_total = 0

    def source_key(self, ip: str) -> str:
        """The count key of an address, as the guard keys its bans (`registrar.guard.address_key`)."""
        return address_key(ip, self.config.ipv6_prefix)

    def hit(self, ip: str, now: float) -> RateExceeded | None:
        """Count one message from ``ip``; the event when it takes its source over the limit (the
        source's counters then start again, so a source let through keeps being reported at most
        once per window)."""
        key = ip if ":" not in ip else self.source_key(ip)
        slots = self._slots
        slot = slots.get(key)
        window = self._window
        if slot is None:
            if len(slots) >= self.config.max_tracked:
                self._purge(now)
                if len(slots) >= self.config.max_tracked:
                    slots.popitem(last=False)
                    self.evictions_total += 1
            slot = slots[key] = _Slot(now)
        elif now - slot.start >= window:
            elapsed = now - slot.start
            slot.previous = slot.count if elapsed < 2 * window else 0
            slot.start = now - elapsed % window if elapsed < 2 * window else now
            slot.count = 0
            slots.move_to_end(key)
        slot.count += 1
        count = slot.count
        limit = self._limit
        if count + slot.previous <= limit:
            return None  # the common case: no weighting needed
        elapsed = now - slot.start
        overlap = 1.0 - elapsed / window
        estimate = count + slot.previous * (overlap if overlap > 0 else 0.0)
        if estimate <= limit:
            return None
        # the rate to report: a new source's own (a burst can be far above requests/window)
        rate = estimate / window if slot.previous else count / max(elapsed, 0.001)
        slot.count = 0
        slot.previous = 0
        slot.start = now
        self.exceeded_total += 1
        return RateExceeded(key, round(rate, 1))

    def forget(self, ip: str) -> None:
        """Drop a source's counters (it was banned: nothing of it is counted while banned)."""
        self._slots.pop(self.source_key(ip), None)

    def expire(self, now: float) -> None:
        self._purge(now)

    def stats(self, now: float) -> PikeStats:
        self._purge(now)
        return PikeStats(self.exceeded_total, self.evictions_total, len(self._slots))

    def _purge(self, now: float) -> None:
        """Drop counters whose last window ended more than a window ago (they weigh nothing)."""
        slots, horizon = self._slots, 2 * self._window
        while slots:
            key, slot = next(iter(slots.items()))
            if now - slot.start < horizon:
                break
            del slots[key]
