"""The periodic collections (server.app.collect_periodically): young passes free short-lived cycles
and move survivors to the old generation; full passes, rarer, free cycles that lived long."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from server.app import collect_periodically


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def _count(kind: str) -> float:
    return REGISTRY.get_sample_value("sipcore_gc_pause_seconds_count", {"kind": kind}) or 0.0


def _freed(kind: str) -> float:
    return REGISTRY.get_sample_value("sipcore_gc_collected_total", {"kind": kind}) or 0.0


@pytest.fixture
def collector_off() -> Iterator[None]:
    """As the server runs: no automatic collection, only the periodic passes."""
    was_enabled = gc.isenabled()
    gc.disable()
    yield
    if was_enabled:
        gc.enable()


async def _run_for(seconds: float, young: float, full: float) -> None:
    task = asyncio.get_running_loop().create_task(collect_periodically(young, full))
    await asyncio.sleep(seconds)
    task.cancel()


def test_young_passes_free_new_cycles_and_age_the_survivors(collector_off: None) -> None:
    async def scenario() -> None:
        garbage = weakref.ref(_Node())  # unreachable at once, kept alive by its cycle
        alive = _Node()
        young, freed, full = _count("young"), _freed("young"), _count("full")
        await _run_for(0.2, young=0.02, full=3600)
        assert garbage() is None and _count("young") > young and _freed("young") > freed
        assert _count("full") == full
        assert any(o is alive for o in gc.get_objects(2))  # a survivor: the old generation's
        assert not any(o is alive for o in gc.get_objects(0))

    asyncio.run(scenario())


def test_a_cycle_that_dies_old_is_freed_by_the_full_pass_only(collector_off: None) -> None:
    async def scenario() -> None:
        holder = [_Node()]
        old = weakref.ref(holder[0])
        await _run_for(0.1, young=0.02, full=3600)  # survives young passes: now old
        holder.clear()  # dies old, still in its cycle
        await _run_for(0.1, young=0.02, full=3600)
        assert old() is not None  # young passes do not walk the old generation
        full = _count("full")
        await _run_for(0.15, young=0.02, full=0.05)
        assert old() is None and _count("full") > full

    asyncio.run(scenario())
