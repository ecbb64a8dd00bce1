"""Transaction timer values (RFC 3261 §17, Table 4) and the timer wheel the transaction layer sleeps on.

Pure code: nothing here reads the clock. Deadlines are plain floats on the caller's monotonic clock, so
tests drive every timer with a fake "now" and never sleep.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from operator import itemgetter
from typing import Generic, Protocol, TypeVar


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """T1/T2/T4 and the derived timers A–K, in seconds.

    Defaults are the RFC's: T1 = 0.5 s (RTT estimate), T2 = 4 s (cap for non-INVITE retransmission and
    response retransmission intervals), T4 = 5 s (how long a message stays in the network), timer D at
    least 32 s on unreliable transports. ``trying_delay`` is how long an INVITE server transaction waits
    for the TU's first response before answering 100 Trying itself (§17.2.1): 0.2 s by default, 0 sends
    it at once, None never. ``rfc6026`` keeps an INVITE server transaction in Accepted for timer L
    (64*T1) after a 2xx, so a retransmitted INVITE is absorbed instead of reaching the TU as a new
    call; False is RFC 3261's immediate Terminated.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0
    trying_delay: float | None = 0.2
    rfc6026: bool = True

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 > 0 and self.timer_d >= 0):
            raise ValueError(f"invalid SIP timers: T1={self.t1} T2={self.t2} T4={self.t4} D={self.timer_d}")
        if self.trying_delay is not None and self.trying_delay < 0:
            raise ValueError(f"invalid 100 Trying delay: {self.trying_delay}")

    @property
    def timeout(self) -> float:
        """64*T1: timers B, F, H (give up), J (absorb request retransmissions on UDP) and L."""
        return 64 * self.t1


DEFAULT_TIMERS = TimerConfig()


class Scheduled(Protocol):
    """Anything the wheel can wake: it knows its own next deadline and whether it is finished."""

    timer_slot: int | None

    def next_deadline(self) -> float | None: ...

    @property
    def terminated(self) -> bool: ...


T = TypeVar("T", bound=Scheduled)


class TimerWheel(Generic[T]):
    """Items filed by deadline in slots of ``width`` seconds, each slot a dict (item -> deadline).

    Why not a heap: a transaction's deadline moves on nearly every event (a 100 Trying or Timer A/E
    cancelled, Timer J/L/M armed), and a heap cannot remove an entry, so each move left a stale entry
    to pop later, and an ended transaction stayed held by its entry until that deadline (an answered
    INVITE's client transaction by its Timer B: 32 s). At a thousand calls/s that is ~100,000 entries,
    and every pop walked log2(n) cold tuples. Here filing, moving and cancelling are dict operations,
    an ended item is let go at once, and only the slot numbers sit in a heap (one per slot in use, an
    emptied one until it comes first: at most the longest timer over the width, 3,200 for 32 s at
    10 ms, whatever the load). Exact: an item is due when its own deadline is <= now, not when its
    slot is.
    """

    __slots__ = ("_count", "_first", "_order", "_slots", "width")

    def __init__(self, width: float = 0.01) -> None:
        if not width > 0:
            raise ValueError(f"slot width must be positive, not {width}")
        self.width = width
        self._slots: dict[int, dict[T, float]] = {}  # emptied ones too, until they come first
        self._order: list[int] = []  # heap of the slot numbers in _slots, each once
        self._count = 0
        self._first: float | None = None  # the earliest deadline, when known (peek's cache)

    def __len__(self) -> int:
        return self._count

    def schedule(self, item: T) -> None:
        """File ``item`` under its current next deadline; a finished or idle item is let go."""
        deadline = item.next_deadline()
        if deadline is None or item.terminated:
            self.cancel(item)
            return
        slot = math.floor(deadline / self.width)
        filed = item.timer_slot
        if filed is not None:
            bucket = self._slots[filed]
            if filed == slot:
                old = bucket[item]
                if deadline != old:
                    bucket[item] = deadline
                    self._moved(old, deadline)
                return
            self._take(item, bucket)
        found = self._slots.get(slot)
        if found is None:
            bucket = self._slots[slot] = {}
            heapq.heappush(self._order, slot)
        else:
            bucket = found
        bucket[item] = deadline
        item.timer_slot = slot
        self._count += 1
        first = self._first
        if first is not None and deadline < first:
            self._first = deadline

    def cancel(self, item: T) -> None:
        """Let ``item`` go (nothing to wait for, or finished)."""
        filed = item.timer_slot
        if filed is not None:
            self._take(item, self._slots[filed])

    def _take(self, item: T, bucket: dict[T, float]) -> None:
        deadline = bucket.pop(item)
        item.timer_slot = None
        self._count -= 1  # an emptied slot stays until it comes first (a heap removes only its top)
        if deadline == self._first:
            self._first = None

    def _moved(self, old: float, new: float) -> None:
        first = self._first
        if first is not None:
            if new < first:
                self._first = new
            elif old == first:
                self._first = None

    def pop_due(self, now: float) -> list[T]:
        """Items whose deadline is <= now, in deadline order, each once, no longer filed; the caller
        runs them and schedules them again."""
        due: list[tuple[float, T]] = []
        order, slots = self._order, self._slots
        last = math.floor(now / self.width)
        while order and order[0] <= last:
            slot = order[0]
            if slot < last:  # the whole slot lies before now
                heapq.heappop(order)
                for item, deadline in slots.pop(slot).items():
                    item.timer_slot = None
                    due.append((deadline, item))
                continue
            bucket = slots[slot]
            ready = [(d, item) for item, d in bucket.items() if d <= now]
            for _, item in ready:
                del bucket[item]
                item.timer_slot = None
            if not bucket:
                heapq.heappop(order)
                del slots[slot]
            due += ready
            break
        if not due:
            return []
        self._count -= len(due)
        self._first = None
        due.sort(key=itemgetter(0))  # stable: ties keep their filing order
        return [item for _, item in due]

    def peek(self) -> float | None:
        """The earliest deadline filed, or None."""
        first = self._first
        if first is not None:
            return first
        order, slots = self._order, self._slots
        while order:
            bucket = slots[order[0]]
            if bucket:
                first = self._first = min(bucket.values())
                return first
            del slots[heapq.heappop(order)]  # emptied by moves and cancels
        return None
