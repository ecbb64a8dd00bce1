"""Transaction timer values (RFC 3261 §17, Table 4) and the deadline heap the transaction layer sleeps on.

Pure code: nothing here reads the clock. Deadlines are plain floats on the caller's monotonic clock, so
tests drive every timer with a fake "now" and never sleep.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from itertools import count
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
    """Anything the heap can wake: it knows its own next deadline and whether it is finished."""

    heap_at: float | None

    def next_deadline(self) -> float | None: ...

    @property
    def terminated(self) -> bool: ...


T = TypeVar("T", bound=Scheduled)


class DeadlineHeap(Generic[T]):
    """A min-heap of (deadline, seq, item) with lazy invalidation.

    Why lazy: a transaction's deadline moves on nearly every event; removing heap entries would be
    O(n). Instead an item records the deadline it is queued under (``item.heap_at``); an entry whose
    deadline no longer equals it, or whose item has terminated, is skipped when popped. A new entry is
    pushed only when the deadline moves *earlier*; a deadline that moves later is found when the old
    entry pops, and re-queued then. ``compact()`` drops stale entries when they outnumber live ones.
    """

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._seq = count()

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, item: T) -> None:
        """Queue ``item`` under its current next deadline if that is earlier than where it is queued."""
        deadline = item.next_deadline()
        if deadline is None or item.terminated:
            return
        queued = item.heap_at
        if queued is None or deadline < queued:
            item.heap_at = deadline
            heapq.heappush(self._heap, (deadline, next(self._seq), item))

    def pop_due(self, now: float) -> list[T]:
        """Items whose queued deadline is ≤ now, each once; the caller runs them and re-schedules them."""
        heap = self._heap
        due: list[T] = []
        while heap and heap[0][0] <= now:
            deadline, _, item = heapq.heappop(heap)
            if item.heap_at != deadline or item.terminated:
                continue
            item.heap_at = None
            due.append(item)
        return due

    def peek(self) -> float | None:
        """Earliest queued deadline (may belong to a stale entry: waking early is harmless)."""
        heap = self._heap
        while heap and (heap[0][2].heap_at != heap[0][0] or heap[0][2].terminated):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def compact(self) -> None:
        """Drop stale entries in one O(n) pass."""
        self._heap = [e for e in self._heap if e[2].heap_at == e[0] and not e[2].terminated]
        heapq.heapify(self._heap)
