"""The proxy tests' UA over a WebSocket (RFC 7118), as a browser softphone speaks it: the HTTP upgrade
with ``Sec-WebSocket-Protocol: sip``, masked text frames, and a ``.invalid`` host in its Via and
Contact (the server can only reach it back over this connection)."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import ssl

from sipcore import websocket as ws
from sipcore.waiting import within
from tests.proxy_sip.ua import Ua


async def open_websocket(host: str, port: int, ctx: ssl.SSLContext | None, protocol: str | None = "sip",
                         ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:  # fmt: skip
    """Connect and send the upgrade; returns the reader, writer and the server's answer head."""
    reader, writer = await within(asyncio.open_connection(host, port, ssl=ctx), 3)
    key = base64.b64encode(os.urandom(16)).decode()
    proto = f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else ""
    writer.write(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{proto}\r\n".encode())  # fmt: skip
    head = await within(reader.readuntil(b"\r\n\r\n"), 3)
    return reader, writer, head


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One (unmasked, server) frame: (opcode, payload)."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    assert not b1 & 0x80, "server frames are not masked"
    return b0 & 0x0F, await reader.readexactly(n)


class WsUa(Ua):
    """A phone on one WebSocket connection (``wss`` with a context)."""

    scheme = "WS"

    @classmethod
    async def open_ws(cls, user: str, pwd: str, server: tuple[str, int], ctx: ssl.SSLContext | None) -> WsUa:
        ua = cls(user, pwd, server)
        ua.scheme = "WSS" if ctx is not None else "WS"
        ua.invalid = f"{secrets.token_hex(5)}.invalid"
        reader, ua._writer, head = await open_websocket(*server, ctx)
        assert head.startswith(b"HTTP/1.1 101"), head
        ua._reader_task = asyncio.get_running_loop().create_task(ua._read_frames(reader))
        return ua

    async def _read_frames(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                opcode, payload = await read_frame(reader)
                if opcode in (ws.TEXT, ws.BINARY):
                    self.datagram_received(payload, self.server)
                elif opcode == ws.CLOSE:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    def send(self, text: str, to: tuple[str, int] | None = None) -> None:
        assert self._writer is not None
        self._writer.write(ws.encode_frame(ws.TEXT, text.replace("\n", "\r\n").encode(), mask=os.urandom(4)))

    @property
    def transport(self) -> str:
        return self.scheme

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@{self.invalid};transport={self.scheme.lower()}>"

    def _via(self, branch: str) -> str:
        return f"SIP/2.0/{self.scheme} {self.invalid};branch={branch}"  # no rport, as JsSIP sends it
