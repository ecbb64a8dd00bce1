"""Two servers must not share a UDP port by accident: the second one has to fail to start.

Found while benchmarking: another helper's `sipcore serve` was started on the same UDP port as ours and
both came up; Linux then delivers each datagram to one socket only, so registrations landed in the
wrong process and both benchmarks were wrong without any error.
"""

from __future__ import annotations

import pytest

from server.sip_server import ServerSettings, SipServer
from tests.conftest import free_port


async def test_second_server_on_the_same_udp_port_fails_to_start() -> None:
    port = free_port()
    first = SipServer(ServerSettings(udp=[f"127.0.0.1:{port}"], tcp=[], metrics_address=None))
    await first.start()
    second = SipServer(ServerSettings(udp=[f"127.0.0.1:{port}"], tcp=[], metrics_address=None))
    try:
        with pytest.raises(OSError):
            await second.start()
    finally:
        await second.close()
        await first.close()
