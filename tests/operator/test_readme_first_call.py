"""Issue 17, item 2: the README's first call works against the shipped example.yaml as it is: 1001
and 1002 register from this machine (127.0.0.1), 1001 dials 1002 and 1002 rings. Why a test: the
example's trunk once took 127.0.0.1 as the carrier, so a softphone on the box looked like an inbound
carrier call and the first call failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.loader import default_config_path
from server.app import Application, load_application_config
from tests.conftest import free_port
from tests.proxy_sip.ua import Ua

pytestmark = pytest.mark.timeout(30)


def example_on(tmp_path: Path, port: int) -> Path:
    """example.yaml with only what a test must change: loopback ports, no metrics, state in tmp."""
    example = default_config_path()
    text = example.read_text(encoding="utf-8")
    for old, new in (
        ('udp: ["0.0.0.0:5060"]', f'udp: ["127.0.0.1:{port}"]'),
        ('tcp: ["0.0.0.0:5070"]', f'tcp: ["127.0.0.1:{port}"]'),
        ("metrics: 127.0.0.1:9090", "metrics: null"),
        ("state_dir: var", f"state_dir: {tmp_path / 'var'}"),
        ("carrier: rates/example.csv", f"carrier: {example.parent / 'rates' / 'example.csv'}"),
    ):
        assert old in text, old  # the example changed: update this test with it
        text = text.replace(old, new)
    path = tmp_path / "example.yaml"
    path.write_text(text, encoding="utf-8")
    return path


async def test_1001_calls_1002_and_1002_rings(tmp_path: Path) -> None:
    port = free_port()
    app = Application(load_application_config(str(example_on(tmp_path, port))))
    await app.start()
    phones: list[Ua] = []
    try:
        for ext in ("1001", "1002"):
            ua = await Ua.open(ext, f"demo{ext}pw", ("127.0.0.1", port))
            ua.domain = "demo.sipcore.test"
            phones.append(ua)
            await ua.register()
        alice, bruno = phones
        bruno.mode = "ring"
        dlg = await alice.call("1002")
        invite = await bruno.request("INVITE")
        assert invite.uri.startswith(f"sip:1002@127.0.0.1:{bruno.port}")
        ringing = await alice.response(dlg.call_id, final=False)
        assert ringing.status == 180
    finally:
        for ua in phones:
            ua.close()
        await app.close()
