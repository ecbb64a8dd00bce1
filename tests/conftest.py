"""Shared fixtures: free ports, an in-process SIP server on loopback, the SIPp binary."""

from __future__ import annotations

import gc
import os
import random
import shutil
import socket
from collections.abc import AsyncIterator

import pytest

from server.sip_server import ServerSettings, SipServer


@pytest.fixture(autouse=True)
def _restore_gc():
    """An Application in the test process freezes the heap and disables automatic collection (as
    the server does); give the next test the interpreter's normal collector back."""
    yield
    gc.unfreeze()
    gc.enable()


_PICKED: set[int] = set()


def _free_both(port: int) -> bool:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u,
    ):
        try:
            t.bind(("127.0.0.1", port))
            u.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1, below the kernel's ephemeral range: a port the
    kernel hands out to some client socket (bound to port 0) between our check and the server's bind
    made a test fail now and then ("Address already in use" from baresip); ports under 32768 are
    never handed out that way, and each is given to one caller per session."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        if port not in _PICKED and _free_both(port):
            _PICKED.add(port)
            return port
    for _ in range(50):  # the range is crowded: fall back to one the kernel picks
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
        if _free_both(port):
            return port
    raise RuntimeError("no free port")


@pytest.fixture
async def sip_server() -> AsyncIterator[SipServer]:
    port = free_port()
    server = SipServer(
        ServerSettings(udp=[f"127.0.0.1:{port}"], tcp=[f"127.0.0.1:{port}"], metrics_address=None)
    )
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture(scope="session")
def sipp_binary() -> str:
    """Path of sipp; in CI a missing sipp is a failure, elsewhere the SIPp tests are skipped."""
    path = shutil.which("sipp")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("sipp is not installed (apt-get install sip-tester)")
        pytest.skip("sipp is not installed (apt-get install sip-tester)")
    return path
