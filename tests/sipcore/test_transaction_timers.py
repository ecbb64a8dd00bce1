"""TimerConfig validation and the DeadlineHeap's lazy invalidation."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sipcore.timers import DeadlineHeap, TimerConfig


@dataclass(eq=False)
class Item:
    deadline: float | None
    done: bool = False
    heap_at: float | None = field(default=None)

    def next_deadline(self) -> float | None:
        return self.deadline

    @property
    def terminated(self) -> bool:
        return self.done


def test_defaults_are_the_rfc_values() -> None:
    cfg = TimerConfig()
    assert (cfg.t1, cfg.t2, cfg.t4, cfg.timer_d, cfg.timeout, cfg.trying_delay) == (
        0.5,
        4.0,
        5.0,
        32.0,
        32.0,
        0.2,
    )


@pytest.mark.parametrize(
    "kw", [{"t1": 0}, {"t1": 1.0, "t2": 0.5}, {"t4": -1}, {"timer_d": -0.1}, {"trying_delay": -0.2}]
)
def test_invalid_timers_are_refused(kw: dict) -> None:
    with pytest.raises(ValueError, match="invalid"):
        TimerConfig(**kw)


def test_pop_due_returns_items_in_deadline_order_once() -> None:
    heap: DeadlineHeap[Item] = DeadlineHeap()
    a, b, c = Item(3.0), Item(1.0), Item(2.0)
    for item in (a, b, c, b):
        heap.schedule(item)
    assert len(heap) == 3  # b not queued twice at the same deadline
    assert heap.peek() == 1.0
    assert heap.pop_due(2.5) == [b, c]
    assert heap.pop_due(2.5) == []
    assert heap.pop_due(3.0) == [a]
    assert heap.peek() is None


def test_earlier_deadline_supersedes_and_later_one_is_requeued_by_the_caller() -> None:
    heap: DeadlineHeap[Item] = DeadlineHeap()
    item = Item(10.0)
    heap.schedule(item)
    item.deadline = 5.0
    heap.schedule(item)
    assert heap.pop_due(5.0) == [item]
    assert heap.pop_due(10.0) == []  # the superseded 10.0 entry is stale
    item.deadline = 20.0
    heap.schedule(item)
    item.deadline = 30.0  # moved later: the 20.0 entry wakes it early, the caller re-schedules
    heap.schedule(item)
    assert heap.pop_due(20.0) == [item]
    heap.schedule(item)
    assert heap.pop_due(29.9) == [] and heap.pop_due(30.0) == [item]


def test_terminated_and_idle_items_are_skipped_and_compacted() -> None:
    heap: DeadlineHeap[Item] = DeadlineHeap()
    items = [Item(float(i)) for i in range(10)]
    for item in items:
        heap.schedule(item)
    heap.schedule(Item(None))  # nothing to wait for: not queued
    for item in items[:7]:
        item.done = True
    heap.compact()
    assert len(heap) == 3
    assert heap.pop_due(100.0) == items[7:]
