"""The media service's SIP socket: a user agent's share of RFC 3261 transactions over UDP.

The service only ever talks to the proxy, over UDP, so what it needs of §17 is small and kept here:
a retransmitted request gets the same final answer again (responses are remembered for 32 s, §17.2);
a 2xx to an INVITE is resent with T1 doubling until its ACK arrives (§13.3.1.4); requests we send
(BYE, NOTIFY) are resent with T1 doubling up to T2 until a final response, and given up after
64*T1 (§17.1.2). Malformed datagrams are dropped; nothing raises into the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from sipcore.errors import SipParseError
from sipcore.message import Request, Response, new_branch, parse

log = structlog.get_logger("sipcore.media.sip")

T1 = 0.5
T2 = 4.0
LINGER = 64 * T1  # 32 s
Address = tuple[str, int]


@dataclass(slots=True)
class _Pending:
    """A request we sent, waiting for its final response."""

    data: bytes
    dest: Address
    on_final: Callable[[Response | None], None] | None
    invite: bool
    interval: float = T1
    started: float = 0.0
    handle: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class _Answered:
    """A 2xx to an INVITE, resent until the ACK (keyed by Call-ID and CSeq number)."""

    data: bytes
    dest: Address
    interval: float = T1
    started: float = 0.0
    handle: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class _Seen:
    """A request we answered (or are answering): its final response is resent to retransmissions."""

    response: bytes | None
    until: float


class SipSocket(asyncio.DatagramProtocol):
    """Requests reach ``on_request(req, source)`` once (retransmissions are answered here)."""

    def __init__(self, on_request: Callable[[Request, Address], None], host: str, port: int) -> None:
        self.on_request = on_request
        self.host = host
        self.port = port
        self.transport: asyncio.DatagramTransport | None = None
        self._pending: dict[str, _Pending] = {}  # by the branch of our Via
        self._answered: dict[tuple[str, int], _Answered] = {}
        self._seen: dict[tuple[str, str, str], _Seen] = {}  # (branch, method, call-id) -> our answer
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dropped = 0

    # asyncio -------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
        source = (addr[0], addr[1])
        if not data.strip():
            return  # keep-alive
        try:
            msg = parse(data)
        except SipParseError:
            self.dropped += 1
            return
        try:
            if isinstance(msg, Response):
                self._on_response(msg)
            else:
                self._on_request(msg, source)
        except SipParseError:
            self.dropped += 1  # a header we needed did not parse: as good as garbage
        except Exception:  # never into the event loop: log, and the peer retransmits or gives up
            log.exception("media_sip_error")

    def error_received(self, exc: Exception) -> None:
        pass

    def close(self) -> None:
        for p in self._pending.values():
            if p.handle:
                p.handle.cancel()
        for a in self._answered.values():
            if a.handle:
                a.handle.cancel()
        self._pending.clear()
        self._answered.clear()
        if self.transport is not None:
            self.transport.close()

    # requests in ----------------------------------------------------------------------------------
    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _on_request(self, req: Request, source: Address) -> None:
        method = req.method
        if method == "ACK":
            answered = self._answered.pop((req.call_id, req.cseq[0]), None)
            if answered is not None and answered.handle:
                answered.handle.cancel()
            self.on_request(req, source)
            return
        key = (req.top_via.branch or "", method, req.call_id)
        now = self._now()
        seen = self._seen.get(key)
        if seen is not None and seen.until > now:
            if seen.response is not None:
                self._send(seen.response, source)
            return
        if len(self._seen) > 10_000:
            self._seen = {k: v for k, v in self._seen.items() if v.until > now}
        self._seen[key] = _Seen(None, now + LINGER)
        self.on_request(req, source)

    def respond(self, req: Request, resp: Response, dest: Address) -> None:
        """Send a response and remember it for retransmissions of ``req``; a 2xx to an INVITE is
        resent until ACKed."""
        data = resp.serialize()
        key = (req.top_via.branch or "", req.method, req.call_id)
        seen = self._seen.get(key)
        if seen is not None and resp.status >= 200:
            seen.response = data
        self._send(data, dest)
        if req.method == "INVITE" and 200 <= resp.status < 300:
            answered = _Answered(data, dest, started=self._now())
            self._answered[(req.call_id, req.cseq[0])] = answered
            self._arm_answered((req.call_id, req.cseq[0]), answered)

    def _arm_answered(self, key: tuple[str, int], answered: _Answered) -> None:
        assert self._loop is not None

        def fire() -> None:
            if self._answered.get(key) is not answered:
                return
            if self._now() - answered.started >= LINGER:
                del self._answered[key]  # never ACKed: the dialog's owner notices by its own timer
                return
            self._send(answered.data, answered.dest)
            answered.interval = min(answered.interval * 2, T2)
            self._arm_answered(key, answered)

        answered.handle = self._loop.call_later(answered.interval, fire)

    # requests out ---------------------------------------------------------------------------------
    def via(self) -> tuple[str, str]:
        branch = new_branch()
        host = f"[{self.host}]" if ":" in self.host else self.host
        return branch, f"SIP/2.0/UDP {host}:{self.port};branch={branch};rport"

    def request(
        self, req: Request, dest: Address, on_final: Callable[[Response | None], None] | None = None
    ) -> None:
        """Send a request (its top Via must come from ``via()``); ``on_final`` gets the final
        response, or None after 32 s without one."""
        branch = req.top_via.branch or ""
        pending = _Pending(req.serialize(), dest, on_final, req.method == "INVITE", started=self._now())
        self._pending[branch] = pending
        self._send(pending.data, dest)
        self._arm_pending(branch, pending)

    def _arm_pending(self, branch: str, pending: _Pending) -> None:
        assert self._loop is not None

        def fire() -> None:
            if self._pending.get(branch) is not pending:
                return
            if self._now() - pending.started >= LINGER:
                del self._pending[branch]
                if pending.on_final is not None:
                    pending.on_final(None)
                return
            self._send(pending.data, pending.dest)
            pending.interval = pending.interval * 2 if pending.invite else min(pending.interval * 2, T2)
            self._arm_pending(branch, pending)

        pending.handle = self._loop.call_later(pending.interval, fire)

    def _on_response(self, resp: Response) -> None:
        branch = resp.top_via.branch or ""
        pending = self._pending.get(branch)
        if pending is None or resp.status < 200:
            return  # a provisional (we send no INVITE): retransmissions go on until the final answer
        del self._pending[branch]
        if pending.handle:
            pending.handle.cancel()
        if pending.on_final is not None:
            pending.on_final(resp)

    def _send(self, data: bytes, dest: Address) -> None:
        if self.transport is not None:
            self.transport.sendto(data, dest)
