"""`TransportManager.send_tcp_soon`: a TCP send that opens its connection in the background (a response
or request to a sent-by with no connection yet). The manager holds the task until it ends (the loop
holds tasks weakly) and close() ends the ones still connecting, instead of leaving them to run past
the transports or to be destroyed pending when the loop closes."""

from __future__ import annotations

import asyncio
import socket

import pytest

from sipcore.transport import TransportManager
from sipcore.waiting import within
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(20)


def _sends() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "TransportManager.send_tcp"]


async def test_a_background_send_arrives_and_close_ends_one_still_connecting() -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.put_nowait(await reader.readexactly(7))
        writer.close()

    accepting = await asyncio.start_server(peer, "127.0.0.1", 0)
    full = socket.socket()  # a peer whose accept queue is full: a connect to it waits
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    filler = socket.create_connection(full.getsockname())
    manager = TransportManager(lambda data, flow: None)
    await manager.start([], [f"127.0.0.1:{free_port()}"])
    try:
        manager.send_tcp_soon(b"OPTIONS", accepting.sockets[0].getsockname()[:2])
        assert await within(received.get(), 5) == b"OPTIONS"
        manager.send_tcp_soon(b"OPTIONS", full.getsockname())
        await asyncio.sleep(0.1)
        assert len(_sends()) == 1  # still connecting
    finally:
        await manager.close()
        accepting.close()
        filler.close()
        full.close()
    assert _sends() == []
