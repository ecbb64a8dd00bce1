"""SIP over WebSocket (RFC 7118) through the whole server: a WS and a WSS phone with ``.invalid``
Via/Contact hosts register with digest, call a UDP phone and are called back over their connection;
upgrades without the ``sip`` subprotocol, unmasked frames and oversized messages are refused (400,
close 1002, close 1009) and counted."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest

from sipcore import websocket as ws
from sipcore.waiting import within
from tests.proxy_sip.configs import password
from tests.proxy_sip.ua import Ua
from tests.secure_sip.conftest import SecurePlatform, client_context
from tests.secure_sip.ws_ua import WsUa, open_websocket, read_frame

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("secure_ws", [False, True], ids=["ws", "wss"])
async def test_websocket_phone_registers_calls_and_is_called(secure: SecurePlatform, secure_ws: bool) -> None:
    port = secure.wss_port if secure_ws else secure.ws_port
    ctx = client_context(secure.pki) if secure_ws else None
    web = await WsUa.open_ws("1003", password("1003"), ("127.0.0.1", port), ctx)
    desk = await Ua.open("1002", password("1002"), ("127.0.0.1", secure.port))
    try:
        await web.register()
        await desk.register()
        # browser -> desk phone: the INVITE leaves over UDP, Record-Routed on both sides
        dlg = await web.call("1002")
        invite = await desk.request("INVITE")
        scheme = "wss" if secure_ws else "ws"
        assert any(f"transport={scheme}" in v for v in invite.headers.get_all("record-route"))
        ok = await web.response(dlg.call_id, final=True)
        assert ok.status == 200
        web.ack(dlg, ok)
        web.in_dialog(dlg, "BYE")
        assert (await desk.request("BYE")).call_id == dlg.call_id
        # desk phone -> browser: its Contact host is .invalid; only its connection reaches it
        back = await desk.call("1003")
        invite = await web.request("INVITE", timeout=5)
        assert invite.top_via.transport == scheme.upper()
        assert (await desk.response(back.call_id, final=True)).status == 200
    finally:
        web.close()
        desk.close()


async def test_upgrade_without_sip_subprotocol_is_refused(secure: SecurePlatform) -> None:
    stats = secure.app.sip.secure.stats
    reader, writer, head = await open_websocket("127.0.0.1", secure.ws_port, None, protocol="chat")
    assert head.startswith(b"HTTP/1.1 400")
    assert await within(reader.read(), 3) is not None  # then closed
    writer.close()
    assert stats.ws_refused == 1


async def test_unmasked_frame_closes_1002_and_oversized_message_1009(secure: SecurePlatform) -> None:
    stats = secure.app.sip.secure.stats
    reader, writer, head = await open_websocket("127.0.0.1", secure.ws_port, None)
    assert head.startswith(b"HTTP/1.1 101")
    writer.write(ws.encode_frame(ws.TEXT, b"OPTIONS sip:x SIP/2.0\r\n\r\n"))  # not masked
    opcode, payload = await within(read_frame(reader), 3)
    assert (opcode, struct.unpack("!H", payload[:2])[0]) == (ws.CLOSE, 1002)
    writer.close()

    reader, writer, head = await open_websocket("127.0.0.1", secure.wss_port, client_context(secure.pki))
    # a frame announcing 10 MB: refused from its header, the payload never sent
    writer.write(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 10_000_000) + os.urandom(4))
    opcode, payload = await within(read_frame(reader), 3)
    assert (opcode, struct.unpack("!H", payload[:2])[0]) == (ws.CLOSE, 1009)
    writer.close()
    assert (stats.ws_protocol_errors, stats.ws_closed_too_big) == (1, 1)


async def test_ping_is_answered_with_pong(secure: SecurePlatform) -> None:
    reader, writer, _ = await open_websocket("127.0.0.1", secure.ws_port, None)
    writer.write(ws.encode_frame(ws.PING, b"are you there", mask=os.urandom(4)))
    assert await within(read_frame(reader), 3) == (ws.PONG, b"are you there")
    writer.write(ws.encode_frame(ws.CLOSE, struct.pack("!H", 1000), mask=os.urandom(4)))
    opcode, payload = await within(read_frame(reader), 3)
    assert (opcode, payload[:2]) == (ws.CLOSE, struct.pack("!H", 1000))
    writer.close()


async def test_message_deadlines_on_websocket_terms(tmp_path, pki) -> None:
    """With ``limits.tcp_message_timeout: 1``: an upgraded connection kept alive by pings outlives the
    deadline; one that sends half a frame is closed by it (slowloris over WebSocket)."""
    from tests.secure_sip.conftest import secure_platform

    def edit(text: str) -> str:
        return text.replace(
            "  advertised_address:", "  limits: {tcp_message_timeout: 1}\n  advertised_address:", 1
        )

    async with secure_platform(tmp_path, pki, edit=edit) as running:
        reader, writer, head = await open_websocket("127.0.0.1", running.ws_port, None)
        assert head.startswith(b"HTTP/1.1 101")
        for _ in range(6):  # 3 s, three times the deadline
            writer.write(ws.encode_frame(ws.PING, b"k", mask=os.urandom(4)))
            assert await within(read_frame(reader), 3) == (ws.PONG, b"k")
            await asyncio.sleep(0.5)
        slow_reader, slow_writer, _ = await open_websocket("127.0.0.1", running.ws_port, None)
        frame = ws.encode_frame(ws.TEXT, b"OPTIONS sip:x SIP/2.0\r\n\r\n", mask=os.urandom(4))
        slow_writer.write(frame[:8])  # and never the rest
        assert await within(slow_reader.read(), 5) == b""  # closed by the deadline
        writer.write(ws.encode_frame(ws.PING, b"still", mask=os.urandom(4)))
        assert await within(read_frame(reader), 3) == (ws.PONG, b"still")
        writer.close()
        slow_writer.close()
