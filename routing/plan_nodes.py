"""Building blocks of a call plan: a tree of nodes, each reporting one result to its parent.

A leaf rings one branch; a stagger rings several children on a schedule (parallel, sequential, or
overlapping), first answer wins; a fixed node fails at once (loop, refusal). Nodes never read the
clock: the plan passes ``now`` down and collects deadlines in one heap (see ``routing.plan``).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from routing.plan_events import (
    Action,
    BranchAnswered,
    BranchBusy,
    BranchEvent,
    BranchFailed,
    BranchNotAnswered,
    CancelBranch,
    RingBranch,
)


class Outcome(Enum):
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    UNREACHABLE = "unreachable"
    FAILED = "failed"
    LOOP = "loop"
    TOO_MANY_HOPS = "too_many_hops"


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    status: int = 0
    reason: str = ""
    warning: str = ""
    branch_id: int = 0


ANSWER_STATUS = {
    Outcome.BUSY: (486, "Busy Here"),
    Outcome.NO_ANSWER: (480, "Temporarily Unavailable"),
    Outcome.UNREACHABLE: (480, "Temporarily Unavailable"),
    Outcome.LOOP: (482, "Loop Detected"),
    Outcome.TOO_MANY_HOPS: (483, "Too Many Hops"),
}


def failure(outcome: Outcome, warning: str = "", status: int = 0, reason: str = "") -> Result:
    if not status:
        status, reason = ANSWER_STATUS[outcome]
    return Result(outcome, status, reason, warning)


# Which failure the caller hears when several branches failed differently (RFC 3261 16.7 spirit:
# a 6xx global failure first, then "busy" over "no answer", then the rest).
_PRIORITY = {
    Outcome.BUSY: 1,
    Outcome.FAILED: 2,
    Outcome.NO_ANSWER: 3,
    Outcome.UNREACHABLE: 4,
    Outcome.TOO_MANY_HOPS: 5,
    Outcome.LOOP: 6,
}


def best_failure(results: list[Result]) -> Result:
    if not results:  # nothing to ring at all (e.g. an empty group)
        return failure(Outcome.UNREACHABLE)
    six = [r for r in results if r.status >= 600]
    if six:
        return six[0]
    return min(results, key=lambda r: _PRIORITY[r.outcome])


class Timers:
    """One heap of deadlines for the whole plan. Entries can be disarmed; dead entries (disarmed, or
    whose node is done) are dropped lazily, so ``next_deadline`` is always a real one."""

    def __init__(self) -> None:
        self._heap: list[list[Any]] = []
        self._seq = itertools.count()

    def schedule(self, when: float, node: Node, token: Any) -> list[Any]:
        entry = [when, next(self._seq), node, token, True]
        heapq.heappush(self._heap, entry)
        return entry

    @staticmethod
    def disarm(entry: list[Any] | None) -> None:
        if entry is not None:
            entry[4] = False

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and (not heap[0][4] or heap[0][2].done):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[tuple[Node, Any]]:
        due = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, node, token, alive = heapq.heappop(heap)
            if alive and not node.done:
                due.append((node, token))
        return due

    def clear(self) -> None:
        self._heap.clear()


class Host:
    """What nodes need from the plan: branch ids, timers, the parent of the root, and the list
    every node of the plan enters when it is made (so the plan can break their cycles at the end)."""

    timers: Timers
    nodes: list[Node]

    def new_branch(self, leaf: Leaf) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def child_done(self, child: Node, result: Result, now: float, out: list[Action]) -> None:
        raise NotImplementedError  # pragma: no cover - interface


class Node:
    __slots__ = ("done", "host", "parent")

    def __init__(self, host: Host) -> None:
        self.host = host
        self.parent: Node | Host = host
        self.done = False
        host.nodes.append(self)

    def start(self, now: float, out: list[Action]) -> None:
        raise NotImplementedError

    def cancel(self, out: list[Action]) -> None:
        """Stop everything underneath without reporting to the parent."""
        self.done = True

    def on_timer(self, token: Any, now: float, out: list[Action]) -> None:
        return

    def child_done(self, child: Node, result: Result, now: float, out: list[Action]) -> None:
        raise NotImplementedError

    def finish(self, result: Result, now: float, out: list[Action]) -> None:
        if self.done:
            return
        self.done = True
        self.parent.child_done(self, result, now, out)

    def adopt(self, child: Node) -> Node:
        child.parent = self
        return child

    def unlink(self) -> None:
        """Let go of the plan and the parent (``CallPlan.dispose``, once the call is over): the
        references that make a plan's graph cyclic. Each kind of node lets go of its own too."""
        self.host = self.parent = DETACHED


DETACHED = Host()  # what a disposed node points at instead of its plan and parent: refers to nothing


class Fixed(Node):
    """Fails at once with a known result (loop, hop limit, refused forward target)."""

    __slots__ = ("result",)

    def __init__(self, host: Host, result: Result) -> None:
        super().__init__(host)
        self.result = result

    def start(self, now: float, out: list[Action]) -> None:
        self.finish(self.result, now, out)


_EVENT_OUTCOME = {
    BranchBusy: Outcome.BUSY,
    BranchNotAnswered: Outcome.NO_ANSWER,
}


class Leaf(Node):
    """Rings one branch, optionally for at most ``timeout`` seconds (then cancels: no answer)."""

    __slots__ = ("branch_id", "ring", "timeout")

    def __init__(self, host: Host, ring: Callable[[int], RingBranch], timeout: float | None) -> None:
        super().__init__(host)
        self.ring = ring
        self.timeout = timeout
        self.branch_id = 0

    def start(self, now: float, out: list[Action]) -> None:
        self.branch_id = self.host.new_branch(self)
        out.append(self.ring(self.branch_id))
        if self.timeout is not None:
            self.host.timers.schedule(now + self.timeout, self, None)

    def on_event(self, event: BranchEvent, now: float, out: list[Action]) -> None:
        if isinstance(event, BranchAnswered):
            self.finish(Result(Outcome.ANSWERED, 200, "OK", branch_id=self.branch_id), now, out)
        elif isinstance(event, BranchFailed):
            self.finish(failure(Outcome.FAILED, status=event.status, reason=event.reason), now, out)
        else:
            self.finish(failure(_EVENT_OUTCOME.get(type(event), Outcome.UNREACHABLE)), now, out)

    def on_timer(self, token: Any, now: float, out: list[Action]) -> None:
        out.append(CancelBranch(self.branch_id))
        self.finish(failure(Outcome.NO_ANSWER), now, out)

    def cancel(self, out: list[Action]) -> None:
        if not self.done:
            self.done = True
            out.append(CancelBranch(self.branch_id))

    def unlink(self) -> None:
        super().unlink()
        self.ring = _rings_nothing  # the closure held the plan


def _rings_nothing(branch_id: int) -> RingBranch:
    raise RuntimeError("a disposed plan rings nothing")


@dataclass(frozen=True, slots=True)
class Slot:
    """A child of a stagger: built when its turn comes (so loop checks see the call so far)."""

    make: Callable[[], Node]
    start_after: float | None
    ring_seconds: float | None


class Stagger(Node):
    """Rings children on a schedule: each starts at ``start_after`` (None: when the previous one's ring
    time ends) and rings for ``ring_seconds`` (None: until it gives up). If nothing is ringing while
    slots are still waiting, the next one starts at once (the schedule shifts earlier). When every
    slot failed, ``last_resort`` (e.g. voicemail) runs, else the best failure goes up."""

    __slots__ = ("active", "armed", "ends", "failures", "last_resort", "pending", "slots", "starts")

    def __init__(self, host: Host, slots: list[Slot], last_resort: Callable[[], Node] | None = None):
        super().__init__(host)
        self.slots = slots
        self.last_resort = last_resort
        self.pending: list[int] = []
        self.starts: dict[int, float] = {}
        self.ends: dict[int, float] = {}
        self.active: dict[int, Node] = {}
        self.failures: list[Result] = []
        self.armed: dict[tuple[str, int], list[Any]] = {}

    def _arm(self, what: str, idx: int, when: float | None) -> None:
        """(Re)arm or, with ``when`` None, disarm the slot's start or end timer."""
        key = (what, idx)
        entry = self.armed.pop(key, None)
        if entry is not None and entry[0] == when and entry[4]:
            self.armed[key] = entry
            return
        Timers.disarm(entry)
        if when is not None:
            self.armed[key] = self.host.timers.schedule(when, self, key)

    def start(self, now: float, out: list[Action]) -> None:
        at = now
        for idx, slot in enumerate(self.slots):
            if slot.start_after is not None:
                at = now + slot.start_after
            self.starts[idx] = at
            self.pending.append(idx)
            at = at + slot.ring_seconds if slot.ring_seconds is not None else math.inf
        self._start_due(now, out)
        if not self.done and not self.active:
            self._idle(now, out)

    def _start_due(self, now: float, out: list[Action]) -> None:
        for idx in list(self.pending):
            if self.done:
                return
            if idx not in self.pending:
                continue
            if self.starts[idx] <= now:
                self._start_slot(idx, now, out)
            else:
                self._arm("start", idx, self.starts[idx] if self.starts[idx] != math.inf else None)

    def _start_slot(self, idx: int, now: float, out: list[Action]) -> None:
        self.pending.remove(idx)
        self._arm("start", idx, None)
        slot = self.slots[idx]
        child = self.adopt(slot.make())
        self.active[idx] = child
        if slot.ring_seconds is not None:
            self.ends[idx] = now + slot.ring_seconds
            self._arm("end", idx, self.ends[idx])
        child.start(now, out)

    def _idle(self, now: float, out: list[Action]) -> None:
        """Nothing ringing: pull the schedule forward, or give up."""
        if self.pending:
            self._pull_forward(now)
            self._start_due(now, out)
            if not self.done and not self.active:
                self._idle(now, out)
            return
        if self.last_resort is not None:
            make, self.last_resort = self.last_resort, None
            child = self.adopt(make())
            self.active[-1] = child
            child.start(now, out)
            return
        self.finish(best_failure(self.failures), now, out)

    def _pull_forward(self, now: float) -> None:
        """Start the first waiting slot now; later ones keep their offsets to it (or follow it)."""
        first = self.starts[self.pending[0]]
        shift = first - now if first != math.inf else None
        prev_end = now
        for n, idx in enumerate(self.pending):
            old = self.starts[idx]
            if n == 0:
                new = now
            elif old != math.inf:
                new = old - shift if shift is not None else old
            else:
                new = prev_end
            self.starts[idx] = new
            ring = self.slots[idx].ring_seconds
            prev_end = new + ring if ring is not None else math.inf

    def child_done(self, child: Node, result: Result, now: float, out: list[Action]) -> None:
        idx = next((i for i, c in self.active.items() if c is child), None)
        if idx is None or self.done:
            return
        del self.active[idx]
        self._arm("end", idx, None)
        if result.outcome is Outcome.ANSWERED or idx == -1:
            self._stop_children(out)
            self.finish(result, now, out)
            return
        self.failures.append(result)
        if not self.active:
            self._idle(now, out)

    def on_timer(self, token: Any, now: float, out: list[Action]) -> None:
        self.armed.pop(token, None)
        what, idx = token
        if what == "start":
            if idx in self.pending and self.starts[idx] <= now:
                self._start_slot(idx, now, out)
        elif idx in self.active and self.ends.get(idx, math.inf) <= now:
            child = self.active.pop(idx)
            child.cancel(out)
            self.failures.append(failure(Outcome.NO_ANSWER))
            if not self.active:
                self._idle(now, out)

    def cancel(self, out: list[Action]) -> None:
        self.done = True
        self._stop_children(out)

    def _stop_children(self, out: list[Action]) -> None:
        for child in self.active.values():
            child.cancel(out)
        self.active.clear()
        self.pending.clear()
        for entry in self.armed.values():
            Timers.disarm(entry)
        self.armed.clear()

    def unlink(self) -> None:
        super().unlink()
        self.slots = []  # their closures hold the plan and the nodes that made them
        self.last_resort = None
        self.active = {}
        self.armed = {}  # timer entries hold their node
