"""DTMF: RFC 4733 telephone-events (decode, one digit per key press; encode) and SIP INFO
``application/dtmf-relay`` bodies, the fallback some phones use instead.

A key press is one event: all its packets carry the same RTP timestamp (the event's start) with a
growing duration, and the last one (end bit set) is sent three times. So a press is identified by
its timestamp, whatever the sequence numbers do: the receiver reports the digit on the first packet
of a new timestamp it sees (start packet, update, or an end packet if everything before was lost)
and ignores the rest. Reporting at the start, not at the end, keeps the menus responsive and means
a lost end packet can neither drop the digit nor need a timer here.
"""

from __future__ import annotations

import re
import struct
from collections import deque
from dataclasses import dataclass

__all__ = [
    "DIGITS",
    "DtmfDigit",
    "DtmfError",
    "DtmfReceiver",
    "DtmfRelay",
    "TelephoneEvent",
    "digit_event",
    "event_digit",
    "parse_dtmf_relay",
    "tone_payloads",
]

DIGITS = "0123456789*#ABCD"  # events 0-15 (RFC 4733 §3.2); 16 is flash
FLASH = 16
_EVENT = struct.Struct("!BBH")


class DtmfError(ValueError):
    """A telephone-event payload or dtmf-relay body we cannot read."""


def event_digit(event: int) -> str | None:
    """The key of a DTMF event code (``*`` for 10, ``#`` for 11), None for non-DTMF events."""
    return DIGITS[event] if 0 <= event < len(DIGITS) else None


def digit_event(digit: str) -> int:
    index = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise DtmfError(f"{digit!r} is not a DTMF key")
    return index


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """The 4-byte payload (RFC 4733 §2.3): ``volume`` is -dBm0 (0-63), ``duration`` in samples."""

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """Read the first event; raises ``DtmfError`` if the payload is shorter than 4 bytes. Extra
        bytes (an RFC 2198 redundancy block would be negotiated separately) are ignored."""
        if len(payload) < 4:
            raise DtmfError(f"telephone-event payload of {len(payload)} bytes, need 4")
        event, flags, duration = _EVENT.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def to_bytes(self) -> bytes:
        if not 0 <= self.event <= 255 or not 0 <= self.volume <= 63 or not 0 <= self.duration <= 0xFFFF:
            raise DtmfError(f"telephone-event out of range: {self}")
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """One key press. ``timestamp`` is the event's RTP timestamp (the press's identity)."""

    digit: str
    event: int
    timestamp: int
    volume: int


class DtmfReceiver:
    """Turns the telephone-event packets of one stream into one ``DtmfDigit`` per key press.

    Duplicates are recognised by (SSRC, timestamp); the last ``memory`` presses are remembered, so
    a late or retransmitted packet of an earlier press is ignored too. Exact timestamps are compared,
    never ordered, so the 32-bit timestamp wrap needs no care. Non-DTMF events (flash, tones) are
    swallowed the same way but not reported.
    """

    def __init__(self, memory: int = 16) -> None:
        self._seen: deque[tuple[int, int]] = deque(maxlen=memory)

    def on_event(self, ssrc: int, timestamp: int, event: TelephoneEvent) -> DtmfDigit | None:
        key = (ssrc, timestamp)
        if key in self._seen:
            return None
        self._seen.append(key)
        digit = event_digit(event.event)
        if digit is None:
            return None
        return DtmfDigit(digit, event.event, timestamp, event.volume)

    def on_payload(self, ssrc: int, timestamp: int, payload: bytes) -> DtmfDigit | None:
        """Feed the payload of an RTP packet of the negotiated telephone-event type."""
        return self.on_event(ssrc, timestamp, TelephoneEvent.parse(payload))


def tone_payloads(
    event: int, duration: int, *, volume: int = 10, interval: int = 160, end_repeats: int = 3
) -> list[bytes]:
    """The payloads of one event lasting ``duration`` samples: an update every ``interval`` samples
    (20 ms at 8 kHz) with the duration so far, then the end packet ``end_repeats`` times (RFC 4733
    §2.5.1.4). Send them one per interval with ``RtpPacketiser.event``."""
    if not 0 < duration <= 0xFFFF:
        raise DtmfError(f"duration {duration} samples: 1-65535 (longer events need segments)")
    if interval <= 0 or end_repeats < 1:
        raise DtmfError("interval and end_repeats must be positive")
    updates = [
        TelephoneEvent(event, False, volume, elapsed).to_bytes()
        for elapsed in range(interval, duration, interval)
    ]
    end = TelephoneEvent(event, True, volume, duration).to_bytes()
    return updates + [end] * end_repeats


# --- SIP INFO ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DtmfRelay:
    """An ``application/dtmf-relay`` INFO body: ``Signal=5`` and ``Duration=160`` (milliseconds)."""

    digit: str
    duration_ms: int | None = None


_RELAY_LINE = re.compile(r"\s*([A-Za-z-]+)\s*=\s*(\S*)\s*")


def parse_dtmf_relay(body: bytes | str) -> DtmfRelay:
    """Parse the de-facto format (Cisco's, used by Yealink, Polycom, Linphone…). ``Signal`` is a key
    (``0-9 * # A-D``, any case) or, as some phones send, its event code 10-15 (10 is ``*``).
    Unknown lines are ignored; a missing or unknown ``Signal`` raises ``DtmfError``.
    """
    if isinstance(body, bytes | bytearray):
        text = bytes(body).decode("utf-8", errors="replace")
    else:
        text = body
    signal: str | None = None
    duration: int | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _RELAY_LINE.fullmatch(line)
        if match is None:
            raise DtmfError(f"dtmf-relay line {line[:40]!r} is not Name=value")
        name, value = match[1].lower(), match[2]
        if name == "signal":
            signal = value
        elif name == "duration" and re.fullmatch(r"[0-9]{1,7}", value):
            duration = int(value)
    if not signal:
        raise DtmfError("dtmf-relay body without Signal=")
    if re.fullmatch(r"1[0-5]", signal):
        return DtmfRelay(DIGITS[int(signal)], duration)
    try:
        return DtmfRelay(DIGITS[digit_event(signal)], duration)
    except DtmfError:
        raise DtmfError(f"dtmf-relay Signal={signal[:10]!r} is not a DTMF key") from None
