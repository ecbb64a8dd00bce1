"""CallPlan.dispose: once a call is over its plan's graph (nodes, their parents, children, the plan
and the closures between them) is freed by reference counting alone, with nothing left for the
cyclic collector, whose passes over a busy proxy's heap stall it."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator

import pytest

from routing import (
    BranchAnswered,
    BranchBusy,
    CallState,
    ForwardKind,
    ForwardRule,
    ForwardTarget,
    plan_incoming,
)
from routing.plan_nodes import Node

from .helpers import Driver, account, platform
from .test_plan_account import CALLER


@pytest.fixture
def saving_garbage() -> Iterator[None]:
    """The collector runs only when asked, and keeps what it finds unreachable in gc.garbage."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield
    finally:
        gc.collect()
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()


def _answered_after_busy(d: Driver) -> None:
    d.event(d.branch_to("2002"), BranchBusy(), 1)  # forwarded: the first child is let go of
    d.event(d.branch_to("2003"), BranchAnswered(), 3)


def _voicemail_after_no_answer(d: Driver) -> None:
    d.advance(40)  # the ring time runs out (a timer): voicemail, the last resort
    d.event(d.branch_to("voicemail:acme-2002"), BranchAnswered(), 41)


def _cancelled_while_ringing(d: Driver) -> None:
    d.plan.cancel()  # timers still armed


def _call(dispose: bool, scenario: Callable[[Driver], None] = _answered_after_busy) -> None:
    busy = ForwardRule(ForwardKind.BUSY, (ForwardTarget("2003", 20),))
    setup = platform(account("2002", voicemail=True, forwards=(busy,)), account("2003"))
    d = Driver(plan_incoming(setup, setup.customers["acme"].accounts["2002"], CALLER, CallState()))
    d.start(0)
    scenario(d)
    assert d.plan.finished
    if dispose:
        d.plan.dispose()


def _nodes(found: list[object]) -> list[object]:
    return [o for o in found if isinstance(o, Node)]


@pytest.mark.parametrize(
    "scenario", [_answered_after_busy, _voicemail_after_no_answer, _cancelled_while_ringing]
)
def test_a_disposed_plan_leaves_no_cycle(saving_garbage: None, scenario: Callable[[Driver], None]) -> None:
    _call(dispose=True, scenario=scenario)
    gc.collect()
    assert _nodes(gc.garbage) == []


def test_without_dispose_the_nodes_wait_for_the_collector(saving_garbage: None) -> None:
    """The test above can fail: a plan left alone is cyclic garbage."""
    _call(dispose=False)
    gc.collect()
    assert _nodes(gc.garbage)
