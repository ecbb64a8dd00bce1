"""Bounded waits that never lose a cancellation: the project's replacement for ``asyncio.wait_for``.

On Python 3.11, ``asyncio.wait_for`` returns the awaited result when the waiting task is cancelled in
the same loop iteration as that result arrives (CPython gh-86296, rewritten in 3.12): the cancellation
is dropped. A loop of ``wait_for(event.wait(), t)`` cancelled just as its event is set (the location
store's write-behind woken by a REGISTER as the server stops; a test's fake carrier answering a
refresh) then runs on, and whoever awaits it waits for ever. ``asyncio.timeout`` counts the
cancellations it did not make (``Task.uncancel``) and has no such window; ``within`` is what 3.12's
``wait_for`` became. ``asyncio.wait_for`` is banned by the linter (ruff TID251).

The close paths' ``task.cancel(); await task`` with CancelledError suppressed has the mirror fault: it
also swallows a cancellation of the closer itself; ``cancel_and_wait`` lets that one through.
``Background`` holds the tasks an object starts and does not await (the loop holds tasks weakly) until
they end, and ends them when its owner closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


async def within(aw: Awaitable[T], timeout: float | None) -> T:
    """``aw``'s result, or TimeoutError after ``timeout`` seconds (None: no bound); ``aw`` is
    cancelled on the timeout and on a cancellation of the caller, which always propagates."""
    async with asyncio.timeout(timeout):
        return await aw


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Whether ``event`` is set, waiting up to ``timeout`` seconds for it."""
    try:
        return await within(event.wait(), timeout)
    except TimeoutError:
        return event.is_set()


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has ended; a cancellation of the caller still propagates."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


class Background:
    """Tasks started and not awaited by their starter, held until they end."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        """The tasks still running (a copy: each ending removes itself)."""
        return iter(list(self._tasks))

    async def cancel(self) -> None:
        """Cancel each task still running and wait until it has ended."""
        for task in self:
            await cancel_and_wait(task)
