"""A tiny stateless edge proxy on its own UDP socket, for the Path tests (RFC 3327): what an SBC or
the edge host holding a phone's NAT flow does in front of the registrar.

Requests from a phone go to the registrar with the edge's Via on top (and a ``Path`` naming the edge
on a REGISTER); requests from the registrar go to their Request-URI with the edge's own Route entry
taken off; responses go back to the next Via. Everything it relays is kept for assertions."""

from __future__ import annotations

import asyncio
import re
import secrets

from sipcore.message import Request, parse

Address = tuple[str, int]
_SENT_BY = re.compile(r"SIP/2\.0/UDP ([^;:\s]+):(\d+)", re.I)
_URI_HOSTPORT = re.compile(r"sip:(?:[^@;>]+@)?([^;:>]+):(\d+)")


class EdgeProxy(asyncio.DatagramProtocol):
    def __init__(self, registrar: Address) -> None:
        self.registrar = registrar
        self.port = 0
        self.from_registrar: list[Request] = []  # requests the registrar sent towards phones
        self._udp: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, registrar: Address) -> EdgeProxy:
        loop = asyncio.get_running_loop()
        udp, edge = await loop.create_datagram_endpoint(lambda: cls(registrar), local_addr=("127.0.0.1", 0))
        edge._udp = udp
        edge.port = udp.get_extra_info("sockname")[1]
        return edge

    @property
    def uri(self) -> str:
        return f"sip:127.0.0.1:{self.port};lr"

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()

    def datagram_received(self, data: bytes, addr: Address) -> None:  # type: ignore[override]
        text = data.decode()
        head, _, body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        if lines[0].startswith("SIP/2.0 "):  # a response: drop our Via, on to the next one
            vias = [i for i, line in enumerate(lines) if line.lower().startswith("via:")]
            del lines[vias[0]]
            nxt = _SENT_BY.search(lines[vias[1] - 1]) if len(vias) > 1 else None
            if nxt is not None:
                self._send(lines, body, (nxt.group(1), int(nxt.group(2))))
            return
        via = f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{secrets.token_hex(6)}"
        first_via = next(i for i, line in enumerate(lines) if line.lower().startswith("via:"))
        lines.insert(first_via, via)
        if addr == self.registrar:  # towards a phone: our Route entry off, sent to the Request-URI
            self.from_registrar.append(parse(data))  # type: ignore[arg-type]
            lines = [
                line
                for line in lines
                if not (line.lower().startswith("route:") and f":{self.port};lr" in line)
            ]
            target = _URI_HOSTPORT.search(lines[0])
            assert target is not None, lines[0]
            self._send(lines, body, (target.group(1), int(target.group(2))))
            return
        if lines[0].startswith("REGISTER "):
            lines.insert(first_via + 1, f"Path: <{self.uri}>")
        self._send(lines, body, self.registrar)

    def _send(self, lines: list[str], body: str, to: Address) -> None:
        assert self._udp is not None
        self._udp.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), to)
