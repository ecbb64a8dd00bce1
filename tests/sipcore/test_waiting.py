"""The bounded waits keep a cancellation that arrives in the same loop iteration as the awaited
result (where 3.11's ``asyncio.wait_for`` returned the result and dropped it), and bound like it."""

from __future__ import annotations

import asyncio

import pytest

from sipcore.waiting import Background, cancel_and_wait, wait_set, within

pytestmark = pytest.mark.timeout(10)


async def _loop_cancelled_as_woken(wait: object) -> tuple[bool, int]:
    """A loop woken by an event, cancelled in the very iteration its event is set: whether the
    cancellation ended it, and how many wake-ups it went through."""
    event = asyncio.Event()
    woken = 0

    async def loop() -> None:
        nonlocal woken
        while True:
            await wait(event)  # type: ignore[operator]
            event.clear()
            woken += 1

    task = asyncio.get_running_loop().create_task(loop())
    await asyncio.sleep(0)  # the loop is waiting
    event.set()
    task.cancel()
    for _ in range(3):  # later wake-ups, as a store's writers would keep making
        await asyncio.sleep(0.01)
        event.set()
    await asyncio.sleep(0.01)  # the last wake-up taken, so that a second cancel crosses nothing
    cancelled = task.done() and task.cancelled()
    if not task.done():
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return cancelled, woken


async def test_wait_set_keeps_a_cancellation_that_crosses_the_wake_up() -> None:
    assert await _loop_cancelled_as_woken(lambda e: wait_set(e, 5.0)) == (True, 0)


async def test_within_keeps_a_cancellation_that_crosses_the_result() -> None:
    assert await _loop_cancelled_as_woken(lambda e: within(e.wait(), 5.0)) == (True, 0)


async def test_the_3_11_wait_for_drops_it_which_is_why_it_is_banned() -> None:
    """The reference: the race the two helpers close (fixed in CPython 3.12, whose wait_for is
    ``within``)."""
    import sys

    if sys.version_info >= (3, 12):
        pytest.skip("wait_for keeps the cancellation from 3.12 on")
    wait_for = asyncio.wait_for  # noqa: TID251 - the behaviour under test
    assert await _loop_cancelled_as_woken(lambda e: wait_for(e.wait(), 5.0)) == (False, 4)


async def test_wait_set_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_set(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_set(event, 5.0) is True
    assert await wait_set(event, 0) is True  # already set: no wait


async def test_within_returns_bounds_and_cancels_the_awaited() -> None:
    assert await within(asyncio.sleep(0, "x"), 1.0) == "x"
    assert await within(asyncio.sleep(0, "y"), None) == "y"
    inner = asyncio.get_running_loop().create_task(asyncio.sleep(10))
    with pytest.raises(TimeoutError):
        await within(inner, 0.01)
    assert inner.cancelled()
    with pytest.raises(ValueError, match="boom"):
        await within(_raise(ValueError("boom")), 1.0)


async def _raise(exc: Exception) -> None:
    raise exc


async def test_cancel_and_wait_ends_the_task_and_lets_the_callers_cancellation_through() -> None:
    loop = asyncio.get_running_loop()
    plain = loop.create_task(asyncio.sleep(10))
    await asyncio.sleep(0)
    await cancel_and_wait(plain)
    assert plain.cancelled()
    await cancel_and_wait(plain)  # already ended: nothing to do

    cleaned = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0.05)  # a cleanup that takes a while
            cleaned.set()

    slow = loop.create_task(slow_to_stop())
    await asyncio.sleep(0)
    closer = loop.create_task(cancel_and_wait(slow))
    await asyncio.sleep(0.01)
    closer.cancel()  # the closer is itself cancelled while it waits
    with pytest.raises(asyncio.CancelledError):
        await closer
    assert closer.cancelled()  # where suppress(CancelledError) would have returned normally
    await wait_set(cleaned, 5.0)
    assert slow.cancelled()


async def test_background_holds_its_tasks_until_they_end_and_cancels_the_rest() -> None:
    background = Background()
    quick = background.spawn(asyncio.sleep(0, "done"))
    slow = background.spawn(asyncio.sleep(10))
    assert set(background) == {quick, slow}
    assert await quick == "done"
    await asyncio.sleep(0)  # its done callback ran
    assert list(background) == [slow]
    await background.cancel()
    assert slow.cancelled() and list(background) == []
