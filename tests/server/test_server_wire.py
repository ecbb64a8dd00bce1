"""The server over real loopback sockets: answers, bad input, limits, keep-alives."""

from __future__ import annotations

import asyncio

from server.sip_server import ServerSettings, SipServer
from sipcore.message import Response, parse
from sipcore.transport import TransportLimits
from sipcore.waiting import within
from tests.conftest import free_port
from tests.server.wire import options, read_message, udp_client


async def test_options_over_udp_is_answered_with_capabilities(sip_server: SipServer) -> None:
    host, port = sip_server.transports.udp_addresses[0]
    client = await udp_client()
    try:
        client.send(options(host, port, client.port), (host, port))
        data = await client.recv()
        assert data is not None
        resp = parse(data)
        assert isinstance(resp, Response) and resp.status == 200
        assert "REGISTER" in resp.headers.get("allow", "") or "OPTIONS" in resp.headers.get("allow", "")
        assert resp.headers.get("accept") == "application/sdp"
        assert resp.headers.get("supported") is not None
        assert resp.top_via.param("rport") == str(client.port)
        assert resp.top_via.param("received") == "127.0.0.1"
        assert resp.to_tag
    finally:
        client.close()


async def test_options_over_tcp_and_pipelining(sip_server: SipServer) -> None:
    host, port = sip_server.transports.tcp_addresses[0]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        local = writer.get_extra_info("sockname")[1]
        writer.write(options(host, port, local, "TCP") * 3)
        for _ in range(3):
            head = await read_message(reader)
            assert head is not None and head.startswith(b"SIP/2.0 200 OK")
    finally:
        writer.close()


async def test_malformed_request_gets_400_with_reason_and_server_survives(sip_server: SipServer) -> None:
    host, port = sip_server.transports.udp_addresses[0]
    client = await udp_client()
    try:
        bad = options(host, port, client.port).replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")
        client.send(bad, (host, port))
        data = await client.recv()
        assert data is not None and data.startswith(b"SIP/2.0 400 CSeq method does not match")
        for junk in (b"\x00\xff" * 50, b"garbage\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n", b"INVITE\r\n\r\n"):
            client.send(junk, (host, port))
        assert await client.recv(0.3) is None  # nothing routable: dropped
        client.send(options(host, port, client.port), (host, port))
        data = await client.recv()
        assert data is not None and data.startswith(b"SIP/2.0 200")
    finally:
        client.close()


async def test_status_codes_for_unsupported_requests(sip_server: SipServer) -> None:
    host, port = sip_server.transports.udp_addresses[0]
    client = await udp_client()
    cases = [
        (options(host, port, client.port, extra="Require: 100rel-unknown\r\n"), b"SIP/2.0 420"),
        (options(host, port, client.port, ruri="sip:bob@elsewhere.example", max_forwards=0), b"SIP/2.0 483"),
        (options(host, port, client.port, ruri="sip:bob@elsewhere.example", extra="Proxy-Require: foo\r\n"),
         b"SIP/2.0 420"),
        (options(host, port, client.port).replace(b"OPTIONS sip:", b"OPTIONS xyz:", 1), b"SIP/2.0 416"),
        (options(host, port, client.port).replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), b"SIP/2.0 505"),
        (options(host, port, client.port).replace(b"OPTIONS", b"FOO"), b"SIP/2.0 501"),
        (options(host, port, client.port, ruri="sip:bob@elsewhere.example"), b"SIP/2.0 403"),
    ]  # fmt: skip
    try:
        for data, want in cases:
            client.send(data, (host, port))
            got = await client.recv()
            assert got is not None and got.startswith(want), (want, got[:60] if got else None)
            if want == b"SIP/2.0 420":
                resp = parse(got)
                assert resp.headers.get("unsupported") in ("100rel-unknown", "foo")
    finally:
        client.close()


async def test_oversized_datagram_is_dropped_and_counted() -> None:
    port = free_port()
    server = SipServer(ServerSettings(udp=[f"127.0.0.1:{port}"], tcp=[], metrics_address=None,
                                      limits=TransportLimits(max_message_size=2048)))  # fmt: skip
    await server.start()
    client = await udp_client()
    try:
        big = options("127.0.0.1", port, client.port, extra="X-Pad: " + "a" * 4000 + "\r\n")
        client.send(big, ("127.0.0.1", port))
        assert await client.recv(0.3) is None
        assert server.transports.stats.udp_oversize == 1
    finally:
        client.close()
        await server.close()


async def test_crlf_keepalive_gets_a_pong(sip_server: SipServer) -> None:
    host, port = sip_server.transports.tcp_addresses[0]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"\r\n\r\n")
        assert await within(reader.readexactly(2), 2) == b"\r\n"
    finally:
        writer.close()


async def test_half_sent_tcp_message_then_rest(sip_server: SipServer) -> None:
    host, port = sip_server.transports.tcp_addresses[0]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        msg = options(host, port, writer.get_extra_info("sockname")[1], "TCP")
        writer.write(msg[:37])
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(msg[37:])
        head = await read_message(reader)
        assert head is not None and head.startswith(b"SIP/2.0 200")
    finally:
        writer.close()


async def test_garbage_stream_gets_400_and_close(sip_server: SipServer) -> None:
    host, port = sip_server.transports.tcp_addresses[0]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        msg = options(host, port, writer.get_extra_info("sockname")[1], "TCP").replace(
            b"Content-Length: 0", b"Content-Length: -3"
        )
        writer.write(msg)
        head = await read_message(reader)
        assert head is not None and head.startswith(b"SIP/2.0 400")
        assert await within(reader.read(), 2) == b""  # closed by the server
    finally:
        writer.close()


async def test_tcp_limits_per_source_and_idle_timeout() -> None:
    port = free_port()
    server = SipServer(ServerSettings(udp=[], tcp=[f"127.0.0.1:{port}"], metrics_address=None,
                                      limits=TransportLimits(max_tcp_per_source=2, tcp_idle_timeout=0.3)))  # fmt: skip
    await server.start()
    conns = []
    try:
        for _ in range(3):
            conns.append(await asyncio.open_connection("127.0.0.1", port))
        third_reader = conns[2][0]
        assert await within(third_reader.read(), 2) == b""  # refused: closed at once
        assert server.transports.stats.tcp_refused == 1
        first_reader = conns[0][0]
        assert await within(first_reader.read(), 3) == b""  # idle: closed
        assert server.transports.stats.tcp_closed_idle >= 1
    finally:
        for _, w in conns:
            w.close()
        await server.close()


async def test_ipv6_udp_and_tcp() -> None:
    import socket as _socket

    probe = _socket.socket(_socket.AF_INET6, _socket.SOCK_DGRAM)
    try:
        probe.bind(("::1", 0))
    except OSError:
        import pytest

        pytest.skip("no IPv6 loopback on this machine")
    port = probe.getsockname()[1]
    probe.close()
    server = SipServer(ServerSettings(udp=[f"[::1]:{port}"], tcp=[f"[::1]:{port}"], metrics_address=None))
    await server.start()
    loop = asyncio.get_running_loop()
    try:
        sock = _socket.socket(_socket.AF_INET6, _socket.SOCK_DGRAM)
        sock.bind(("::1", 0))
        sock.setblocking(False)
        local = sock.getsockname()[1]
        msg = options("[::1]", port, local).replace(b"127.0.0.1", b"[::1]")
        await loop.sock_sendto(sock, msg, ("::1", port))
        data = await within(loop.sock_recv(sock, 65535), 2)
        assert data.startswith(b"SIP/2.0 200 OK")
        sock.close()
        reader, writer = await asyncio.open_connection("::1", port)
        fresh = options("[::1]", port, local, "TCP").replace(b"127.0.0.1", b"[::1]")  # a new transaction
        writer.write(fresh)
        head = await read_message(reader)
        assert head is not None and head.startswith(b"SIP/2.0 200 OK")
        writer.close()
    finally:
        await server.close()
