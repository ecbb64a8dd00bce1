"""The batched UDP send (issue 20): a datagram the socket refuses fails alone and is counted; the
others queued in the same loop iteration still leave. Under uvloop, as ``serve`` runs, whose
``sendto`` raises ValueError (family mismatch) instead of reporting to the protocol."""

from __future__ import annotations

import asyncio
import socket

import pytest

from sipcore.transport import TransportManager
from tests.conftest import free_port

uvloop = pytest.importorskip("uvloop")


async def _scenario() -> tuple[list[bytes], list[bool], int, int]:
    manager = TransportManager(lambda data, flow: None)
    await manager.start([f"127.0.0.1:{free_port()}"], [])
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(2.0)
    dest = peer.getsockname()
    try:
        sent = [  # one loop iteration: all four queued before the flush
            manager.send_udp(b"first", dest),
            manager.send_udp(b"v6 on a v4-only socket", ("::1", dest[1])),  # the socket raises
            manager.send_udp(b"not an address", ("127.0", dest[1])),  # refused before the socket
            manager.send_udp(b"second", dest),
        ]
        await asyncio.sleep(0.05)
        got = [await asyncio.to_thread(peer.recv, 100) for _ in range(2)]
    finally:
        peer.close()
        await manager.close()
    return got, sent, manager.stats.udp_send_errors, manager.stats.udp_not_ip


def test_a_refused_datagram_fails_alone() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        got, sent, errors, not_ip = runner.run(_scenario())
    assert got == [b"first", b"second"]
    assert sent == [True, True, False, True]  # the socket's refusal is only known at the flush
    assert (errors, not_ip) == (1, 1)
