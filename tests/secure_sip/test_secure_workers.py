"""TLS and WSS with ``server.workers: 2`` (``sipcore serve``, uvloop, listeners bound by the master and
shared): phones on TLS and WSS register, and a UDP phone reaches each of them over its own connection
whichever worker holds it (a write on another worker's connection is handed to that worker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.proxy_sip.configs import password, write_config
from tests.proxy_sip.ua import Ua
from tests.secure_sip.certs import Pki
from tests.secure_sip.conftest import TlsUa, client_context, tls_yaml
from tests.secure_sip.ws_ua import WsUa
from tests.server.workers_helpers import metric, serve

pytestmark = pytest.mark.timeout(60)


async def test_tls_and_wss_phones_called_with_two_workers(tmp_path: Path, pki: Pki) -> None:
    port, tls_port, ws_port, wss_port = free_port(), free_port(), free_port(), free_port()
    path = write_config(tmp_path, port, free_port())
    text = path.read_text().replace("  advertised_address:", tls_yaml(pki, tls_port, ws_port, wss_port)
                                    + "  advertised_address:", 1)  # fmt: skip
    path.write_text(text)
    async with serve(path, workers=2, port=port) as served:
        desk = await Ua.open("1002", password("1002"), ("127.0.0.1", port))
        phones = []
        try:
            await desk.register()
            for i, ext in enumerate(("1001", "1003", "1005", "1006")):  # several connections: both workers
                if i % 2:
                    ua = await WsUa.open_ws(ext, password(ext), ("127.0.0.1", wss_port), client_context(pki))
                else:
                    ua = await TlsUa.open_tls(
                        ext, password(ext), ("127.0.0.1", tls_port), client_context(pki)
                    )
                phones.append(ua)
                await ua.register()
            for ua in phones:
                dlg = await desk.call(ua.user)
                invite = await ua.request("INVITE", timeout=5)
                assert invite.call_id == dlg.call_id
                ok = await desk.response(dlg.call_id, final=True)
                assert ok.status == 200
                desk.ack(dlg, ok)
                desk.in_dialog(dlg, "BYE")  # hung up: the next call is not over the account's limit
                assert (await ua.request("BYE", timeout=5)).call_id == dlg.call_id
            text = await served.metrics()  # both workers' counters, merged
            assert metric(text, "sipcore_secure_transport_events_total", event="tls_handshake") == 4
            assert metric(text, "sipcore_secure_transport_events_total", event="ws_upgraded") == 2
        finally:
            desk.close()
            for ua in phones:
                ua.close()
