"""Stream framing for SIP over TCP (RFC 3261 §18.3): split a byte stream into messages by Content-Length.

Pure: feed bytes, get complete messages, keep-alive pings and framing errors back. Handles partial
reads, pipelined messages and RFC 5626 §4.4.1 CRLF keep-alives (a double CRLF is a ping).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SipParseError
from .grammar import digits_value

_CL_RE = re.compile(rb"\r?\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class PingReceived:
    """A double CRLF keep-alive ping: answer with a single CRLF pong."""


@dataclass(frozen=True, slots=True)
class FramingFailed:
    """The stream cannot be framed any more (bad Content-Length, oversized message): answer
    ``status`` if the head is usable, then close the connection."""

    reason: str
    status: int
    head: bytes


class StreamFramer:
    """Accumulates bytes of one TCP connection and yields whole messages."""

    __slots__ = ("buf", "failed", "max_size")

    def __init__(self, max_size: int = 65535) -> None:
        self.buf = bytearray()
        self.max_size = max_size
        self.failed = False

    def feed(self, data: bytes) -> list[bytes | PingReceived | FramingFailed]:
        if self.failed:
            return []
        self.buf += data
        out: list[bytes | PingReceived | FramingFailed] = []
        buf = self.buf
        while buf:
            # Leading CRLFs: a double CRLF is a keep-alive ping; single CRLFs between messages are
            # skipped (§7.5). A lone CR/LF may be the first half of a ping: wait for more.
            if buf[0] in (13, 10):
                if buf.startswith(b"\r\n\r\n"):
                    del buf[:4]
                    out.append(PingReceived())
                    continue
                if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                    break
                if buf.startswith(b"\r\n"):
                    del buf[:2]
                    continue
                del buf[:1]
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_size:
                    self.failed = True
                    out.append(FramingFailed("message header too large", 513, b""))
                    self.buf = bytearray()
                break
            head = bytes(buf[: end + 2])
            try:
                length = content_length(head)
            except SipParseError as exc:
                self.failed = True
                out.append(FramingFailed(exc.reason, 400, bytes(buf[: end + 4])))
                self.buf = bytearray()
                break
            total = end + 4 + length
            if total > self.max_size:
                self.failed = True
                out.append(FramingFailed("message too large", 513, bytes(buf[: end + 4])))
                self.buf = bytearray()
                break
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out

    def pending(self) -> int:
        """Bytes of an unfinished message held (0 when none: an empty buffer or the start of a
        keep-alive CRLF, which is not a message)."""
        buf = self.buf
        return len(buf) if buf and buf[0] not in (13, 10) else 0


def content_length(head: bytes) -> int:
    """Content-Length of a message head; 0 when absent. Conflicting or invalid values raise."""
    values = {m.group(1).strip() for m in _CL_RE.finditer(head)}
    if not values:
        return 0
    if len(values) > 1:
        raise SipParseError("conflicting Content-Length headers")
    text = values.pop()
    if not text.isdigit():
        raise SipParseError("invalid Content-Length")
    return digits_value(text.decode("ascii"))  # bytes.isdigit(): ASCII digits only
