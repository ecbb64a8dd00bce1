"""A TCP send to a host *name* (issue 20, found by tests/server/test_mutated_traffic.py): under uvloop,
as `serve` runs, create_connection cancelled while it resolves a name left the lookup's failure
unretrieved ("Future exception was never retrieved" in the server's log), and a name IDNA cannot
encode raised ValueError out of send_tcp. Names are now resolved first, and both fail quietly."""

from __future__ import annotations

import asyncio
import gc

import pytest

from sipcore.transport import TransportManager
from tests.conftest import free_port

uvloop = pytest.importorskip("uvloop")


async def _scenario() -> tuple[list[bool], list[dict[str, object]]]:
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    manager = TransportManager(lambda data, flow: None)
    await manager.start([], [f"127.0.0.1:{free_port()}"])
    try:
        # sends cancelled while their names resolve (a worker stopping, a caller giving up)
        tasks = [
            loop.create_task(manager.send_tcp(b"x", (f"no-such-host-{i}.invalid", 5060))) for i in range(20)
        ]
        await asyncio.sleep(0.0005)
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        results = [
            await manager.send_tcp(b"x", ("a..b", 5060)),  # IDNA refuses an empty label
            await manager.send_tcp(b"x", ("x" * 70 + ".example", 5060)),  # and a 64+ character one
            await manager.send_tcp(b"x", ("no-such-host.invalid", 5060)),
        ]
        await asyncio.sleep(1.0)  # the cancelled lookups end meanwhile
        gc.collect()
        await asyncio.sleep(0)
    finally:
        await manager.close()
    return results, unhandled


def test_tcp_sends_to_bad_names_fail_quietly() -> None:
    results, unhandled = uvloop.run(_scenario())
    gc.collect()
    assert results == [False, False, False]
    assert unhandled == []
