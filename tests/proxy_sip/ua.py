"""A scriptable SIP user agent (UDP, or one TCP connection) for the proxy wire tests: a phone
(register, answer, ring, refuse busy, stay silent) or the carrier trunk, a caller (INVITE with
proxy-auth, ACK, BYE, CANCEL), a subscriber (SUBSCRIBE with proxy-auth), or the media service.

Messages are written as text and parsed with the project's parser. Everything a UA receives is kept
(``received``) so tests can assert what a party saw — or never saw. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from sipcore.digest import build_authorization
from sipcore.message import Request, Response, parse
from sipcore.waiting import wait_set, within

Address = tuple[str, int]
Message = Request | Response
DOMAIN = "demo.sipcore.test"


@dataclass
class Dialog:
    """The caller's view of one call: enough to ACK, BYE or CANCEL it."""

    call_id: str
    from_tag: str
    to_user: str
    cseq: int
    branch: str
    from_header: str = ""
    invite_text: str = ""
    to_header: str = ""
    remote_target: str = ""
    route_set: list[str] = field(default_factory=list)
    credentials: str = ""  # the Proxy-Authorization line the caller sent, to repeat in-dialog


class Ua(asyncio.DatagramProtocol):
    """One endpoint (UDP socket or TCP connection). ``mode`` says what it does with an incoming INVITE:
    ``answer`` (180 then 200), ``ring`` (180, then wait for CANCEL), ``busy`` (486), ``silent``,
    ``answer_on_cancel`` (rings, and answers 200 just as the CANCEL arrives: the two cross)."""

    def __init__(self, user: str, password: str, server: Address, host: str = "127.0.0.1") -> None:
        self.domain = DOMAIN
        self.user = user
        self.password = password
        self.server = server
        self.host = host
        self.port = 0
        self.mode = "answer"
        self.contact_host: str | None = None  # a private address to advertise (a phone behind NAT)
        self.register_headers = ""  # extra REGISTER header lines ("Supported: path\n")
        self.received: list[Message] = []
        self.arrived_at: list[float] = []  # loop time of each received message
        self._taken: set[int] = set()
        self._arrived = asyncio.Event()
        self._udp: asyncio.DatagramTransport | None = None
        self._writer: asyncio.StreamWriter | None = None  # TCP: one connection, used both ways
        self._reader_task: asyncio.Task[None] | None = None
        self._invites: dict[str, tuple[Request, Address]] = {}  # call-id -> INVITE being answered

    # ---- socket ----------------------------------------------------------------------------------
    @classmethod
    async def open(
        cls, user: str, password: str, server: Address, host: str = "127.0.0.1", port: int = 0
    ) -> Ua:
        loop = asyncio.get_running_loop()
        udp, ua = await loop.create_datagram_endpoint(
            lambda: cls(user, password, server, host), local_addr=(host, port)
        )
        ua._udp = udp
        ua.port = udp.get_extra_info("sockname")[1]
        return ua

    @classmethod
    async def open_tcp(cls, user: str, password: str, server: Address, host: str = "127.0.0.1") -> Ua:
        """A phone on TCP: it opens the connection, and the proxy reaches it over that connection."""
        ua = cls(user, password, server, host)
        reader, ua._writer = await within(asyncio.open_connection(*server, local_addr=(host, 0)), 3)
        ua.port = ua._writer.get_extra_info("sockname")[1]
        ua._reader_task = asyncio.get_running_loop().create_task(ua._read_stream(reader))
        return ua

    @property
    def transport(self) -> str:
        return "TCP" if self._writer is not None else "UDP"

    async def _read_stream(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() in (b"content-length", b"l"):
                        length = int(value.strip())
                body = await reader.readexactly(length) if length else b""
                self.datagram_received(head + body, self.server)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            return

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            self._writer.close()

    def send(self, text: str, to: Address | None = None) -> None:
        data = text.replace("\n", "\r\n").encode()
        if self._writer is not None:
            self._writer.write(data)  # every message goes over the one connection
            return
        assert self._udp is not None
        self._udp.sendto(data, to or self.server)

    def datagram_received(self, data: bytes, addr: Address) -> None:  # type: ignore[override]
        try:
            msg = parse(data)
        except Exception:
            return
        self.received.append(msg)
        self.arrived_at.append(asyncio.get_running_loop().time())
        self._arrived.set()
        if isinstance(msg, Request):
            self._serve(msg, addr)

    # ---- waiting ---------------------------------------------------------------------------------
    async def expect(self, pred: Callable[[Message], bool], timeout: float = 3.0, what: str = "") -> Message:
        """The first not-yet-taken message matching ``pred``, waiting up to ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, msg in enumerate(self.received):
                if i not in self._taken and pred(msg):
                    self._taken.add(i)
                    return msg
            left = deadline - loop.time()
            if left <= 0:
                seen = [m.start_line() for m in self.received]
                raise AssertionError(
                    f"{self.user}: no {what or 'matching message'} within {timeout}s; saw {seen}"
                )
            self._arrived.clear()
            await wait_set(self._arrived, left)

    async def request(self, method: str, timeout: float = 3.0) -> Request:
        msg = await self.expect(lambda m: isinstance(m, Request) and m.method == method, timeout, method)
        assert isinstance(msg, Request)
        return msg

    async def response(
        self, call_id: str, method: str = "INVITE", final: bool = True, timeout: float = 3.0
    ) -> Response:
        def pred(m: Message) -> bool:
            return (
                isinstance(m, Response)
                and m.call_id == call_id
                and m.cseq[1] == method
                and (m.status >= 200 or not final)
                and m.status != 100
            )

        msg = await self.expect(pred, timeout, f"{method} response")
        assert isinstance(msg, Response)
        return msg

    def when(self, msg: Message) -> float:
        """Loop time at which ``msg`` arrived."""
        return self.arrived_at[next(i for i, m in enumerate(self.received) if m is msg)]

    def requests(self, method: str) -> list[Request]:
        return [m for m in self.received if isinstance(m, Request) and m.method == method]

    # ---- phone side ------------------------------------------------------------------------------
    @property
    def contact(self) -> str:
        if self.contact_host is not None:
            return f"<sip:{self.user}@{self.contact_host}>"
        tp = ";transport=tcp" if self._writer is not None else ""
        return f"<sip:{self.user}@{self.host}:{self.port}{tp}>"

    def _via(self, branch: str) -> str:
        return f"SIP/2.0/{self.transport} {self.host}:{self.port};branch={branch};rport"

    async def register(self, timeout: float = 3.0) -> None:
        call_id = secrets.token_hex(8)
        auth = ""
        for cseq in (1, 2):
            self.send(
                f"REGISTER sip:{self.domain} SIP/2.0\nVia: {self._via('z9hG4bK' + secrets.token_hex(6))}\n"
                f"Max-Forwards: 70\nFrom: <sip:{self.user}@{self.domain}>;tag={secrets.token_hex(4)}\n"
                f"To: <sip:{self.user}@{self.domain}>\nCall-ID: {call_id}\nCSeq: {cseq} REGISTER\n"
                f"Contact: {self.contact}\nExpires: 600\n{self.register_headers}{auth}Content-Length: 0\n\n"
            )
            resp = await self.response(call_id, "REGISTER", timeout=timeout)
            if resp.status == 200:
                return
            assert resp.status == 401 and cseq == 1, resp.start_line()
            challenge = resp.headers.get("www-authenticate")
            assert challenge is not None
            value = build_authorization(challenge, username=self.user, password=self.password, method="REGISTER",
                                        uri=f"sip:{self.domain}", cnonce=secrets.token_hex(4))  # fmt: skip
            auth = f"Authorization: {value}\n"

    def _answer(self, req: Request, status: int, reason: str, to: Address, body: str = "") -> None:
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"Via: {v}" for v in req.headers.get_all("via")]
        lines += [f"Record-Route: {v}" for v in req.headers.get_all("record-route")]
        to_value = req.headers.get("to") or ""
        if ";tag=" not in to_value and status != 100:
            to_value += f";tag={self.user}-{req.call_id[:8]}"
        lines += [f"From: {req.headers.get('from')}", f"To: {to_value}", f"Call-ID: {req.call_id}"]
        lines += [f"CSeq: {req.headers.get('cseq')}", f"Contact: {self.contact}"]
        if body:
            lines += ["Content-Type: application/sdp"]
        lines += [f"Content-Length: {len(body)}", "", body]
        self.send("\n".join(lines), to)

    def _serve(self, req: Request, addr: Address) -> None:
        method = req.method
        if method == "INVITE":
            if req.to_tag is not None:  # re-INVITE: accept
                self._answer(req, 200, "OK", addr)
                return
            self._invites[req.call_id] = (req, addr)
            if self.mode == "busy":
                self._answer(req, 486, "Busy Here", addr)
            elif self.mode in ("answer", "ring", "answer_on_cancel"):
                self._answer(req, 180, "Ringing", addr)
                if self.mode == "answer":
                    self._answer(req, 200, "OK", addr, "v=0\n")
        elif method == "CANCEL" and self.mode == "answer_on_cancel":  # its 200 crossed the CANCEL
            pending = self._invites.pop(req.call_id, None)
            if pending is not None:
                self._answer(pending[0], 200, "OK", pending[1], "v=0\n")
            self._answer(req, 481, "Call/Transaction Does Not Exist", addr)
        elif method == "CANCEL":
            self._answer(req, 200, "OK", addr)
            pending = self._invites.pop(req.call_id, None)
            if pending is not None:
                self._answer(pending[0], 487, "Request Terminated", pending[1])
        elif method in ("BYE", "OPTIONS", "INFO", "UPDATE", "NOTIFY"):
            self._answer(req, 200, "OK", addr)

    def answer(self, req: Request, status: int = 200, reason: str = "OK") -> None:
        """Answer a request the UA does not answer by itself (a SUBSCRIBE reaching the media service):
        Record-Route copied, a To tag (``<user>-<Call-ID[:8]>``) and our Contact added."""
        self._answer(req, status, reason, None)

    def answer_now(self, call_id: str | None = None) -> None:
        """Answer a ringing INVITE (the oldest one, or this Call-ID) with 200."""
        key = call_id or next(iter(self._invites))
        req, addr = self._invites[key]
        self._answer(req, 200, "OK", addr, "v=0\n")

    # ---- caller side -----------------------------------------------------------------------------
    def invite(self, dialed: str, cseq: int = 1, auth: str = "", call_id: str | None = None,
               from_tag: str | None = None) -> Dialog:  # fmt: skip
        """Send an INVITE for ``dialed`` (a Request-URI user part) to the proxy."""
        dlg = Dialog(call_id or secrets.token_hex(8), from_tag or secrets.token_hex(4), dialed, cseq,
                     "z9hG4bK" + secrets.token_hex(6))  # fmt: skip
        dlg.from_header = f"<sip:{self.user}@{self.domain}>;tag={dlg.from_tag}"
        dlg.invite_text = (
            f"INVITE sip:{dialed}@{self.domain} SIP/2.0\nVia: {self._via(dlg.branch)}\nMax-Forwards: 70\n"
            f"From: <sip:{self.user}@{self.domain}>;tag={dlg.from_tag}\nTo: <sip:{dialed}@{self.domain}>\n"
            f"Call-ID: {dlg.call_id}\nCSeq: {cseq} INVITE\nContact: {self.contact}\n{auth}"
            "Content-Type: application/sdp\nContent-Length: 4\n\nv=0\n"
        )
        self.send(dlg.invite_text)
        return dlg

    async def call(self, dialed: str, timeout: float = 3.0, extra: str = "") -> Dialog:
        """INVITE through the proxy, answering its 407 challenge like a phone (ACK, then resend);
        ``extra``: header lines both INVITEs carry (``Name: value\n`` each)."""
        dlg = self.invite(dialed, auth=extra)
        first = await self.response(dlg.call_id, final=True, timeout=timeout)
        assert first.status == 407, first.start_line()
        self._ack_non_2xx(dlg, first)
        challenge = first.headers.get("proxy-authenticate")
        assert challenge is not None
        value = build_authorization(challenge, username=self.user, password=self.password, method="INVITE",
                                    uri=f"sip:{dialed}@{self.domain}", cnonce=secrets.token_hex(4))  # fmt: skip
        dlg.credentials = f"Proxy-Authorization: {value}\n"
        return self.invite(dialed, 2, dlg.credentials + extra, dlg.call_id, dlg.from_tag)

    def _ack_non_2xx(self, dlg: Dialog, resp: Response) -> None:
        self.send(
            f"ACK sip:{dlg.to_user}@{self.domain} SIP/2.0\nVia: {self._via(dlg.branch)}\nMax-Forwards: 70\n"
            f"From: {dlg.from_header}\nTo: {resp.headers.get('to')}\n"
            f"Call-ID: {dlg.call_id}\nCSeq: {dlg.cseq} ACK\nContent-Length: 0\n\n"
        )

    def ack(self, dlg: Dialog, resp: Response) -> None:
        """ACK a final answer: a non-2xx hop by hop; a 2xx end to end over the Record-Route set."""
        if resp.status >= 300:
            self._ack_non_2xx(dlg, resp)
            return
        self.established(dlg, resp)
        self.in_dialog(dlg, "ACK", dlg.cseq)

    @staticmethod
    def established(dlg: Dialog, resp: Response) -> None:
        """The UAC's dialog from a 2xx: the peer's tag, the route set (Record-Route reversed), the
        remote target (its Contact)."""
        dlg.to_header = resp.headers.get("to") or ""
        dlg.route_set = list(reversed(resp.headers.get_all("record-route")))
        contact = resp.headers.get("contact") or ""
        dlg.remote_target = (
            contact[contact.index("<") + 1 : contact.index(">")] if "<" in contact else contact
        )

    # ---- subscriber side -----------------------------------------------------------------------------
    def _subscribe_text(self, dlg: Dialog, event: str, extra: str) -> str:
        return (
            f"SUBSCRIBE sip:{dlg.to_user}@{self.domain} SIP/2.0\nVia: {self._via(dlg.branch)}\nMax-Forwards: 70\n"
            f"From: {dlg.from_header}\nTo: <sip:{dlg.to_user}@{self.domain}>\nCall-ID: {dlg.call_id}\n"
            f"CSeq: {dlg.cseq} SUBSCRIBE\nContact: {self.contact}\nEvent: {event}\nExpires: 3600\n"
            f"Accept: application/simple-message-summary\n{extra}Content-Length: 0\n\n"
        )

    async def subscribe(self, user: str, event: str = "message-summary", call_id: str | None = None,
                        challenged: bool = True, extra: str = "", timeout: float = 3.0) -> Dialog:  # fmt: skip
        """SUBSCRIBE sip:<user>@domain through the proxy. ``challenged``: the first answer must be the
        407, answered like a phone (the retry carries credentials and CSeq + 1); returns once the retry
        is sent. Otherwise it is sent once and the test reads the answer (a 489 needs no challenge).
        ``extra``: header lines both SUBSCRIBEs carry."""
        dlg = Dialog(
            call_id or secrets.token_hex(8), secrets.token_hex(4), user, 1, "z9hG4bK" + secrets.token_hex(6)
        )
        dlg.from_header = f"<sip:{self.user}@{self.domain}>;tag={dlg.from_tag}"
        self.send(self._subscribe_text(dlg, event, extra))
        if not challenged:
            return dlg
        first = await self.response(dlg.call_id, "SUBSCRIBE", timeout=timeout)
        assert first.status == 407, first.start_line()
        challenge = first.headers.get("proxy-authenticate")
        assert challenge is not None
        value = build_authorization(challenge, username=self.user, password=self.password, method="SUBSCRIBE",
                                    uri=f"sip:{user}@{self.domain}", cnonce=secrets.token_hex(4))  # fmt: skip
        dlg.cseq, dlg.branch = 2, "z9hG4bK" + secrets.token_hex(6)
        dlg.credentials = f"Proxy-Authorization: {value}\n"
        self.send(self._subscribe_text(dlg, event, dlg.credentials + extra))
        return dlg

    def in_dialog(self, dlg: Dialog, method: str, cseq: int | None = None, extra: str = "") -> None:
        if cseq is None:
            dlg.cseq += 1
            cseq = dlg.cseq
        routes = "".join(f"Route: {r}\n" for r in dlg.route_set)
        self.send(
            f"{method} {dlg.remote_target} SIP/2.0\nVia: {self._via('z9hG4bK' + secrets.token_hex(6))}\n"
            f"{routes}Max-Forwards: 70\nFrom: {dlg.from_header}\n"
            f"To: {dlg.to_header}\nCall-ID: {dlg.call_id}\nCSeq: {cseq} {method}\n{extra}Content-Length: 0\n\n"
        )

    def cancel(self, dlg: Dialog) -> None:
        self.send(
            f"CANCEL sip:{dlg.to_user}@{self.domain} SIP/2.0\nVia: {self._via(dlg.branch)}\nMax-Forwards: 70\n"
            f"From: <sip:{self.user}@{self.domain}>;tag={dlg.from_tag}\nTo: <sip:{dlg.to_user}@{self.domain}>\n"
            f"Call-ID: {dlg.call_id}\nCSeq: {dlg.cseq} CANCEL\nContent-Length: 0\n\n"
        )


def trunk_invite(ua: Ua, did: str, caller: str, extra: str = "") -> Dialog:
    """An INVITE from the carrier to one of our DIDs (accepted by source address, no auth)."""
    dlg = Dialog(secrets.token_hex(8), secrets.token_hex(4), did, 1, "z9hG4bK" + secrets.token_hex(6))
    dlg.from_header = f"<sip:{caller}@carrier.example>;tag={dlg.from_tag}"
    host, port = ua.server
    ua.send(
        f"INVITE sip:{did}@{host}:{port} SIP/2.0\nVia: {ua._via(dlg.branch)}\nMax-Forwards: 70\n"
        f"From: {dlg.from_header}\nTo: <sip:{did}@{host}:{port}>\n"
        f"Call-ID: {dlg.call_id}\nCSeq: 1 INVITE\nContact: <sip:{caller}@{ua.host}:{ua.port}>\n{extra}"
        "Content-Type: application/sdp\nContent-Length: 4\n\nv=0\n"
    )
    return dlg
