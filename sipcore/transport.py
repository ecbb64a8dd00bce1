"""asyncio transports for SIP: UDP and TCP listeners (IPv4 and IPv6), and outbound TCP connections.

This is the I/O edge: it frames bytes into messages and hands each one, with its Flow, to a single
handler callable; it never parses SIP itself beyond TCP framing. Limits: max message size, inbound TCP
connections in all (below the descriptor limit, `connection_limits.connection_cap`) and per source
address, a deadline and a minimum byte rate for a message once begun (`connection_limits.MessageClock`),
idle timeout; RFC 5626 CRLF keep-alive pings are answered with a pong.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import os
import resource
import select
import socket
import struct
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import structlog

from .connection_limits import MessageClock, MessageRules, Throttle, connection_cap
from .flow import Address, Flow
from .framing import FramingFailed, PingReceived, StreamFramer
from .waiting import Background, within

log = structlog.get_logger("sipcore.transport")

Handler = Callable[[bytes, Flow], None]
ErrorHandler = Callable[[FramingFailed, Flow], bytes | None]

# Kernel buffers asked for each UDP socket: the receive queue is server.limits.udp_receive_buffer
# (why this size: set_receive_buffer); the send buffer only has to take one loop iteration's replies.
DEFAULT_UDP_RECEIVE_BUFFER = 512 * 1024
UDP_SEND_BUFFER = 4 * 1024 * 1024
SO_MEMINFO = 55  # <asm-generic/socket.h>: a socket's memory figures, drops among them (Linux)
_SK_MEMINFO_DROPS = 8


@dataclass(slots=True)
class TransportLimits:
    max_message_size: int = 65535
    max_tcp_per_source: int = 64
    tcp_idle_timeout: float = 3700.0
    max_tcp_connections: int | None = None  # inbound, whole server (None: as the descriptors allow)
    tcp_reserved_fds: int = 256  # descriptors per process kept for everything but inbound SIP TCP
    tcp_message_timeout: float = 10.0  # to complete a message once begun
    tcp_min_byte_rate: int = 100  # bytes/s a message in progress must average (0: no rule)
    udp_receive_buffer: int = DEFAULT_UDP_RECEIVE_BUFFER  # bytes asked for each UDP socket's queue


@dataclass(slots=True)
class TransportStats:
    """Plain counters; the server exports them as metrics."""

    udp_datagrams: int = 0
    udp_oversize: int = 0
    tcp_accepted: int = 0
    tcp_refused: int = 0  # over the per-source cap
    tcp_refused_cap: int = 0  # over the whole-process cap (TransportManager.tcp_cap)
    tcp_closed_idle: int = 0
    tcp_closed_timeout: int = 0  # a message (or an accepted connection's first) not finished in time
    tcp_closed_slow: int = 0  # a message in progress below the minimum byte rate
    tcp_framing_errors: int = 0
    keepalive_pings: int = 0
    udp_not_ip: int = 0  # datagrams refused before the socket: the destination is not an IP literal
    udp_send_errors: int = 0  # datagrams the socket refused (family mismatch, EINVAL…)


def join_hostport(host: str, port: int) -> str:
    """(host, port) → 'host:port', an IPv6 host in brackets: the text `split_hostport` reads back."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_hostport(text: str, default_port: int) -> Address:
    """'0.0.0.0:5060', '[::]:5060', 'host' → (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, default_port


@lru_cache(maxsize=4096)
def ip_family_v6(host: str) -> bool | None:
    """True/False for an IPv6/IPv4 literal, None for a name or malformed text ('127.0', '12'):
    sendto would resolve those on the event loop (blocking) or raise (uvloop), so they are refused."""
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return None


def _peer(addr: tuple) -> Address:  # type: ignore[type-arg]
    return str(addr[0]), int(addr[1])


def set_receive_buffer(sock: socket.socket, size: int) -> None:
    """Ask for a receive queue of ``size`` bytes (Linux doubles it for its bookkeeping and caps the
    request at ``net.core.rmem_max``). Why not more: a datagram that waited past SIP's T1 (500 ms)
    has been retransmitted already, so a deep queue only makes an overloaded server handle stale
    copies and recover late; one that overflows drops them in the kernel instead, at no cost
    (benchmarks/RESULTS.md, "A shorter UDP receive queue")."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except OSError:
        pass


def receive_dropped(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped at ``sock`` because its receive queue was full (its ``sk_drops``,
    which also counts the rare datagram with a bad checksum), or None where the kernel does not say."""
    try:
        data = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 9 * 4)
    except OSError:
        return None
    if len(data) < (_SK_MEMINFO_DROPS + 1) * 4:
        return None
    return int(struct.unpack_from("9I", data)[_SK_MEMINFO_DROPS])


def bind_udp(
    text: str, reuse_port: bool = False, receive_buffer: int = DEFAULT_UDP_RECEIVE_BUFFER
) -> socket.socket:
    """A bound, non-blocking UDP socket for ``text`` ('host:port'), with a receive queue of
    ``receive_buffer`` bytes (`set_receive_buffer`) and a large send buffer."""
    host, port = split_hostport(text, 5060)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        # No SO_REUSEADDR on UDP: it would let a second server bind the same port silently and
        # receive part of the traffic. Workers share one socket bound once (inherited over fork).
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        set_receive_buffer(sock, receive_buffer)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UDP_SEND_BUFFER)
        except OSError:
            pass
        _bind(sock, host, port, "UDP", text)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class ListenError(OSError):
    """A listening address that cannot be bound; its text names the transport and the address, so
    ``sipcore serve`` prints one line instead of a traceback."""

    @classmethod
    def of(cls, exc: OSError, transport: str, address: str) -> ListenError:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        return cls(exc.errno, f"cannot listen on {transport} {address}: {why}")


def _bind(sock: socket.socket, host: str, port: int, transport: str, text: str) -> None:
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise ListenError.of(exc, transport, text) from None


def bind_tcp(text: str) -> socket.socket:
    """A listening, non-blocking TCP socket for ``text``, to share between worker processes."""
    host, port = split_hostport(text, 5070)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        _bind(sock, host, port, "TCP", text)
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, manager: TransportManager) -> None:
        self.manager = manager
        self.transport: asyncio.DatagramTransport | None = None
        self.local: Address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.local = _peer(transport.get_extra_info("sockname"))

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        m = self.manager
        m.stats.udp_datagrams += 1
        if len(data) > m.limits.max_message_size:
            m.stats.udp_oversize += 1
            return
        if data == b"\r\n\r\n" or data == b"\r\n":
            m.stats.keepalive_pings += 1
            if data == b"\r\n\r\n" and self.transport is not None:
                self.transport.sendto(b"\r\n", addr)
            return
        m.dispatch(data, Flow("udp", (addr[0], addr[1]), self.local))

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable etc.: nothing to do
        pass


class SendOnlyUdp:
    """The sending half of a UDP socket read by a SharedUdpReader (worker processes sharing it):
    what `UdpEndpoint` needs of a transport, without asyncio's reader. Like UDP itself, a
    datagram the kernel cannot take right now is dropped (the SIP layer retransmits)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.closed = False
        self.dropped = 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "sockname":
            return self.sock.getsockname()
        return self.sock if name == "socket" else default

    def sendto(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        try:
            self.sock.sendto(data, addr)
        except OSError:  # full buffer (EAGAIN), unreachable: as lost on the wire
            self.dropped += 1

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()


class SharedUdpReader:
    """Reads a UDP socket that other processes read too, each datagram by one of them.

    Every worker registers the socket in an epoll of its own with EPOLLEXCLUSIVE and watches that
    epoll from its event loop: the kernel wakes one waiting worker per datagram instead of all of
    them (the thundering herd cost +30 % CPU per message with two workers), and a busy worker
    finds the socket readable on its next loop iteration, so whoever is free reads. Up to
    ``batch`` datagrams per wake-up; the rest wait for the next one (level-triggered)."""

    def __init__(self, endpoint: UdpEndpoint, sock: socket.socket, batch: int = 64) -> None:
        self.endpoint = endpoint
        self.sock = sock
        self.batch = batch
        self.loop = asyncio.get_running_loop()
        self.epoll = select.epoll()
        self.epoll.register(sock.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
        self.loop.add_reader(self.epoll.fileno(), self._readable)

    def _readable(self) -> None:
        self.epoll.poll(0)  # consume the wake-up; readiness is re-checked level-triggered
        recv = self.sock.recvfrom
        received = self.endpoint.datagram_received
        for _ in range(self.batch):
            try:
                data, addr = recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error reported on the socket: nothing to read, go on
                continue
            received(data, addr)

    def close(self) -> None:
        self.loop.remove_reader(self.epoll.fileno())
        self.epoll.close()


class TcpConnection(asyncio.Protocol):
    """One TCP connection, accepted or opened by us; addressed by ``conn_id``. Subclasses for TLS and
    WebSocket (sipcore/transport_secure.py) name their flows' transport in ``transport_name``."""

    transport_name = "tcp"

    def __init__(self, manager: TransportManager, outbound: bool = False) -> None:
        self.manager = manager
        self.outbound = outbound
        self.transport: asyncio.Transport | None = None
        self.framer = StreamFramer(manager.limits.max_message_size)
        self.conn_id = f"{manager.conn_prefix}{next(manager._ids)}"
        self.flow: Flow | None = None
        self.last_activity = time.monotonic()
        self.clock = MessageClock(self.last_activity, awaiting_first=not outbound)
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        remote = _peer(transport.get_extra_info("peername"))
        local = _peer(transport.get_extra_info("sockname"))
        m = self.manager
        if not self.outbound:
            refused = m.refusal(remote[0])
            if refused is not None:
                self.closed = True
                transport.abort()  # at once, nothing to flush: the descriptor is free again
                m.refused(refused, remote[0])
                return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.flow = Flow(self.transport_name, remote, local, self.conn_id)
        m.per_source[remote[0]] += 1
        m.connections[self.conn_id] = self
        m.by_remote[remote] = self
        if not self.outbound:
            m.stats.tcp_accepted += 1
            m.inbound += 1
            m.in_progress.add(self)  # its first message is awaited (MessageClock)

    def data_received(self, data: bytes) -> None:
        if self.closed or self.flow is None:
            return
        now = self.last_activity = time.monotonic()
        items = self.framer.feed(data)
        clock = self.clock
        clock.on_data(self.framer.pending(), now, bool(items))
        if clock.in_progress:
            self.manager.in_progress.add(self)
        else:
            self.manager.in_progress.discard(self)
        for item in items:
            if isinstance(item, bytes):
                self.manager.dispatch(item, self.flow)
            elif isinstance(item, PingReceived):
                self.manager.stats.keepalive_pings += 1
                self.write(b"\r\n")
            else:
                self.manager.stats.tcp_framing_errors += 1
                answer = self.manager.on_framing_error(item, self.flow)
                if answer:
                    self.write(answer)
                self.close()
                return

    def write(self, data: bytes) -> bool:
        if self.closed or self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(data)
        self.last_activity = time.monotonic()
        return True

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping what is unsent (a connection closed for being late or slow)."""
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        m = self.manager
        if self.flow is not None:
            m.in_progress.discard(self)
            m.inbound -= 0 if self.outbound else 1
            m.connections.pop(self.conn_id, None)
            if m.by_remote.get(self.flow.remote) is self:
                del m.by_remote[self.flow.remote]
            ip = self.flow.remote[0]
            m.per_source[ip] -= 1
            if m.per_source[ip] <= 0:
                del m.per_source[ip]
            if m.on_connection_closed is not None:
                m.on_connection_closed(self.conn_id)


@dataclass(frozen=True)
class SharedSockets:
    """A worker process's part in the sockets its master bound (server/workers.py): the inherited
    listening sockets keyed by ("udp"|"tcp", address text), the UDP addresses every worker reads
    (SharedUdpReader), the prefix of this worker's connection ids, and where a write on another
    worker's connection goes."""

    inherited: dict[tuple[str, str], socket.socket]
    shared_udp: frozenset[str]
    conn_prefix: str
    remote_writer: Callable[[bytes, Flow], bool] | None = None
    workers: int = 1  # processes sharing the listeners: each takes its share of the connection cap


class TransportManager:
    """Owns every socket; ``dispatch`` hands messages to the server; ``send`` reaches a flow or address."""

    def __init__(
        self,
        handler: Handler,
        limits: TransportLimits | None = None,
        on_framing_error: ErrorHandler | None = None,
        on_connection_closed: Callable[[str], None] | None = None,
        shared: SharedSockets | None = None,
        barrier: Callable[[], None] | None = None,
    ) -> None:
        self.handler = handler
        # run before each batch of datagrams leaves (the call journal's fsync: what the replies of
        # this loop iteration depend on is durable first)
        self.barrier = barrier
        self.limits = limits or TransportLimits()
        self.on_framing_error = on_framing_error or (lambda failure, flow: None)
        self.on_connection_closed = on_connection_closed
        self.stats = TransportStats()
        self.udp: list[UdpEndpoint] = []
        self.tcp_servers: list[asyncio.base_events.Server] = []
        self.connections: dict[str, TcpConnection] = {}
        self.by_remote: dict[Address, TcpConnection] = {}
        self.per_source: defaultdict[str, int] = defaultdict(int)
        # Inbound connections: the cap (this process's share, below its descriptor limit), how many
        # are open, and those with a message in progress (checked against MessageRules each tick).
        lim = self.limits
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if nofile == resource.RLIM_INFINITY:
            nofile = 1 << 20
        self.workers = shared.workers if shared else 1
        self.nofile = nofile
        self.tcp_cap = connection_cap(lim.max_tcp_connections, self.workers, nofile, lim.tcp_reserved_fds)
        self.inbound = 0
        self.in_progress: set[TcpConnection] = set()
        self.rules = MessageRules(lim.tcp_message_timeout, lim.tcp_min_byte_rate)
        self._throttles: dict[tuple[str, str], Throttle] = {}
        self._last_source: dict[tuple[str, str], str] = {}
        self._ids = itertools.count(1)
        self._reaper: asyncio.Task[None] | None = None
        self._pending: dict[Address, asyncio.Future[TcpConnection]] = {}
        self._sending = Background()  # send_tcp_soon's
        # Worker processes (SharedSockets): listening sockets bound by the master, some only to send
        # on; the prefix of our connection ids; and where writes to another worker's connection go.
        self.inherited: dict[tuple[str, str], socket.socket] = dict(shared.inherited) if shared else {}
        self.shared_udp: frozenset[str] = shared.shared_udp if shared else frozenset()
        self._readers: list[SharedUdpReader] = []
        self.conn_prefix = shared.conn_prefix if shared else "tcp-"
        self.remote_writer = shared.remote_writer if shared else None
        self._udp_out: list[tuple[UdpEndpoint, bytes, Address]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def dispatch(self, data: bytes, flow: Flow) -> None:
        self.handler(data, flow)

    def _udp_sockets(self) -> Iterator[tuple[UdpEndpoint, socket.socket]]:
        """Each UDP endpoint this process reads with its socket (uvloop's PseudoSocket, or the socket
        itself under SendOnlyUdp)."""
        for ep in self.udp:
            sock = ep.transport.get_extra_info("socket") if ep.transport is not None else None
            if sock is not None:
                yield ep, sock

    def set_limits(self, limits: TransportLimits) -> None:
        """A reload's limits: new messages and connections follow them; a new UDP receive-queue size
        applies to the sockets this process reads (a worker's steered socket, or the shared one)."""
        old, self.limits = self.limits, limits
        if limits.udp_receive_buffer != old.udp_receive_buffer:
            for _, sock in self._udp_sockets():
                set_receive_buffer(sock, limits.udp_receive_buffer)

    def receive_dropped(self) -> dict[tuple[str, ...], int]:
        """Datagrams the kernel dropped at each UDP socket this process reads, by (address, socket
        inode): the workers' steered sockets each their own; a socket shared by the workers is one
        inode, which each of them reports (the merged /metrics keeps the largest, not the sum)."""
        out: dict[tuple[str, ...], int] = {}
        for ep, sock in self._udp_sockets():
            dropped = receive_dropped(sock)
            if dropped is not None:
                out[(join_hostport(*ep.local), str(os.fstat(sock.fileno()).st_ino))] = dropped
        return out

    async def start(self, udp: list[str], tcp: list[str], reuse_port: bool = False) -> None:
        loop = self._loop = asyncio.get_running_loop()
        for text in udp:
            sock = self.inherited.pop(("udp", text), None) or bind_udp(
                text, reuse_port, self.limits.udp_receive_buffer
            )
            if text in self.shared_udp:  # read by every worker, one woken per datagram
                proto = UdpEndpoint(self)
                proto.connection_made(SendOnlyUdp(sock))  # type: ignore[arg-type]
                self._readers.append(SharedUdpReader(proto, sock))
            else:
                _, proto = await loop.create_datagram_endpoint(lambda: UdpEndpoint(self), sock=sock)
            self.udp.append(proto)
        for text in tcp:
            inherited = self.inherited.pop(("tcp", text), None)
            if inherited is not None:
                self.tcp_servers.append(
                    await loop.create_server(lambda: TcpConnection(self), sock=inherited, backlog=1024)
                )
                continue
            host, port = split_hostport(text, 5070)
            try:
                server = await loop.create_server(
                    lambda: TcpConnection(self),
                    host,
                    port,
                    reuse_address=True,
                    reuse_port=reuse_port or None,
                    backlog=1024,
                )
            except OSError as exc:
                raise ListenError.of(exc, "TCP", text) from None
            self.tcp_servers.append(server)
        if tcp:
            log.info("tcp_connection_cap", cap=self.tcp_cap, workers=self.workers, nofile=self.nofile,
                     reserved=self.limits.tcp_reserved_fds, per_source=self.limits.max_tcp_per_source)  # fmt: skip
        self._reaper = asyncio.create_task(self._reap_idle())

    @property
    def udp_addresses(self) -> list[Address]:
        return [u.local for u in self.udp]

    @property
    def tcp_addresses(self) -> list[Address]:
        out = []
        for s in self.tcp_servers:
            for sock in s.sockets:
                out.append(_peer(sock.getsockname()))
        return out

    def _source_for(self, host: str) -> Address | None:
        """The address an outbound connection to ``host`` is opened from: the TCP listener's own when
        it is bound to one address of that family (another host of the platform knows us by it:
        server.cluster.peers), else the kernel's choice (a wildcard or loopback listener)."""
        try:
            dest = ipaddress.ip_address(host)
        except ValueError:
            return None
        for lhost, _ in self.tcp_addresses:
            try:
                local = ipaddress.ip_address(lhost)
            except ValueError:
                continue
            # a loopback listener cannot reach beyond the machine: the kernel chooses then
            if (
                local.version == dest.version
                and not local.is_unspecified
                and (dest.is_loopback or not local.is_loopback)
            ):
                return (lhost, 0)
        return None

    # ---- connection limits ---------------------------------------------------------------------
    def refusal(self, ip: str) -> str | None:
        """Why a new inbound connection from ``ip`` is refused ("cap", "per_source"), or None."""
        if self.inbound >= self.tcp_cap:
            return "cap"
        if self.per_source[ip] >= self.limits.max_tcp_per_source:
            return "per_source"
        return None

    def refused(self, reason: str, ip: str) -> None:
        if reason == "cap":
            self.stats.tcp_refused_cap += 1
        else:
            self.stats.tcp_refused += 1
        self._note("tcp_refused", reason, ip)

    def _note(self, event: str, reason: str, ip: str) -> None:
        """Log ``event`` at most once per Throttle interval per reason, with the count since the last line."""
        key = (event, reason)
        self._last_source[key] = ip
        throttle = self._throttles.get(key)
        if throttle is None:
            throttle = self._throttles[key] = Throttle()
        count = throttle.note(time.monotonic())
        if count:
            self._log_note(key, count)

    def _log_note(self, key: tuple[str, str], count: int) -> None:
        log.warning(key[0], reason=key[1], count=count, last_source=self._last_source.get(key),
                    open=self.inbound, cap=self.tcp_cap)  # fmt: skip

    def _close_late(self, now: float) -> None:
        """Close the connections whose message in progress is past its deadline or too slow."""
        rules = self.rules
        for conn in list(self.in_progress):
            why = conn.clock.verdict(rules, now)
            if why is None:
                continue
            self.in_progress.discard(conn)
            if why == "too_slow":
                self.stats.tcp_closed_slow += 1
            else:
                self.stats.tcp_closed_timeout += 1
            if conn.flow is not None:
                self._note("tcp_closed_late", why, conn.flow.remote[0])
            conn.abort()

    async def _reap_idle(self) -> None:
        """Every tick (a quarter of the message timeout, 1 s at most) close late messages and log
        what the throttles held back; every quarter of the idle timeout (30 s at most) close idle
        connections."""
        tick = max(0.05, min(1.0, self.rules.message_timeout / 4))
        sweep_every = min(30.0, max(self.limits.tcp_idle_timeout / 4, 0.05))
        next_sweep = time.monotonic() + sweep_every
        while True:
            await asyncio.sleep(min(tick, sweep_every))
            try:
                now = time.monotonic()
                self._close_late(now)
                for key, throttle in self._throttles.items():
                    count = throttle.due(now)
                    if count:
                        self._log_note(key, count)
                if now < next_sweep:
                    continue
                next_sweep = now + sweep_every
                deadline = now - self.limits.tcp_idle_timeout
                for conn in list(self.connections.values()):
                    if conn.last_activity < deadline:
                        self.stats.tcp_closed_idle += 1
                        conn.close()
            except Exception:  # never into the loop; the next tick tries again
                log.exception("tcp_reaper_failed")

    # ---- sending ------------------------------------------------------------------------------
    def _udp_for(self, local: Address | None, family_v6: bool) -> UdpEndpoint | None:
        fallback = None
        for u in self.udp:
            if local is not None and u.local == local:
                return u
            if (":" in u.local[0]) == family_v6 and fallback is None:
                fallback = u
        return fallback or (self.udp[0] if self.udp else None)

    def send_udp(self, data: bytes, dest: Address, local: Address | None = None) -> bool:
        """Queue a datagram; False (and counted) when it cannot be sent: no socket, or ``dest`` is
        not an IP literal (names are resolved by the caller, off the loop, before coming here)."""
        v6 = ip_family_v6(dest[0])
        if v6 is None:
            self.stats.udp_not_ip += 1
            return False
        ep = self._udp_for(local, v6)
        if ep is None or ep.transport is None:
            return False
        # Datagrams leave together at the end of this loop iteration (after every message read in
        # it was handled), not one by one: on a VM a sendto that wakes a sleeping peer costs the
        # sender the wake-up (measured 20-400 us), and a burst wakes it once. Order is kept.
        pending = self._udp_out
        if not pending:
            loop = self._loop
            if loop is None:  # not started by start(): nothing will flush later
                return self._sendto(ep, data, dest)
            loop.call_soon(self.flush_udp)
        pending.append((ep, data, dest))
        return True

    def _sendto(self, ep: UdpEndpoint, data: bytes, dest: Address) -> bool:
        """One datagram; an error is this destination's alone (counted), never the batch's or the loop's."""
        if ep.transport is None:
            return False
        try:
            ep.transport.sendto(data, dest)
        except (ValueError, TypeError, OSError):  # uvloop's family mismatch; SendOnlyUdp counts its own
            self.stats.udp_send_errors += 1
            return False
        return True

    def flush_udp(self) -> None:
        """Send the datagrams queued by send_udp now (the loop does it once per iteration), after
        the barrier (if any)."""
        if self.barrier is not None and self._udp_out:
            self.barrier()
        pending, self._udp_out = self._udp_out, []
        sendto = self._sendto
        for ep, data, dest in pending:
            sendto(ep, data, dest)

    def send_flow(self, data: bytes, flow: Flow) -> bool:
        """Send back over the flow a message came in on (same UDP socket / same TCP connection)."""
        if flow.transport == "udp":
            return self.send_udp(data, flow.remote, flow.local)
        conn = self.connections.get(flow.conn_id or "")
        if conn is None:
            if flow.conn_id and self.remote_writer is not None and self.remote_writer(data, flow):
                return True  # another worker holds that connection: handed to it
            conn = self.by_remote.get(flow.remote)
        return conn.write(data) if conn is not None else False

    async def send_tcp(self, data: bytes, dest: Address) -> bool:
        """Send over an existing connection to ``dest`` or open one (RFC 3261 §18.1.1)."""
        conn = self.by_remote.get(dest)
        if conn is None or conn.closed:
            pending = self._pending.get(dest)
            if pending is None:
                loop = asyncio.get_running_loop()
                pending = loop.create_future()
                self._pending[dest] = pending
                try:
                    # a name is resolved first: uvloop's create_connection, cancelled while it resolves
                    # one, leaves its lookup's failure unretrieved ("Future exception was never
                    # retrieved" in the log); a ValueError is a name IDNA cannot encode
                    host = await resolve_stream_host(loop, dest[0], dest[1])
                    _, conn = await within(
                        loop.create_connection(lambda: TcpConnection(self, outbound=True), host, dest[1],
                                               local_addr=self._source_for(host)),
                        timeout=5.0,
                    )  # fmt: skip
                    pending.set_result(conn)
                except (TimeoutError, OSError, ValueError) as exc:
                    pending.set_exception(exc)
                    pending.exception()  # mark retrieved
                    return False
                finally:
                    self._pending.pop(dest, None)
            else:
                try:
                    conn = await asyncio.shield(pending)
                except (TimeoutError, OSError, ValueError):
                    return False
        return conn.write(data)

    def send_tcp_soon(self, data: bytes, dest: Address) -> None:
        """`send_tcp` in the background, for a sender that cannot wait for a connection to open; the
        task is held until it ends, and close() cancels it."""
        self._sending.spawn(self.send_tcp(data, dest))

    async def close(self) -> None:
        self.flush_udp()
        await self._sending.cancel()
        for reader in self._readers:
            reader.close()
        self._readers.clear()
        if self._reaper is not None:
            self._reaper.cancel()
        for u in self.udp:
            if u.transport is not None:
                u.transport.close()
        for s in self.tcp_servers:
            s.close()
        for conn in list(self.connections.values()):
            conn.close()
        for s in self.tcp_servers:
            try:
                await within(s.wait_closed(), 2.0)
            except TimeoutError:
                pass


async def resolve_stream_host(loop: asyncio.AbstractEventLoop, host: str, port: int) -> str:
    """``host`` as an address: itself when it is one, else its first address for TCP."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    infos = await within(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=5.0)
    if not infos:
        raise OSError(f"no address for {host}")
    return str(infos[0][4][0])
