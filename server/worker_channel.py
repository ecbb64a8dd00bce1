"""The hand-off channel between the worker processes of one server: frames and their socket edge.

Every worker reads the same UDP socket, so a datagram often lands on a worker that does not own it
(see `sipcore.ownership`); that worker passes it on, with the `Flow` it arrived on, to the owner.
The owner may also need a write on a TCP connection another worker holds, and the location and
account-state replicas exchange their updates. Each worker has one AF_UNIX datagram socketpair as its inbox, created by the
master before fork: the worker reads one end, every other worker writes to the other end. Datagrams
keep their boundaries and, from one sender, their order; a connected socketpair is not limited by
``net.unix.max_dgram_qlen`` (only by the socket buffer), and a full buffer makes the sender queue
(bounded), never block the event loop.

Frames (pure functions below): one kind byte, then for DELIVER / WRITE a fixed header
``!BBHHBBB`` = kind, transport (0 udp, 1 tcp), remote port, local port, lengths of the remote host,
local host and connection id, those three ASCII strings, then the SIP bytes; for LOCATION and ACCOUNT
the replication payload (`registrar.location.replicated`, `server.account_state_replicated`); for
ADMIN_ASK and ADMIN_ANSWER the admin API's question or answer (`server.admin_peers`); for GUARD the
brute-force guard's events (`server.guard_share`).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from collections import deque
from collections.abc import Callable

import structlog

from sipcore.flow import Flow

log = structlog.get_logger("sipcore.workers")

DELIVER = 1  # a SIP message for its owner to handle as if it had read it
WRITE = 2  # bytes for the receiver to write on one of its TCP connections
LOCATION = 3  # a location replication message
ACCOUNT = 4  # an account-state replication message (calls in progress, forwarding set by phone)
ADMIN_ASK = 5  # an admin API question for one worker (server.admin_peers): its calls, a hang-up…
ADMIN_ANSWER = 6  # (part of) the answer to an ADMIN_ASK
DRAINED = 7  # SIGTERM: the sender has drained its calls (server.app.Application.drain); payload: its index
GUARD = 8  # brute-force guard events: failures, logins, bans (server.guard_share)
_REPLICATION = (LOCATION, ACCOUNT, ADMIN_ASK, ADMIN_ANSWER, DRAINED, GUARD)  # a payload, no flow

MAX_FRAME = 128 * 1024  # a SIP message (65,535 at most) or a location snapshot, with its header
BATCH_BYTES = 64 * 1024  # send what is gathered for one destination once it reaches this size
MAX_DATAGRAM = BATCH_BYTES + MAX_FRAME + 8
MAX_BACKLOG_BYTES = 32 * 1024 * 1024  # per destination, while its socket buffer is full; then drop
SOCKET_BUFFER = 4 * 1024 * 1024

_HEAD = struct.Struct("!BBHHBBB")
_LEN = struct.Struct("!I")
_TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
_TRANSPORT_CODE = {name: i for i, name in enumerate(_TRANSPORTS)}


class ChannelError(ValueError):
    """A frame that cannot be read."""


# ---- frames (pure) -----------------------------------------------------------------------------------
def encode_message(kind: int, data: bytes, flow: Flow) -> bytes:
    """A DELIVER or WRITE frame: ``data`` with the flow it belongs to."""
    rhost = flow.remote[0].encode()
    lhost = flow.local[0].encode()
    conn = (flow.conn_id or "").encode()
    if len(rhost) > 255 or len(lhost) > 255 or len(conn) > 255:
        raise ChannelError("flow field longer than 255 bytes")
    head = _HEAD.pack(
        kind,
        _TRANSPORT_CODE.get(flow.transport, 0),
        flow.remote[1],
        flow.local[1],
        len(rhost),
        len(lhost),
        len(conn),
    )
    return b"".join((head, rhost, lhost, conn, data))


def encode_location(payload: bytes) -> bytes:
    return bytes((LOCATION,)) + payload


def encode_account(payload: bytes) -> bytes:
    return bytes((ACCOUNT,)) + payload


def encode_payload(kind: int, payload: bytes) -> bytes:
    """A frame of a kind that carries a payload and no flow (ADMIN_ASK, ADMIN_ANSWER)."""
    return bytes((kind,)) + payload


def decode_frame(frame: bytes) -> tuple[int, Flow | None, bytes]:
    """``(kind, flow, data)``; the flow is None for LOCATION, ACCOUNT and ADMIN frames. Raises
    `ChannelError`."""
    if not frame:
        raise ChannelError("empty frame")
    kind = frame[0]
    if kind in _REPLICATION:
        return kind, None, frame[1:]
    if kind not in (DELIVER, WRITE):
        raise ChannelError(f"unknown frame kind {kind}")
    if len(frame) < _HEAD.size:
        raise ChannelError("truncated frame header")
    _, transport, rport, lport, n_rhost, n_lhost, n_conn = _HEAD.unpack_from(frame)
    if transport >= len(_TRANSPORTS):
        raise ChannelError(f"unknown transport {transport}")
    start = _HEAD.size
    end = start + n_rhost + n_lhost + n_conn
    if len(frame) < end:
        raise ChannelError("truncated flow")
    try:
        rhost = frame[start : start + n_rhost].decode()
        lhost = frame[start + n_rhost : start + n_rhost + n_lhost].decode()
        conn = frame[start + n_rhost + n_lhost : end].decode() or None
    except UnicodeDecodeError as exc:
        raise ChannelError("flow field is not text") from exc
    return kind, Flow(_TRANSPORTS[transport], (rhost, rport), (lhost, lport), conn), frame[end:]


def pack_batch(frames: list[bytes]) -> bytes:
    """Several frames in one datagram, each led by its length (4 bytes, network order)."""
    pack = _LEN.pack
    return b"".join([part for frame in frames for part in (pack(len(frame)), frame)])


def unpack_batch(datagram: bytes | memoryview) -> list[bytes]:
    """The frames of one datagram (copied out). Raises `ChannelError` if it is cut short."""
    frames = []
    pos, end = 0, len(datagram)
    while pos < end:
        if end - pos < 4:
            raise ChannelError("truncated frame length")
        (size,) = _LEN.unpack_from(datagram, pos)
        pos += 4
        if size == 0 or end - pos < size:
            raise ChannelError("truncated frame")
        frames.append(bytes(datagram[pos : pos + size]))
        pos += size
    return frames


# ---- the socket edge ---------------------------------------------------------------------------------
def make_inboxes(count: int) -> list[tuple[socket.socket, socket.socket]]:
    """One (read end, write end) socketpair per worker, made by the master before fork."""
    pairs = []
    for _ in range(count):
        pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for sock in pair:
            for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
                except OSError:
                    pass
            sock.setblocking(False)
        pairs.append(pair)
    return pairs


class Channel:
    """One worker's ends: ``inbox`` to read, and the write end of every other worker's inbox.

    Frames for one destination are gathered during one event loop iteration and sent as one datagram
    (`pack_batch`) when the iteration's callbacks have run, or sooner once BATCH_BYTES are waiting:
    under load that saves most of the send/receive system calls and wake-ups of the other worker.
    """

    def __init__(self, inbox: socket.socket, peers: dict[int, socket.socket]) -> None:
        self.inbox = inbox
        self.peers = peers
        self.on_frame: Callable[[bytes], None] = lambda frame: None
        self.sent = 0  # frames
        self.received = 0
        self.dropped = 0
        self.datagrams_sent = 0
        self._buf = bytearray(MAX_DATAGRAM)
        self._view = memoryview(self._buf)
        self._pending: dict[int, list[bytes]] = {}
        self._pending_bytes: dict[int, int] = {}
        self._flush_scheduled = False
        self._backlog: dict[int, deque[tuple[bytes, int]]] = {}  # (datagram, frames) per destination
        self._backlog_bytes: dict[int, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.inbox.fileno(), self._readable)

    def close(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self.inbox.fileno())
            for dest in self._backlog:
                loop.remove_writer(self.peers[dest].fileno())
        self._backlog.clear()
        self._pending.clear()
        self.inbox.close()
        for sock in self.peers.values():
            sock.close()

    # -- in --
    def drain(self) -> None:
        """Take whatever frames are waiting now (a call's end the SIP message about to be handled
        may depend on), instead of when the loop next serves the inbox."""
        self._readable()

    def _readable(self) -> None:
        view = self._view
        for _ in range(64):  # then let the loop serve the SIP socket too; the fd stays readable
            try:
                n = self.inbox.recv_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                log.exception("worker_channel_read_failed")
                return
            try:
                frames = unpack_batch(view[:n])
            except ChannelError:
                log.warning("worker_datagram_dropped", size=n)
                continue
            self.received += len(frames)
            for frame in frames:
                try:
                    self.on_frame(frame)
                except Exception:
                    log.exception("worker_channel_frame_failed")

    # -- out --
    def send(self, dest: int, frame: bytes) -> bool:
        """Queue ``frame`` for worker ``dest``; False (counted as dropped) if it cannot be."""
        if dest not in self.peers or len(frame) > MAX_FRAME:
            self.dropped += 1
            return False
        if self._backlog_bytes.get(dest, 0) >= MAX_BACKLOG_BYTES:
            self.dropped += 1
            return False
        pending = self._pending.get(dest)
        if pending is None:
            pending = self._pending[dest] = []
            self._pending_bytes[dest] = 0
        pending.append(frame)
        size = self._pending_bytes[dest] = self._pending_bytes[dest] + len(frame) + 4
        if size >= BATCH_BYTES:
            self._flush_dest(dest)
        elif not self._flush_scheduled:
            if self._loop is None:  # sending before start(): still inside the running loop
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._flush)
            self._flush_scheduled = True
        return True

    def broadcast(self, frame: bytes, at_once: bool = False) -> None:
        """``frame`` to every other worker; ``at_once`` sends it now (with what is gathered before it,
        in order) instead of at the end of the loop iteration: for a change the others must have
        before the answer that announces it leaves (a forwarding set by feature code)."""
        for dest in self.peers:
            if self.send(dest, frame) and at_once:
                self._flush_dest(dest)

    def _flush(self) -> None:
        self._flush_scheduled = False
        for dest in list(self._pending):
            self._flush_dest(dest)

    def _flush_dest(self, dest: int) -> None:
        frames = self._pending.pop(dest, None)
        self._pending_bytes.pop(dest, None)
        if not frames:
            return
        datagram = pack_batch(frames)
        queue = self._backlog.get(dest)
        if queue is not None:  # keep the order: behind what is already waiting
            queue.append((datagram, len(frames)))
            self._backlog_bytes[dest] += len(datagram)
            return
        sock = self.peers[dest]
        try:
            sock.send(datagram)
        except (BlockingIOError, InterruptedError):
            self._backlog[dest] = deque(((datagram, len(frames)),))
            self._backlog_bytes[dest] = len(datagram)
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.add_writer(sock.fileno(), self._writable, dest)
            return
        except OSError:
            self.dropped += len(frames)
            return
        self.sent += len(frames)
        self.datagrams_sent += 1

    def _writable(self, dest: int) -> None:
        queue = self._backlog[dest]
        sock = self.peers[dest]
        while queue:
            datagram, count = queue[0]
            try:
                sock.send(datagram)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.dropped += sum(c for _, c in queue)
                queue.clear()
                break
            queue.popleft()
            self._backlog_bytes[dest] -= len(datagram)
            self.sent += count
            self.datagrams_sent += 1
        del self._backlog[dest]
        del self._backlog_bytes[dest]
        if self._loop is not None:
            self._loop.remove_writer(sock.fileno())

    def peer_alive(self, dest: int) -> bool:
        """False once worker ``dest`` has exited (its inbox closed: a datagram to it is refused). An
        empty datagram carries no frame for a live peer."""
        sock = self.peers.get(dest)
        if sock is None:
            return False
        try:
            sock.send(b"")
        except OSError as exc:  # refused once, then "not connected"; a full buffer means it is there
            return exc.errno not in (errno.ECONNREFUSED, errno.ENOTCONN, errno.EPIPE, errno.ECONNRESET)
        return True

    @property
    def backlog(self) -> int:
        """Frames waiting for room in a destination's socket buffer."""
        return sum(c for q in self._backlog.values() for _, c in q)
