"""SIPp over TLS (through tls_tunnel: Debian's SIPp has no TLS): REGISTER with digest over TLS, then a
call from the TLS SIPp phone to a SIPp UAS phone on UDP, Record-Routed with transport=tls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.proxy_sip import sipp_party
from tests.proxy_sip.configs import password
from tests.secure_sip.conftest import SecurePlatform
from tests.secure_sip.tls_tunnel import socat_binary, tls_scenario, tls_tunnel

pytestmark = [
    pytest.mark.timeout(40),
    pytest.mark.skipif(socat_binary() is None, reason="socat is not installed (apt-get install socat)"),
]


@pytest.fixture(autouse=True)
async def _no_sipp_left_behind() -> AsyncIterator[None]:
    yield
    await sipp_party.stop_all()


async def test_sipp_registers_and_calls_over_tls(
    secure: SecurePlatform, sipp_binary: str, tmp_path: Path
) -> None:
    stats = secure.app.sip.secure.stats
    async with tls_tunnel(secure.tls_port, secure.pki.ca) as port:
        target = f"127.0.0.1:{port}"
        server = f"127.0.0.1:{secure.tls_port}"
        # REGISTER with digest over TLS: 401, then 200
        inf = sipp_party.credentials(tmp_path, "1001", password("1001"))
        reg = await sipp_party.start(sipp_binary, tmp_path / "reg", str(tls_scenario("register_auth.xml", tmp_path, server)),
                                     target, "-t", "t1", "-auth_uri", server, "-inf", str(inf), port=free_port())  # fmt: skip
        assert await reg.result() == 0, reg.errors()
        # the callee: a SIPp phone on UDP
        phone_port = free_port()
        udp = f"127.0.0.1:{secure.port}"
        await sipp_party.register(sipp_binary, tmp_path, udp, "1002", password("1002"), phone_port)
        uas = await sipp_party.start(sipp_binary, tmp_path / "uas", "phone_uas.xml", port=phone_port)
        # the caller over TLS; the 200's top Record-Route is our entry facing it
        uac = await sipp_party.start(sipp_binary, tmp_path / "uac", str(tls_scenario("uac.xml", tmp_path, server)), target,
                                     "-t", "t1", "-auth_uri", server, "-inf", str(inf), "-s", "1002", port=free_port(),
                                     expect={"PROXY": f"127.0.0.1:{secure.tls_port};transport=tls"})  # fmt: skip
        assert await uac.result() == 0, uac.errors()
        assert await uas.result() == 0, uas.errors()
    assert stats.tls_handshakes >= 2 and stats.tls_handshake_failed == 0
