"""baresip 1.0 (Debian) over TLS: it registers with digest on the TLS port (verifying the server's
certificate against the test CA), calls a phone on UDP and is called back over its own TLS connection."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.media_sip.baresip import baresip, baresip_binary
from tests.proxy_sip import sipp_party
from tests.proxy_sip.configs import password
from tests.proxy_sip.ua import Ua
from tests.secure_sip.conftest import SecurePlatform

pytestmark = [
    pytest.mark.timeout(40),
    pytest.mark.skipif(
        baresip_binary() is None, reason="baresip is not installed (apt-get install baresip-core)"
    ),
]


async def test_baresip_registers_calls_and_is_called_over_tls(
    secure: SecurePlatform, tmp_path: Path, sipp_binary: str
) -> None:
    desk = await Ua.open("1002", password("1002"), ("127.0.0.1", secure.port))
    try:
        await desk.register()
        async with baresip(tmp_path, user="1001", server_port=secure.tls_port, transport="tls",
                           cafile=secure.pki.ca) as phone:  # fmt: skip
            assert secure.app.sip.secure.stats.tls_handshakes >= 1
            # baresip -> desk phone
            resp = await phone.command("dial", f"sip:1002@127.0.0.1:{secure.tls_port};transport=tls")
            assert resp["ok"], resp
            invite = await desk.request("INVITE", timeout=8)
            assert any("transport=tls" in v for v in invite.headers.get_all("record-route"))
            await phone.event("CALL_ESTABLISHED", timeout=8)
            await phone.command("hangup")
            await desk.request("BYE", timeout=5)
            await phone.event("CALL_CLOSED", timeout=5)
            # a SIPp phone on UDP -> baresip (the 200's first Record-Route: our entry facing baresip), over the TLS connection baresip registered on
            target = f"127.0.0.1:{secure.port}"
            inf = sipp_party.credentials(tmp_path, "1003", password("1003"))
            uac = await sipp_party.start(sipp_binary, tmp_path / "uac", "uac.xml", target, "-inf", str(inf), "-s", "1001",
                                         port=free_port(), expect={"PROXY": f"127.0.0.1:{secure.tls_port};transport=tls"})  # fmt: skip
            await phone.event("CALL_INCOMING", timeout=8)
            assert (await phone.command("accept"))["ok"]
            assert await uac.result() == 0, uac.errors()  # answered, then hung up by SIPp's BYE
            await phone.event("CALL_CLOSED", timeout=5, pred=lambda e: e.get("direction") == "incoming")
    finally:
        desk.close()
        await sipp_party.stop_all()
