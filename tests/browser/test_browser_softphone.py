"""A browser softphone over secure WebSocket (RFC 7118): SIP.js from npm in headless Chromium registers
with digest over WSS, calls a SIPp phone on UDP that answers (the browser's DTLS-SRTP offer reaches
the phone end to end, the phone's WebRTC-shaped answer reaches the browser, which then hangs up), and
is called by a SIPp phone over its WebSocket connection (its Contact host is .invalid).

Needs node, Chromium and ``npm ci`` here; skipped when they are absent, except in CI (``CI`` set),
where .ci/run installs them and a missing one is a failure."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sipcore.waiting import within
from tests.conftest import free_port
from tests.proxy_sip import sipp_party
from tests.proxy_sip.configs import DOMAIN, password
from tests.secure_sip.conftest import SecurePlatform

HERE = Path(__file__).parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.timeout(60)


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM}"
    if (
        not (HERE / "node_modules" / "sip.js").is_dir()
        or not (HERE / "node_modules" / "playwright-core").is_dir()
    ):
        return "run `npm ci` in tests/browser"
    return None


@pytest.fixture
def browser_ready() -> None:
    why = _missing()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"browser softphone test: {why} (.ci/run installs it)")
        pytest.skip(why)


@pytest.fixture(autouse=True)
async def _no_sipp_left_behind() -> AsyncIterator[None]:
    yield
    await sipp_party.stop_all()


def _scenario(name: str, directory: Path) -> str:
    """A copy of a scenario here (sipp_party.start renders ``@NAME@`` placeholders in place)."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / name, directory / name)
    return str(directory / name)


async def _softphone(secure: SecurePlatform, number: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "node", str(HERE / "softphone.mjs"), f"wss://127.0.0.1:{secure.wss_port}", "1001", password("1001"),
        DOMAIN, number, cwd=HERE, env=dict(os.environ, CHROMIUM=CHROMIUM),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def _result(proc: asyncio.subprocess.Process, seen: bytes = b"") -> tuple[dict[str, object], str]:
    assert proc.stdout is not None
    try:
        rest = await within(proc.stdout.read(), 45)
        await proc.wait()
    except TimeoutError:
        proc.kill()
        rest = await proc.stdout.read()
        await proc.wait()
    out = (seen + rest).decode(errors="replace")
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    result = next((x for x in lines if x.get("step") == "result"), None)
    assert proc.returncode == 0 and result is not None, out[-4000:]
    return result, out


async def test_browser_registers_over_wss_and_calls_a_sipp_phone(
    browser_ready: None, secure: SecurePlatform, sipp_binary: str, tmp_path: Path
) -> None:
    phone_port = free_port()
    udp = f"127.0.0.1:{secure.port}"
    await sipp_party.register(sipp_binary, tmp_path, udp, "1002", password("1002"), phone_port)
    uas = await sipp_party.start(sipp_binary, tmp_path / "uas", _scenario("webrtc_uas.xml", tmp_path / "uas"), port=phone_port,
                                 timeout=30)  # fmt: skip
    result, _ = await _result(await _softphone(secure, "1002"))
    assert result["steps"] == ["connected", "registered", "established", "hung_up", "unregistered"]
    assert await uas.result() == 0, uas.errors()  # it saw the WebRTC offer, answered, got ACK and BYE
    stats = secure.app.sip.secure.stats
    assert stats.ws_upgraded >= 1 and stats.tls_handshakes >= 1


async def test_browser_is_called_by_a_sipp_phone_over_its_websocket(
    browser_ready: None, secure: SecurePlatform, sipp_binary: str, tmp_path: Path
) -> None:
    proc = await _softphone(secure, "answer")
    assert proc.stdout is not None
    seen = b""
    while b'"text":"READY"' not in seen:  # registered: now call it
        line = await within(proc.stdout.readline(), 30)
        if not line:
            break
        seen += line
    target = f"127.0.0.1:{secure.port}"
    inf = sipp_party.credentials(tmp_path, "1003", password("1003"))
    uac = await sipp_party.start(sipp_binary, tmp_path / "uac", _scenario("webrtc_uac.xml", tmp_path / "uac"), target, "-inf",
                                 str(inf), "-s", "1001", port=free_port(),
                                 expect={"PROXY": f"127.0.0.1:{secure.wss_port};transport=wss"})  # fmt: skip
    # the browser's WebRTC answer, Record-Routed by our WSS side first; then ACK and BYE through us
    assert await uac.result(timeout=30) == 0, uac.errors()
    result, out = await _result(proc, seen)
    assert result["steps"] == ["connected", "registered", "ringing", "established", "hung_up_by_caller",
                               "unregistered"], out[-3000:]  # fmt: skip
