"""SIP over TLS (RFC 3261 §26.2) and over WebSocket, plain and secure (RFC 7118): the listeners, the
connections and outbound TLS, beside the UDP/TCP transports of sipcore/transport.py.

TLS is TCP framing under TLS, so a TLS connection is a TcpConnection whose bytes pass through TLS (run
in memory, ssl.MemoryBIO) first: it is counted against the connection caps, the message deadlines and
the idle timeout *before* its handshake (a flood of handshakes costs nothing past the caps), and a
failed handshake (plain text on
the TLS port, a bad client certificate, no answer within the handshake timeout) is counted and closed
without a traceback. A WebSocket connection is one whose stream is an HTTP upgrade and then frames
(sipcore/websocket.py); each frame message is one SIP message. Every one of them is registered with the
TransportManager like a TCP connection, so responses and requests to a registered phone go back over
its flow (``send_flow``), from any worker.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from . import websocket as ws
from .connection_limits import Throttle
from .flow import Address
from .transport import ListenError, TcpConnection, TransportManager, resolve_stream_host, split_hostport
from .waiting import within

log = structlog.get_logger("sipcore.transport")

DEFAULT_PORTS = {"tls": 5061, "ws": 80, "wss": 443}


class PeerPolicy(Protocol):
    """What outbound TLS needs of a destination: a context, the SNI name and the certificate check
    (server.tls_context.PeerTls has this shape)."""

    @property
    def context(self) -> ssl.SSLContext: ...

    @property
    def server_name(self) -> str | None: ...

    def accepts(self, der: bytes | None) -> bool: ...


@dataclass
class SecureSettings:
    """Where the secure listeners are and how they shake hands (built by the config bridge)."""

    tls: list[str] = field(default_factory=list)
    ws: list[str] = field(default_factory=list)
    wss: list[str] = field(default_factory=list)
    context: ssl.SSLContext | None = None  # the server context (TLS and WSS); reloaded in place
    handshake_timeout: float = 10.0  # TLS handshake, and the WebSocket upgrade request


@dataclass(slots=True)
class SecureStats:
    """Plain counters; the server exports them as metrics."""

    tls_handshakes: int = 0
    tls_handshake_failed: int = 0
    ws_upgraded: int = 0
    ws_refused: int = 0  # upgrade requests answered with an HTTP error
    ws_closed_too_big: int = 0  # close code 1009
    ws_protocol_errors: int = 0  # close code 1002 (unmasked frame, bad opcode...)
    tls_outbound_failed: int = 0  # connect, handshake or pinned fingerprint failed


class TlsConnection(TcpConnection):
    """A TCP connection whose bytes go through TLS. Accepted ones run the server side of TLS in
    memory (ssl.MemoryBIO: the same on asyncio's loop and uvloop, whose start_tls stalls on accepted
    sockets) after the TCP checks; outbound ones are opened already secured (create_connection(ssl=)),
    as are plain WebSocket ones (no context): their bytes pass straight through."""

    transport_name = "tls"

    def __init__(
        self, secure: SecureTransports, context: ssl.SSLContext | None, outbound: bool = False
    ) -> None:
        super().__init__(secure.manager, outbound)
        self.secure = secure
        self.sslobj: ssl.SSLObject | None = None
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.context = None if outbound else context
        self.ready = self.context is None  # bytes may flow (no handshake pending)
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.closed:
            return
        if self.context is not None:
            self.sslobj = self.context.wrap_bio(self.incoming, self.outgoing, server_side=True)
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.secure.settings.handshake_timeout, self._handshake_late)
        else:
            self.opened()

    def _handshake_late(self) -> None:
        if not self.ready and not self.closed:
            self._failed(TimeoutError("no TLS handshake within the handshake timeout"))

    def _failed(self, exc: BaseException) -> None:
        self.secure.stats.tls_handshake_failed += 1
        remote = self.flow.remote if self.flow is not None else ("?", 0)
        self.secure.note("tls_handshake_failed", f"{remote[0]}:{remote[1]}", _reason(exc))
        self._flush()  # the alert, if TLS wrote one
        self.close()

    def _flush(self) -> None:
        out = self.outgoing.read()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def data_received(self, data: bytes) -> None:
        if self.closed or self.flow is None:
            return
        sslobj = self.sslobj
        if sslobj is None:
            self.on_plaintext(data)
            return
        self.incoming.write(data)
        if not self.ready:
            try:
                sslobj.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                return
            except (ssl.SSLError, OSError, ValueError) as exc:
                self._failed(exc)
                return
            self._flush()
            self.ready = True
            self.secure.stats.tls_handshakes += 1
            if self._timer is not None:
                self._timer.cancel()
            self.opened()
        chunks = []
        try:
            # A read returns one record's plaintext; read again only while bytes of another record
            # or plaintext are left: no SSLWantReadError raised per message on the common path.
            incoming = self.incoming
            chunk = sslobj.read(65536)
            while chunk:
                chunks.append(chunk)
                chunk = sslobj.read(65536) if incoming.pending or sslobj.pending() else b""
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLError, OSError, ValueError):  # the peer's close_notify, a bad record
            self.close()
        if self.outgoing.pending:
            self._flush()  # TLS 1.3 session tickets, key updates
        if chunks and not self.closed:
            self.on_plaintext(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def on_plaintext(self, data: bytes) -> None:
        """Bytes of the stream, decrypted: SIP messages framed as over TCP."""
        TcpConnection.data_received(self, data)

    def opened(self) -> None:
        """The secure channel is up (a WebSocket connection then waits for its upgrade request)."""

    def send_bytes(self, data: bytes) -> bool:
        """Bytes onto the stream (encrypted when TLS runs here)."""
        sslobj = self.sslobj
        if sslobj is None:
            return TcpConnection.write(self, data)
        if not self.ready or self.closed or self.transport is None or self.transport.is_closing():
            return False
        try:
            sslobj.write(data)
        except (ssl.SSLError, OSError, ValueError):
            self.close()
            return False
        self._flush()
        self.last_activity = time.monotonic()
        return True

    def write(self, data: bytes) -> bool:
        return self.send_bytes(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        super().connection_lost(exc)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return getattr(exc, "reason", None) or str(exc)
    return type(exc).__name__ if not str(exc) else str(exc)


class WsConnection(TlsConnection):
    """SIP over WebSocket (``ws``) or secure WebSocket (``wss``, with a context): the HTTP upgrade,
    then one SIP message per WebSocket message, written back as text frames."""

    transport_name = "ws"

    def __init__(self, secure: SecureTransports, context: ssl.SSLContext | None) -> None:
        super().__init__(secure, context)
        self.transport_name = "wss" if context is not None else "ws"
        self.head = bytearray()
        self.decoder: ws.FrameDecoder | None = None  # set once upgraded
        self._completed = False  # the last read completed the upgrade, a message or a ping
        self._upgrade_timer: asyncio.TimerHandle | None = None

    def opened(self) -> None:
        loop = asyncio.get_running_loop()
        self._upgrade_timer = loop.call_later(self.secure.settings.handshake_timeout, self._upgrade_late)

    def _upgrade_late(self) -> None:
        if self.decoder is None and not self.closed:
            self.secure.stats.ws_refused += 1
            self.close()

    def on_plaintext(self, data: bytes) -> None:
        if self.decoder is None:
            self._upgrade(data)
        else:
            self._frames(data)
        self._clock(data)

    def _clock(self, data: bytes) -> None:
        """The TCP message deadlines (MessageClock) on WebSocket terms: the upgrade request and each
        message or ping is what completes; bytes of an unfinished frame or message are pending."""
        if self.closed:
            return
        decoder = self.decoder
        pending = len(self.head) if decoder is None else len(decoder.buf) + decoder.fragments_size
        self.clock.on_data(pending, time.monotonic(), self._completed)
        self._completed = False
        if self.clock.in_progress:
            self.manager.in_progress.add(self)
        else:
            self.manager.in_progress.discard(self)

    def _upgrade(self, data: bytes) -> None:
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > ws.MAX_HANDSHAKE:
                self.secure.stats.ws_refused += 1
                self.send_bytes(b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n")
                self.close()
            return
        answer = ws.answer_upgrade(bytes(self.head[: end + 4]))
        rest = bytes(self.head[end + 4 :])
        self.head = bytearray()
        self.send_bytes(answer.response)
        if not answer.accepted:
            self.secure.stats.ws_refused += 1
            remote = self.flow.remote if self.flow is not None else ("?", 0)
            self.secure.note("ws_upgrade_refused", f"{remote[0]}:{remote[1]}", answer.reason)
            self.close()
            return
        self.secure.stats.ws_upgraded += 1
        self._completed = True
        if self._upgrade_timer is not None:
            self._upgrade_timer.cancel()
        self.decoder = ws.FrameDecoder(self.manager.limits.max_message_size)
        if rest:
            self._frames(rest)

    def _frames(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        decoder, flow = self.decoder, self.flow
        if decoder is None or flow is None:
            return
        for event in decoder.feed(data):
            if isinstance(event, (ws.Message, ws.Ping, ws.Pong)):
                self._completed = True
            if isinstance(event, ws.Message):
                if event.payload.strip(b"\r\n"):  # an empty message (a keep-alive) carries no SIP
                    self.manager.dispatch(event.payload, flow)
            elif isinstance(event, ws.Ping):
                self.send_bytes(ws.encode_frame(ws.PONG, event.payload))
            elif isinstance(event, ws.Closed):
                self.send_bytes(ws.close_frame(ws.NORMAL if event.code == 1005 else event.code))
                self.close()
                return
            elif isinstance(event, ws.Failed):
                if event.code == ws.TOO_BIG:
                    self.secure.stats.ws_closed_too_big += 1
                else:
                    self.secure.stats.ws_protocol_errors += 1
                self.secure.note(
                    "ws_closed", f"{flow.remote[0]}:{flow.remote[1]}", f"{event.code} {event.reason}"
                )
                self.send_bytes(ws.close_frame(event.code, event.reason))
                self.close()
                return

    def write(self, data: bytes) -> bool:
        """A SIP message out: one text frame (RFC 7118 §5.1); nothing before the upgrade."""
        if self.decoder is None:
            return False
        return self.send_bytes(ws.encode_frame(ws.TEXT, data))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._upgrade_timer is not None:
            self._upgrade_timer.cancel()
        super().connection_lost(exc)


class SecureTransports:
    """The TLS, WS and WSS listeners of one TransportManager, and its outbound TLS connections."""

    def __init__(self, manager: TransportManager, settings: SecureSettings) -> None:
        self.manager = manager
        self.settings = settings
        self.stats = SecureStats()
        self.servers: dict[str, list[asyncio.base_events.Server]] = {"tls": [], "ws": [], "wss": []}
        self._pending: dict[Address, asyncio.Future[TlsConnection]] = {}
        self._throttles: dict[str, Throttle] = {}

    def note(self, event: str, remote: str, reason: str) -> None:
        """Log a refused connection at most once per 10 s per event (a flood of bad handshakes is
        one line with a count, not one per connection); the counters count every one."""
        throttle = self._throttles.get(event)
        if throttle is None:
            throttle = self._throttles[event] = Throttle()
        count = throttle.note(time.monotonic())
        if count:
            log.info(event, count=count, last_remote=remote, last_reason=reason)

    def factory(self, kind: str) -> Callable[[], TlsConnection]:
        """Connections of one listener; the context is read per connection (use_context swaps it)."""
        if kind == "ws":
            return lambda: WsConnection(self, None)
        if self.settings.context is None:
            raise ValueError(f"{kind} listeners need server.tls certificate and key")
        if kind == "wss":
            return lambda: WsConnection(self, self.settings.context)
        return lambda: TlsConnection(self, self.settings.context)

    async def start(self, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        for kind, texts in (("tls", s.tls), ("ws", s.ws), ("wss", s.wss)):
            for text in texts:
                factory = self.factory(kind)
                inherited = self.manager.inherited.pop((kind, text), None)
                if inherited is not None:
                    server = await loop.create_server(factory, sock=inherited, backlog=1024)
                else:
                    host, port = split_hostport(text, DEFAULT_PORTS[kind])
                    try:
                        server = await loop.create_server(factory, host, port, reuse_address=True,
                                                          reuse_port=reuse_port or None, backlog=1024)  # fmt: skip
                    except OSError as exc:
                        raise ListenError.of(exc, kind.upper(), text) from None
                self.servers[kind].append(server)

    def addresses(self, kind: str) -> list[Address]:
        return [
            (str(a[0]), int(a[1])) for s in self.servers[kind] for a in (k.getsockname() for k in s.sockets)
        ]

    async def send_tls(self, data: bytes, dest: Address, peer: PeerPolicy | None) -> bool:
        """Send over the open TLS connection to ``dest``, or open one with ``peer``'s context, SNI and
        certificate check (RFC 3261 §18.1.1 over TLS). False when it cannot be opened (counted)."""
        conn = self.manager.by_remote.get(dest)
        if conn is not None and not conn.closed and conn.transport_name == "tls":
            return conn.write(data)
        pending = self._pending.get(dest)
        if pending is None:
            if peer is None:
                self.stats.tls_outbound_failed += 1
                return False
            loop = asyncio.get_running_loop()
            pending = self._pending[dest] = loop.create_future()
            try:
                opened = await self._open(dest, peer)
                pending.set_result(opened)
            except (TimeoutError, OSError, ValueError) as exc:
                self.stats.tls_outbound_failed += 1
                log.warning("tls_connect_failed", destination=f"{dest[0]}:{dest[1]}", error=_reason(exc))
                pending.set_exception(exc)
                pending.exception()  # retrieved
                return False
            finally:
                self._pending.pop(dest, None)
            return opened.write(data)
        try:
            opened = await asyncio.shield(pending)
        except (TimeoutError, OSError, ValueError):
            return False
        return opened.write(data)

    async def _open(self, dest: Address, peer: PeerPolicy) -> TlsConnection:
        loop = asyncio.get_running_loop()
        timeout = self.settings.handshake_timeout
        # the name first, as TransportManager.send_tcp does: a create_connection cancelled while it
        # resolves leaves the lookup's failure unretrieved; SNI and verification keep the name
        host = await resolve_stream_host(loop, dest[0], dest[1])
        transport, conn = await within(
            loop.create_connection(lambda: TlsConnection(self, None, outbound=True), host, dest[1],
                                   ssl=peer.context, server_hostname=peer.server_name or dest[0],
                                   ssl_handshake_timeout=timeout),
            timeout=timeout + 1,
        )  # fmt: skip
        sslobj = transport.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        if not peer.accepts(der):
            transport.close()
            raise ssl.SSLError("certificate does not match the pinned fingerprint")
        return conn

    def use_context(self, context: ssl.SSLContext | None) -> None:
        """A reloaded server context (a renewed certificate): connections accepted from now on use
        it, open ones keep theirs. Ignored without TLS listeners (adding them needs a restart)."""
        if context is not None and self.settings.context is not None:
            self.settings.context = context

    async def close(self) -> None:
        for servers in self.servers.values():
            for s in servers:
                s.close()
