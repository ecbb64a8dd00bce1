"""Outbound TLS to a carrier: the certificate verified against the trunk's CA file with SNI, or pinned
by SHA-256; a carrier whose certificate fails the check never sees the call (counted, the phone gets
an error, no traceback)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from server.tls_context import certificate_fingerprint
from sipcore.framing import StreamFramer
from sipcore.message import Request, parse
from tests.conftest import free_port
from tests.proxy_sip.configs import TRUNK_HOST, password
from tests.proxy_sip.ua import Ua
from tests.secure_sip.certs import Pki
from tests.secure_sip.conftest import secure_platform

pytestmark = pytest.mark.timeout(30)


class TlsCarrier:
    """A carrier's TLS server on 127.0.0.2: answers every INVITE 200, records requests and the SNI."""

    def __init__(self, pki: Pki) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(str(pki.cert), str(pki.key))
        self.sni: list[str | None] = []
        self.ctx.sni_callback = lambda obj, name, ctx: self.sni.append(name)
        self.requests: list[Request] = []
        self.server: asyncio.base_events.Server | None = None
        self.port = free_port()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, TRUNK_HOST, self.port, ssl=self.ctx)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = StreamFramer()
        try:
            while data := await reader.read(65536):
                for item in framer.feed(data):
                    if not isinstance(item, bytes):
                        continue
                    msg = parse(item)
                    if isinstance(msg, Request):
                        self.requests.append(msg)
                        if msg.method == "INVITE":
                            resp = msg.make_response(
                                200,
                                "OK",
                                "carrier1",
                                (("Contact", f"<sip:c@{TRUNK_HOST}:{self.port};transport=tls>"),),
                            )
                            writer.write(resp.serialize())
                        elif msg.method not in ("ACK",):
                            writer.write(msg.make_response(200, "OK", "carrier1").serialize())
        except (ConnectionError, ssl.SSLError):
            return

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def _trunk_tls(tls: str):
    def edit(text: str) -> str:
        return text.replace("    transport: udp\n", f"    transport: tls\n    tls: {tls}\n", 1)

    return edit


@pytest.mark.parametrize("how", ["ca_sni", "pinned"])
async def test_outbound_call_over_verified_tls(tmp_path: Path, pki: Pki, how: str) -> None:
    carrier = TlsCarrier(pki)
    await carrier.start()
    tls = (f"{{ca_file: {pki.ca}, server_name: localhost}}" if how == "ca_sni"
           else f"{{fingerprint: '{certificate_fingerprint(pki.cert)}'}}")  # fmt: skip
    try:
        async with secure_platform(tmp_path, pki, trunk_port=carrier.port, edit=_trunk_tls(tls)) as running:
            phone = await Ua.open("1001", password("1001"), ("127.0.0.1", running.port))
            try:
                await phone.register()
                dlg = await phone.call("0612345678")
                ok = await phone.response(dlg.call_id, final=True, timeout=5)
                assert ok.status == 200
                invite = next(r for r in carrier.requests if r.method == "INVITE")
                assert invite.top_via.transport == "TLS"
                assert carrier.sni == (["localhost"] if how == "ca_sni" else [None])
            finally:
                phone.close()
    finally:
        carrier.close()


@pytest.mark.parametrize("how", ["wrong_pin", "unknown_ca"])
async def test_carrier_failing_the_check_never_sees_the_call(tmp_path: Path, pki: Pki, how: str) -> None:
    carrier = TlsCarrier(pki)
    await carrier.start()
    tls = (
        "{fingerprint: '" + ":".join(["AB"] * 32) + "'}" if how == "wrong_pin" else "{server_name: localhost}"
    )
    try:
        async with secure_platform(tmp_path, pki, trunk_port=carrier.port, edit=_trunk_tls(tls)) as running:
            phone = await Ua.open("1001", password("1001"), ("127.0.0.1", running.port))
            try:
                await phone.register()
                dlg = await phone.call("0612345678")
                final = await phone.response(dlg.call_id, final=True, timeout=10)
                assert final.status >= 400
                assert [r for r in carrier.requests if r.method == "INVITE"] == []
                assert running.app.sip.secure.stats.tls_outbound_failed >= 1
            finally:
                phone.close()
    finally:
        carrier.close()


def test_a_tls_trunk_needs_the_tls_listener(tmp_path: Path) -> None:
    from config.loader import ConfigError, load_config
    from tests.proxy_sip.configs import write_config

    path = write_config(tmp_path, 5060, 5062)
    path.write_text(path.read_text().replace("    transport: udp\n", "    transport: tls\n", 1))
    with pytest.raises(ConfigError, match=r"uses TLS: server\.tls is needed too"):
        load_config(path)
