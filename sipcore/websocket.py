"""WebSocket (RFC 6455) for SIP (RFC 7118), as a pure codec: the opening handshake and the frames.

Pure: feed bytes, get the handshake answer or whole messages, pings and failures back; no I/O. The
connection adapter (sipcore/transport_secure.py) writes what these return. Server side only: client
frames must be masked (§5.1), a message larger than the SIP limit is refused with close code 1009 as
soon as its length is known (before its payload is read), and one WebSocket message carries exactly
one SIP message (RFC 7118 §5.1).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUBPROTOCOL = "sip"
MAX_HANDSHAKE = 8192  # bytes of HTTP request head; more is refused

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA = (CONTINUATION, TEXT, BINARY)
_CONTROL = (CLOSE, PING, PONG)

NORMAL, GOING_AWAY, PROTOCOL_ERROR, UNSUPPORTED, INVALID_DATA, POLICY, TOO_BIG = (
    1000, 1001, 1002, 1003, 1007, 1008, 1009,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Upgrade:
    """The answer to an opening handshake: ``response`` to write; ``accepted`` when frames follow,
    else the connection is closed after it."""

    response: bytes
    accepted: bool
    reason: str = ""


def _http_error(status: int, reason: str, extra: str = "") -> bytes:
    body = reason.encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n{extra}Content-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key (§4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def answer_upgrade(head: bytes, server: str = "sipcore") -> Upgrade:
    """§4.2.1 checks of a client's opening handshake (``head`` up to and with the blank line) and the
    answer: 101 with the ``sip`` subprotocol (RFC 7118 §4), 400 for a malformed request or one that
    does not offer ``sip``, 426 for another WebSocket version."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        return Upgrade(_http_error(400, "Bad Request"), False, "undecodable")
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[0] != "GET" or not parts[2].startswith("HTTP/1.1"):
        return Upgrade(_http_error(400, "Bad Request"), False, "not an HTTP/1.1 GET")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            return Upgrade(_http_error(400, "Bad Request"), False, "malformed header")
        key = name.strip().lower()
        fields[key] = f"{fields[key]}, {value.strip()}" if key in fields else value.strip()
    tokens = {t.strip().lower() for t in fields.get("connection", "").split(",")}
    if fields.get("upgrade", "").lower() != "websocket" or "upgrade" not in tokens:
        return Upgrade(_http_error(400, "Bad Request"), False, "not a WebSocket upgrade")
    if fields.get("sec-websocket-version") != "13":
        return Upgrade(_http_error(426, "Upgrade Required", "Sec-WebSocket-Version: 13\r\n"), False,
                       "unsupported WebSocket version")  # fmt: skip
    key = fields.get("sec-websocket-key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError(key)
    except ValueError:
        return Upgrade(_http_error(400, "Bad Request"), False, "bad Sec-WebSocket-Key")
    offered = {p.strip().lower() for p in fields.get("sec-websocket-protocol", "").split(",")}
    if SUBPROTOCOL not in offered:
        return Upgrade(_http_error(400, "Bad Request"), False, "subprotocol sip not offered")
    response = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n"
        f"Server: {server}\r\n\r\n"
    )
    return Upgrade(response.encode(), True)


@dataclass(frozen=True, slots=True)
class Message:
    """A whole data message (text or binary, reassembled from its fragments)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Closed:
    """The peer's Close frame: answer it with the same code, then close the connection."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Failed:
    """The stream broke the rules: send a Close with ``code`` and close the connection."""

    code: int
    reason: str


Event = Message | Ping | Pong | Closed | Failed


def encode_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final frame (server frames are not masked; ``mask`` is for tests acting as clients)."""
    n = len(payload)
    first = 0x80 | opcode
    bit = 0x80 if mask is not None else 0
    if n < 126:
        head = struct.pack("!BB", first, bit | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if mask is None:
        return head + payload
    return head + mask + apply_mask(payload, mask)


def apply_mask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` repeated (§5.3), a whole buffer at a time."""
    if not payload:
        return b""
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


def close_frame(code: int, reason: str = "") -> bytes:
    return encode_frame(CLOSE, struct.pack("!H", code) + reason.encode()[:120])


class FrameDecoder:
    """Frames of one connection from a client; yields whole messages and control frames."""

    __slots__ = ("buf", "failed", "fragments", "fragments_size", "max_message")

    def __init__(self, max_message: int = 65535) -> None:
        self.buf = bytearray()
        self.max_message = max_message
        self.fragments: list[bytes] | None = None  # a fragmented message being reassembled
        self.fragments_size = 0
        self.failed = False

    def _fail(self, code: int, reason: str) -> Failed:
        self.failed = True
        self.buf = bytearray()
        self.fragments = None
        return Failed(code, reason)

    def feed(self, data: bytes) -> list[Event]:
        if self.failed:
            return []
        self.buf += data
        out: list[Event] = []
        buf = self.buf
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            fin, opcode, masked, n = b0 & 0x80, b0 & 0x0F, b1 & 0x80, b1 & 0x7F
            if b0 & 0x70:
                out.append(self._fail(PROTOCOL_ERROR, "reserved bits set"))
                return out
            if opcode not in _DATA and opcode not in _CONTROL:
                out.append(self._fail(PROTOCOL_ERROR, f"unknown opcode {opcode}"))
                return out
            if not masked:
                out.append(self._fail(PROTOCOL_ERROR, "client frame not masked"))
                return out
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n = struct.unpack_from("!H", buf, 2)[0]
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n = struct.unpack_from("!Q", buf, 2)[0]
                pos = 10
            if opcode in _CONTROL:
                if n > 125 or not fin:
                    out.append(self._fail(PROTOCOL_ERROR, "bad control frame"))
                    return out
            elif (self.fragments_size if opcode == CONTINUATION else 0) + n > self.max_message:
                out.append(self._fail(TOO_BIG, "message too large"))  # refused before its payload
                return out
            if len(buf) < pos + 4 + n:
                break
            payload = apply_mask(bytes(buf[pos + 4 : pos + 4 + n]), bytes(buf[pos : pos + 4]))
            del buf[: pos + 4 + n]
            if opcode == PING:
                out.append(Ping(payload))
            elif opcode == PONG:
                out.append(Pong(payload))
            elif opcode == CLOSE:
                if len(payload) == 1:
                    out.append(self._fail(PROTOCOL_ERROR, "bad close payload"))
                    return out
                code = struct.unpack_from("!H", payload)[0] if payload else NORMAL
                out.append(Closed(code, payload[2:].decode("utf-8", "replace")))
                self.failed = True  # nothing is read after a Close
                return out
            elif opcode == CONTINUATION:
                if self.fragments is None:
                    out.append(self._fail(PROTOCOL_ERROR, "continuation without a message"))
                    return out
                self.fragments.append(payload)
                self.fragments_size += n
                if fin:
                    out.append(Message(b"".join(self.fragments)))
                    self.fragments, self.fragments_size = None, 0
            else:
                if self.fragments is not None:
                    out.append(self._fail(PROTOCOL_ERROR, "new message inside a fragmented one"))
                    return out
                if fin:
                    out.append(Message(payload))
                else:
                    self.fragments, self.fragments_size = [payload], n
        return out
