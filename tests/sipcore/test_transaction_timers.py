"""TimerConfig validation and the TimerWheel, held to a plain model: due = deadline <= now."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipcore.timers import TimerConfig, TimerWheel


@dataclass(eq=False)
class Item:
    deadline: float | None
    done: bool = False
    timer_slot: int | None = field(default=None)

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
    wheel: TimerWheel[Item] = TimerWheel()
    a, b, c = Item(3.0), Item(1.0), Item(2.0)
    for item in (a, b, c, b):
        wheel.schedule(item)
    assert len(wheel) == 3  # b not filed twice
    assert wheel.peek() == 1.0
    assert wheel.pop_due(2.5) == [b, c]
    assert wheel.pop_due(2.5) == []
    assert wheel.peek() == 3.0
    assert wheel.pop_due(3.0) == [a]
    assert wheel.peek() is None and len(wheel) == 0


def test_an_item_is_due_at_its_own_deadline_not_its_slots() -> None:
    wheel: TimerWheel[Item] = TimerWheel(width=1.0)
    early, late = Item(5.2), Item(5.7)
    wheel.schedule(late)
    wheel.schedule(early)
    assert wheel.pop_due(5.1) == []
    assert wheel.pop_due(5.5) == [early]
    assert wheel.peek() == 5.7
    assert wheel.pop_due(5.69) == [] and wheel.pop_due(5.7) == [late]


def test_a_deadline_moves_either_way_and_the_old_one_is_forgotten() -> None:
    wheel: TimerWheel[Item] = TimerWheel()
    item = Item(10.0)
    wheel.schedule(item)
    item.deadline = 5.0
    wheel.schedule(item)
    assert wheel.peek() == 5.0
    assert wheel.pop_due(5.0) == [item]
    assert wheel.pop_due(10.0) == []  # not filed under 10.0 as well
    item.deadline = 20.0
    wheel.schedule(item)
    item.deadline = 30.0  # moved later: no wake-up at 20.0 (a heap left one)
    wheel.schedule(item)
    assert wheel.peek() == 30.0
    assert wheel.pop_due(29.9) == [] and wheel.pop_due(30.0) == [item]
    item.deadline = 40.001  # within the same slot
    wheel.schedule(item)
    item.deadline = 40.004
    wheel.schedule(item)
    assert len(wheel) == 1 and wheel.peek() == 40.004


def test_finished_and_idle_items_are_let_go_at_once() -> None:
    wheel: TimerWheel[Item] = TimerWheel()
    items = [Item(float(i)) for i in range(10)]
    for item in items:
        wheel.schedule(item)
    idle = Item(None)
    wheel.schedule(idle)  # nothing to wait for: not filed
    for item in items[:7]:
        item.done = True
        wheel.schedule(item)  # the layer's _settle on a terminated transaction
    assert len(wheel) == 3 and all(item.timer_slot is None for item in (*items[:7], idle))
    assert wheel.peek() == 7.0
    assert wheel.pop_due(100.0) == items[7:]


def test_the_wheel_holds_no_more_slots_than_its_horizon() -> None:
    """Many items moved and cancelled over a long run: what the wheel holds follows what is filed
    now, not everything ever filed (each slot's number is in its heap once)."""
    wheel: TimerWheel[Item] = TimerWheel(width=0.01)
    items = [Item(None) for _ in range(50)]
    now = 0.0
    for step in range(20_000):
        now = step * 0.003
        item = items[step % 50]
        item.deadline = now + (0.5 if step % 3 else 32.0)
        wheel.schedule(item)
        if step % 7 == 0:
            items[(step * 11) % 50].done = True
            wheel.schedule(items[(step * 11) % 50])
            items[(step * 11) % 50].done = False
        wheel.pop_due(now)
    assert len(wheel) <= 50
    assert len(wheel._order) == len(wheel._slots) <= 32.0 / 0.01 + 2


def test_a_slot_width_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        TimerWheel(width=0)


# One operation on item i: (kind, i, value). Deadlines on a coarse grid so ties and shared slots happen.
_OPS = st.lists(
    st.tuples(
        st.sampled_from(["schedule", "finish", "idle", "pop", "peek"]),
        st.integers(0, 7),
        st.integers(0, 400).map(lambda k: k * 0.0025),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(_OPS, st.sampled_from([0.001, 0.01, 0.05, 1.0]))
def test_the_wheel_agrees_with_a_plain_model(ops: list[tuple[str, int, float]], width: float) -> None:
    """The model: each item filed under its last scheduled deadline; due when that is <= now; popped
    in deadline order (ties in any order)."""
    wheel: TimerWheel[Item] = TimerWheel(width=width)
    items = [Item(None) for _ in range(8)]
    filed: dict[int, float] = {}
    now = 0.0
    for kind, i, value in ops:
        item = items[i]
        if kind == "schedule":
            item.deadline, item.done = now + value, False
            wheel.schedule(item)
            filed[i] = item.deadline
        elif kind in ("finish", "idle"):
            item.done, item.deadline = (True, item.deadline) if kind == "finish" else (False, None)
            wheel.schedule(item)
            filed.pop(i, None)
        elif kind == "pop":
            now += value
            got = wheel.pop_due(now)
            want = sorted((d, i) for i, d in filed.items() if d <= now)
            assert [filed[items.index(it)] for it in got] == [d for d, _ in want]
            assert sorted(items.index(it) for it in got) == sorted(i for _, i in want)
            for it in got:
                del filed[items.index(it)]
        assert wheel.peek() == (min(filed.values()) if filed else None)
        assert len(wheel) == len(filed)
        assert all((items[i].timer_slot is not None) == (i in filed) for i in range(8))
