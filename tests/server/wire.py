"""Tiny raw SIP clients for wire tests (bounded waits everywhere)."""

from __future__ import annotations

import asyncio
import secrets

from sipcore.waiting import within


def options(host: str, port: int, local_port: int, transport: str = "UDP", extra: str = "", ruri: str | None = None,
            max_forwards: int = 70) -> bytes:  # fmt: skip
    branch = "z9hG4bK" + secrets.token_hex(6)
    ruri = ruri or f"sip:{host}:{port}"
    return (
        f"OPTIONS {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{local_port};branch={branch};rport\r\n"
        f"Max-Forwards: {max_forwards}\r\n"
        f"From: <sip:probe@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
        f"To: <{ruri}>\r\n"
        f"Call-ID: {secrets.token_hex(8)}@127.0.0.1\r\n"
        f"CSeq: 1 OPTIONS\r\n{extra}"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


class UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[no-untyped-def]
        self.queue.put_nowait(data)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    def send(self, data: bytes, dest: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, dest)

    async def recv(self, timeout: float = 2.0) -> bytes | None:
        try:
            return await within(self.queue.get(), timeout)
        except TimeoutError:
            return None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def udp_client() -> UdpClient:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(UdpClient, local_addr=("127.0.0.1", 0))
    return proto


async def read_message(reader: asyncio.StreamReader, timeout: float = 2.0) -> bytes | None:
    try:
        head = await within(reader.readuntil(b"\r\n\r\n"), timeout)
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        return None
    return head
