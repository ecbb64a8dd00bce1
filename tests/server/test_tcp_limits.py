"""TCP connection limits over real loopback sockets against an in-process server: the connection cap
(refused and counted while an existing client and /healthz go on), the message deadline (slowloris),
the byte rate (trickle), keep-alive CRLFs that keep a connection open, the live connections gauge."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from server.http import HttpEndpoint
from server.sip_server import ServerSettings, SipServer
from sipcore.transport import TransportLimits
from sipcore.waiting import within
from tests.conftest import free_port
from tests.server.wire import options, read_message

pytestmark = pytest.mark.timeout(60)

BOUND = 10.0  # seconds: generous bound for "closed soon", far below the idle timeout


@contextlib.asynccontextmanager
async def running(**limits: float | int) -> AsyncIterator[SipServer]:
    port = free_port()
    server = SipServer(
        ServerSettings(udp=[], tcp=[f"127.0.0.1:{port}"], metrics_address=None,
                       limits=TransportLimits(tcp_idle_timeout=600.0, **limits))  # type: ignore[arg-type]
    )  # fmt: skip
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def connect(
    server: SipServer, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = server.transports.tcp_addresses[0]
    return await within(asyncio.open_connection(host, port, local_addr=(source, 0)), 5)


async def closed_within(reader: asyncio.StreamReader, bound: float) -> float:
    """Seconds until the server closed the connection (EOF or reset); fails past ``bound``."""
    started = time.monotonic()
    try:
        while await within(reader.read(4096), bound):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - started


async def answered(server: SipServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    host, port = server.transports.tcp_addresses[0]
    writer.write(options(host, port, writer.get_extra_info("sockname")[1], "TCP"))
    await writer.drain()
    head = await read_message(reader, 3.0)
    return head is not None and head.startswith(b"SIP/2.0 200")


def gauge() -> float | None:
    return REGISTRY.get_sample_value("sipcore_tcp_connections")


async def http_get(port: int, path: str) -> tuple[bytes, bytes]:
    reader, writer = await within(asyncio.open_connection("127.0.0.1", port), 3)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    data = await within(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


async def test_cap_refuses_and_counts_while_a_client_and_healthz_go_on() -> None:
    async with running(max_tcp_connections=5) as server:
        http = HttpEndpoint(server.health)
        _, http_port = await http.start("127.0.0.1", 0)
        held = []
        try:
            good = await connect(server)
            assert await answered(server, *good)
            for i in range(4):  # the cap is now full, from other sources
                held.append(await connect(server, f"127.0.0.{10 + i}"))
            for _ in range(50):
                if len(server.transports.connections) == 5:
                    break
                await asyncio.sleep(0.02)
            assert gauge() == 5
            refused = [await connect(server, f"127.0.0.{20 + i}") for i in range(6)]
            for reader, writer in refused:
                await closed_within(reader, BOUND)
                writer.close()
            assert server.transports.stats.tcp_refused_cap == 6
            assert REGISTRY.get_sample_value("sipcore_tcp_refused_total", {"reason": "cap"}) == 6
            assert server.transports.stats.tcp_refused == 0  # not the per-source cap
            assert gauge() == 5
            assert await answered(server, *good)  # the client already in is served
            head, body = await http_get(http_port, "/healthz")
            assert head.startswith(b"HTTP/1.1 200")
            health = json.loads(body)
            assert health["tcp_connections"] == 5 and health["tcp_connection_cap"] == 5
            head, body = await http_get(http_port, "/metrics")
            assert b"sipcore_tcp_connections 5.0" in body
            assert b'sipcore_tcp_refused_total{reason="cap"} 6.0' in body
            # one leaves: a newcomer gets its place
            held.pop()[1].close()
            for _ in range(100):
                if len(server.transports.connections) == 4:
                    break
                await asyncio.sleep(0.02)
            newcomer = await connect(server, "127.0.0.40")
            held.append(newcomer)
            assert await answered(server, *newcomer)
            assert gauge() == 5
            good[1].close()
        finally:
            for _, writer in held:
                writer.close()
            await http.close()


async def test_slowloris_and_silent_connections_close_at_the_deadline() -> None:
    async with running(tcp_message_timeout=1.0, tcp_min_byte_rate=0) as server:
        host, port = server.transports.tcp_addresses[0]
        silent = await connect(server, "127.0.0.2")
        reader, writer = await connect(server, "127.0.0.3")
        head = options(host, port, writer.get_extra_info("sockname")[1], "TCP")
        writer.write(head[:60])  # half the headers, then one more header line now and then

        async def dribble() -> None:
            with contextlib.suppress(ConnectionError):
                for i in range(100):
                    await asyncio.sleep(0.2)
                    writer.write(f"X-Slow-{i}: a\r\n".encode())

        task = asyncio.create_task(dribble())
        try:
            assert await closed_within(reader, BOUND) < BOUND
            assert await closed_within(silent[0], BOUND) < BOUND
        finally:
            task.cancel()
            writer.close()
            silent[1].close()
        assert server.transports.stats.tcp_closed_timeout == 2
        assert REGISTRY.get_sample_value("sipcore_tcp_closed_total", {"reason": "message_timeout"}) == 2
        assert server.transports.stats.tcp_closed_slow == 0
        for _ in range(50):
            if not server.transports.connections:
                break
            await asyncio.sleep(0.02)
        assert gauge() == 0


async def test_trickle_is_closed_by_the_byte_rate() -> None:
    async with running(tcp_message_timeout=60.0, tcp_min_byte_rate=100) as server:
        host, port = server.transports.tcp_addresses[0]
        reader, writer = await connect(server)
        msg = options(host, port, writer.get_extra_info("sockname")[1], "TCP")

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for i in range(len(msg)):
                    writer.write(msg[i : i + 1])
                    await asyncio.sleep(0.3)

        task = asyncio.create_task(trickle())
        try:
            assert await closed_within(reader, BOUND) < BOUND  # the 60 s deadline did not do it
        finally:
            task.cancel()
            writer.close()
        assert server.transports.stats.tcp_closed_slow == 1
        assert server.transports.stats.tcp_closed_timeout == 0
        assert REGISTRY.get_sample_value("sipcore_tcp_closed_total", {"reason": "too_slow"}) == 1


async def test_keepalives_and_pauses_between_messages_keep_the_connection() -> None:
    async with running(tcp_message_timeout=1.0, tcp_min_byte_rate=100) as server:
        reader, writer = await connect(server)
        try:
            for _ in range(10):  # 3 s of RFC 5626 pings, three message deadlines
                writer.write(b"\r\n\r\n")
                await writer.drain()
                assert await within(reader.readexactly(2), 3) == b"\r\n"  # pong
                await asyncio.sleep(0.3)
            assert await answered(server, reader, writer)
            await asyncio.sleep(2.5)  # idle between messages: the idle timeout's business, not the deadline's
            assert await answered(server, reader, writer)
            writer.write(b"\r\n")  # half a ping, left hanging: not a message begun
            await asyncio.sleep(2.5)
            assert await answered(server, reader, writer)
            assert gauge() == 1
        finally:
            writer.close()
        stats = server.transports.stats
        assert stats.tcp_closed_timeout == stats.tcp_closed_slow == stats.tcp_closed_idle == 0
