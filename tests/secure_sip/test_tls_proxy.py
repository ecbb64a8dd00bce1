"""SIP over TLS through the whole server: digest REGISTER over TLS, a call from a TLS phone to a UDP
phone and back over the TLS phone's connection (flow reuse, Record-Route with transport=tls), and
bad handshakes (plain text on the TLS port, an untrusted client certificate) refused and counted."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from sipcore.waiting import within
from tests.proxy_sip.configs import password
from tests.proxy_sip.ua import Ua
from tests.secure_sip.conftest import SecurePlatform

pytestmark = pytest.mark.timeout(30)


async def test_register_and_call_over_tls_both_ways(secure: SecurePlatform) -> None:
    alice = await secure.tls_phone("1001")
    bob = await Ua.open("1002", password("1002"), ("127.0.0.1", secure.port))
    await bob.register()
    try:
        # TLS -> UDP: the INVITE reaches bob with both our Record-Route entries (UDP side, TLS side)
        dlg = await alice.call("1002")
        invite = await bob.request("INVITE")
        rr = invite.headers.get_all("record-route")
        assert any("transport=tls" in v for v in rr), rr
        assert invite.top_via.transport == "UDP"
        ok = await alice.response(dlg.call_id, final=True)
        assert ok.status == 200
        alice.ack(dlg, ok)
        alice.in_dialog(dlg, "BYE")  # in-dialog, over the route set, back through our TLS side
        bye = await bob.request("BYE")
        assert bye.call_id == dlg.call_id
        # UDP -> TLS: bob's call reaches alice over her own TLS connection (the flow she registered on)
        dlg = await bob.call("1001")
        invite = await alice.request("INVITE", timeout=5)
        assert invite.top_via.transport == "TLS"
        assert invite.top_via.port == secure.tls_port
        ok = await bob.response(dlg.call_id, final=True)
        assert ok.status == 200
    finally:
        alice.close()
        bob.close()


async def test_plain_text_on_the_tls_port_is_refused_and_counted(secure: SecurePlatform) -> None:
    stats = secure.app.sip.secure.stats
    before = stats.tls_handshake_failed
    reader, writer = await asyncio.open_connection("127.0.0.1", secure.tls_port)
    writer.write(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKx\r\n\r\n")
    data = await within(reader.read(), 5)  # closed by the server: EOF (maybe a TLS alert)
    assert not data.startswith(b"SIP/2.0")
    writer.close()
    assert stats.tls_handshake_failed == before + 1
    assert secure.app.sip.transports.connections == {}  # nothing left open


async def test_silent_client_times_out_in_the_handshake(secure: SecurePlatform) -> None:
    stats = secure.app.sip.secure.stats
    before = stats.tls_handshake_failed
    reader, writer = await asyncio.open_connection("127.0.0.1", secure.tls_port)
    assert await within(reader.read(), 8) == b""  # closed after the 2 s handshake timeout
    writer.close()
    assert stats.tls_handshake_failed == before + 1


async def test_client_certificate_from_an_untrusted_ca_is_refused(tmp_path, pki) -> None:
    from tests.secure_sip.conftest import client_context, secure_platform

    extra = f"    client_ca_file: {pki.ca}\n"
    async with secure_platform(tmp_path, pki, workers_tls=extra) as running:
        stats = running.app.sip.secure.stats
        ctx = client_context(pki)
        ctx.load_cert_chain(str(pki.rogue_cert), str(pki.rogue_key))
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            reader, writer = await asyncio.open_connection("127.0.0.1", running.tls_port, ssl=ctx)
            writer.write(b"\r\n\r\n")  # TLS 1.3: the refusal arrives after the client's Finished
            await writer.drain()
            data = await within(reader.read(10), 5)
            if not data:
                raise ConnectionError("closed")
        for _ in range(50):
            if stats.tls_handshake_failed:
                break
            await asyncio.sleep(0.05)
        assert stats.tls_handshake_failed == 1
        # the same client without a certificate is refused too (one is required)
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            reader, writer = await asyncio.open_connection("127.0.0.1", running.tls_port,
                                                           ssl=client_context(pki))  # fmt: skip
            writer.write(b"\r\n\r\n")
            await writer.drain()
            if not await within(reader.read(10), 5):
                raise ConnectionError("closed")


async def test_reload_takes_a_renewed_certificate(tmp_path, pki) -> None:
    """``sipcore reload`` after the certificate files were replaced: new connections get the new
    certificate, the connection already open keeps working."""
    import shutil

    from server.tls_context import certificate_fingerprint
    from tests.secure_sip.certs import make_pki
    from tests.secure_sip.conftest import TlsUa, client_context, secure_platform

    cert, key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(pki.cert, cert)
    shutil.copy(pki.key, key)
    live = type(pki)(pki.ca, cert, key, pki.rogue_cert, pki.rogue_key)
    async with secure_platform(tmp_path / "app", live) as running:

        async def served_fingerprint() -> bytes:
            _, writer = await asyncio.open_connection("127.0.0.1", running.tls_port, ssl=client_context(pki))
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.close()
            return der

        old = await served_fingerprint()
        alice = await TlsUa.open_tls(
            "1001", password("1001"), ("127.0.0.1", running.tls_port), client_context(pki)
        )
        await alice.register()
        renewed = make_pki(tmp_path / "renewed")  # another CA: the client below trusts it
        shutil.copy(renewed.cert, cert)
        shutil.copy(renewed.key, key)
        result = await running.app.reload()
        assert result.status == "applied", result
        ctx = client_context(renewed)
        _, writer = await asyncio.open_connection("127.0.0.1", running.tls_port, ssl=ctx)
        new = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        assert new != old and ssl.DER_cert_to_PEM_cert(new) == renewed.cert.read_text().replace("\r", "")
        assert certificate_fingerprint(renewed.cert) != certificate_fingerprint(pki.cert)
        await alice.register()  # the connection opened before the reload still serves
        alice.close()


def test_missing_certificate_is_a_configuration_error_naming_the_file(tmp_path, pki) -> None:
    from config.loader import ConfigError
    from server.app import load_application_config
    from tests.proxy_sip.configs import write_config
    from tests.secure_sip.certs import Pki
    from tests.secure_sip.conftest import tls_yaml

    missing = Pki(pki.ca, tmp_path / "nope.crt", pki.key, pki.rogue_cert, pki.rogue_key)
    path = write_config(tmp_path, 5060, 5062)
    path.write_text(path.read_text().replace("  advertised_address:", tls_yaml(missing, 5061, 8080, 8443)
                                             + "  advertised_address:", 1))  # fmt: skip
    with pytest.raises(ConfigError) as err:
        load_application_config(str(path))
    assert "nope.crt" in str(err.value) and "server.tls" in str(err.value)


def test_self_signed_pair_created_when_both_files_are_missing(tmp_path) -> None:
    from server.tls_context import ServerTls, certificate_fingerprint, server_context

    cfg = ServerTls(tmp_path / "tls" / "demo.crt", tmp_path / "tls" / "demo.key", self_signed=True)
    server_context(cfg)
    first = certificate_fingerprint(cfg.cert_file)
    assert (cfg.key_file.stat().st_mode & 0o777) == 0o600
    server_context(cfg)  # present now: kept, not replaced
    assert certificate_fingerprint(cfg.cert_file) == first


async def test_per_source_cap_applies_before_the_handshake(tmp_path, pki) -> None:
    """``limits.max_tcp_connections_per_ip`` counts TLS connections as TCP ones, from the accept: the
    third connection from one address is closed before any TLS work."""
    from tests.secure_sip.conftest import client_context, secure_platform

    def edit(text: str) -> str:
        return text.replace(
            "  advertised_address:", "  limits: {max_tcp_connections_per_ip: 2}\n  advertised_address:", 1
        )

    async with secure_platform(tmp_path, pki, edit=edit) as running:
        stats, secure = running.app.sip.transports.stats, running.app.sip.secure.stats
        kept = [
            await asyncio.open_connection("127.0.0.1", running.tls_port, ssl=client_context(pki))
            for _ in range(2)
        ]
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError, TimeoutError)):
            await within(asyncio.open_connection("127.0.0.1", running.tls_port, ssl=client_context(pki)), 3)
        assert stats.tcp_refused == 1
        assert (secure.tls_handshakes, secure.tls_handshake_failed) == (
            2,
            0,
        )  # no TLS work for the refused one
        for _, writer in kept:
            writer.close()
