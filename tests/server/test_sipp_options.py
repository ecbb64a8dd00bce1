"""SIPp sends OPTIONS over UDP and TCP to the live server: every one answered 200 with Allow."""

from __future__ import annotations

import pytest

from server.sip_server import SipServer
from tests.sipp.runner import run_sipp

pytestmark = pytest.mark.sipp


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_sipp_options(sip_server: SipServer, sipp_binary: str, transport: str) -> None:
    addrs = sip_server.transports.udp_addresses if transport == "u1" else sip_server.transports.tcp_addresses
    host, port = addrs[0]
    result = await run_sipp(sipp_binary, f"{host}:{port}", "options.xml", transport, calls=300, rate=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.successful == 300 and result.failed == 0
