"""The same calls with SIPp at both ends (real third-party SIP stacks): an internal call between two
registered SIPp phones, and an outbound call whose carrier-side SIPp checks the normalised
Request-URI, From and P-Asserted-Identity (``check_it``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.proxy_sip import sipp_party
from tests.proxy_sip.configs import TRUNK_HOST, password
from tests.proxy_sip.conftest import Platform, platform

pytestmark = pytest.mark.timeout(30)  # every wait inside is bounded; this bounds the whole test


@pytest.fixture(autouse=True)
async def _no_sipp_left_behind() -> AsyncIterator[None]:
    yield
    await sipp_party.stop_all()


async def test_sipp_internal_call(proxy: Platform, sipp_binary: str, tmp_path: Path) -> None:
    target = f"127.0.0.1:{proxy.port}"
    phone_port = free_port()
    await sipp_party.register(sipp_binary, tmp_path, target, "1002", password("1002"), phone_port)
    uas = await sipp_party.start(sipp_binary, tmp_path / "uas", "phone_uas.xml", port=phone_port)
    inf = sipp_party.credentials(tmp_path, "1001", password("1001"))
    uac = await sipp_party.start(sipp_binary, tmp_path / "uac", "uac.xml", target, "-inf", str(inf), "-s", "1002",
                                 port=free_port(), expect={"PROXY": target})  # fmt: skip
    assert await uac.result() == 0, uac.errors()
    assert await uas.result() == 0, uas.errors()
    assert [(e.direction, e.disposition, e.hangup_by) for e in proxy.ended] == [
        ("internal", "answered", "caller")
    ]


async def test_sipp_outbound_call_checked_by_the_carrier(sipp_binary: str, tmp_path: Path) -> None:
    trunk_port = free_port()
    async with platform(tmp_path / "app", trunk_port=trunk_port) as proxy:
        target = f"127.0.0.1:{proxy.port}"
        carrier = await sipp_party.start(sipp_binary, tmp_path / "carrier", "trunk_uas.xml", host=TRUNK_HOST,
                                         port=trunk_port, expect={"NUMBER": "+33612345678", "CALLER": "+33184000001"})  # fmt: skip
        inf = sipp_party.credentials(tmp_path, "1001", password("1001"))
        uac = await sipp_party.start(sipp_binary, tmp_path / "uac", "uac.xml", target, "-inf", str(inf),
                                     "-s", "0612345678", port=free_port(), expect={"PROXY": target})  # fmt: skip
        assert await uac.result() == 0, uac.errors()
        assert await carrier.result() == 0, carrier.errors()
        assert [(e.direction, e.normalised) for e in proxy.ended] == [("outbound", "+33612345678")]
