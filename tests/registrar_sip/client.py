"""A minimal SIP phone for wire tests: REGISTER over UDP or TCP with digest auth, bounded waits.

It writes requests as text (so tests can send exactly the hostile header they mean) and parses the
answers with the project's parser. Every receive has a timeout; ``None`` means "no answer".
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence

from sipcore.digest import build_authorization
from sipcore.message import Response, parse
from sipcore.waiting import within

Address = tuple[str, int]
DEFAULT = object()  # "the phone's own Contact" (None would mean "no Contact": a query)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.queue.put_nowait(data)


class SipClient:
    """One socket to the server: a UDP endpoint or a TCP connection."""

    def __init__(self, server: Address, transport: str, local_host: str = "127.0.0.1") -> None:
        self.server = server
        self.local_host = local_host
        self.transport = transport.upper()
        self.local_port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._queue: asyncio.Queue[bytes] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @classmethod
    async def open(cls, server: Address, transport: str = "UDP", local_host: str = "127.0.0.1") -> SipClient:
        """``local_host`` may be any 127.x address: a second "source" for ban tests."""
        self = cls(server, transport, local_host)
        loop = asyncio.get_running_loop()
        if self.transport == "UDP":
            udp, proto = await loop.create_datagram_endpoint(_Udp, local_addr=(local_host, 0))
            self._udp, self._queue = udp, proto.queue
            self.local_port = udp.get_extra_info("sockname")[1]
        else:
            self._reader, self._writer = await within(
                asyncio.open_connection(*server, local_addr=(local_host, 0)), 3
            )
            self.local_port = self._writer.get_extra_info("sockname")[1]
        return self

    def send(self, data: bytes) -> None:
        if self._udp is not None:
            self._udp.sendto(data, self.server)
        else:
            assert self._writer is not None
            self._writer.write(data)

    async def recv_raw(self, timeout: float = 2.0) -> bytes | None:
        try:
            if self._queue is not None:
                return await within(self._queue.get(), timeout)
            assert self._reader is not None
            head = await within(self._reader.readuntil(b"\r\n\r\n"), timeout)
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() in (b"content-length", b"l"):
                    length = int(value.strip())
            body = await within(self._reader.readexactly(length), timeout) if length else b""
            return head + body
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return None

    async def recv(self, timeout: float = 2.0) -> Response | None:
        """The next final response (provisional ones are skipped)."""
        while True:
            data = await self.recv_raw(timeout)
            if data is None:
                return None
            msg = parse(data, stream=self._udp is None)
            assert isinstance(msg, Response), data[:200]
            if msg.status >= 200:
                return msg

    async def request(self, data: bytes, timeout: float = 2.0) -> Response | None:
        self.send(data)
        return await self.recv(timeout)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._writer is not None:
            self._writer.close()
            try:
                await within(self._writer.wait_closed(), 2)
            except (TimeoutError, ConnectionError):
                pass


class Phone:
    """A registering UA: keeps its Call-ID and CSeq across REGISTERs like a real phone (§10.2.4)."""

    def __init__(
        self, client: SipClient, user: str, password: str, *, user_agent: str = "sipcore-tests"
    ) -> None:
        self.client = client
        self.user = user
        self.password = password
        self.user_agent = user_agent
        self.call_id = secrets.token_hex(8) + "@127.0.0.1"
        self.cseq = 0
        self.last_challenge: Response | None = None

    @property
    def ruri(self) -> str:
        host, port = self.client.server
        return f"sip:{host}:{port}"

    @property
    def own_contact(self) -> str:
        t = self.client.transport.lower()
        return f"<sip:{self.user}@{self.client.local_host}:{self.client.local_port};transport={t}>"

    def build(
        self,
        contacts: Sequence[str] | object | None = DEFAULT,
        expires: int | str | None = None,
        authorization: str | None = None,
        to_user: str | None = None,
        extra: Sequence[tuple[str, str]] = (),
        cseq: int | None = None,
    ) -> bytes:
        """A REGISTER as bytes (CSeq advances unless given)."""
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        host, port = self.client.server
        to = f"<sip:{to_user or self.user}@{host}:{port}>"
        lines = [
            f"REGISTER {self.ruri} SIP/2.0",
            f"Via: SIP/2.0/{self.client.transport} {self.client.local_host}:{self.client.local_port};branch=z9hG4bK"
            f"{secrets.token_hex(6)};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@{host}:{port}>;tag={secrets.token_hex(4)}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} REGISTER",
            f"User-Agent: {self.user_agent}",
        ]
        if contacts is DEFAULT:
            lines.append(f"Contact: {self.own_contact}")
        elif contacts is not None:
            lines += [f"Contact: {c}" for c in contacts]  # type: ignore[union-attr]
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if authorization is not None:
            lines.append(f"Authorization: {authorization}")
        lines += [f"{name}: {value}" for name, value in extra]
        lines += ["Content-Length: 0", "", ""]
        return "\r\n".join(lines).encode("utf-8", "surrogateescape")

    def answer(self, challenge: Response, user: str | None = None, password: str | None = None) -> str:
        """Authorization for the first WWW-Authenticate (what SIPp and most phones do)."""
        header = challenge.headers.get("www-authenticate")
        assert header is not None, "401 without WWW-Authenticate"
        return build_authorization(
            header,
            username=user or self.user,
            password=self.password if password is None else password,
            method="REGISTER",
            uri=self.ruri,
            cnonce=secrets.token_hex(4),
        )

    async def register(
        self,
        contacts: Sequence[str] | object | None = DEFAULT,
        expires: int | str | None = None,
        *,
        to_user: str | None = None,
        password: str | None = None,
        extra: Sequence[tuple[str, str]] = (),
        timeout: float = 2.0,
    ) -> Response | None:
        """REGISTER, answer the 401 once, return the final answer (None if none came)."""
        first = await self.client.request(
            self.build(contacts, expires, to_user=to_user, extra=extra), timeout
        )
        if first is None or first.status != 401:
            return first
        self.last_challenge = first
        auth = self.answer(first, password=password)
        return await self.client.request(self.build(contacts, expires, auth, to_user, extra), timeout)


def contact_expires(resp: Response) -> dict[str, int]:
    """The 200 OK's bindings: contact URI -> remaining seconds."""
    out: dict[str, int] = {}
    for c in resp.contacts:
        assert c.expires is not None, f"binding without expires: {c}"
        out[c.uri_text] = c.expires
    return out


def options_bytes(client: SipClient, user_agent: str = "probe") -> bytes:
    host, port = client.server
    local_port, transport = client.local_port, client.transport
    return (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {client.local_host}:{local_port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:{host}:{port}>\r\nCall-ID: {secrets.token_hex(8)}\r\nCSeq: 1 OPTIONS\r\n"
        f"User-Agent: {user_agent}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
