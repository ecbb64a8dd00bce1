"""What a media application (voicemail deposit, the mailbox menu, a conference seat) says to the
service that runs it, frame by frame.

Applications are pure: the adapter calls ``tick(frame_in, now)`` every 20 ms with the decoded frame
the caller sent (``None`` when nothing arrived in time) and ``on_digit(digit, now)`` for each key
press (RFC 4733 or SIP INFO); it sends ``Tick.out``, appends ``Tick.record`` to the recording in
progress, and carries out ``Tick.events`` (store a message, mark it heard, hang up...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

FRAME_SAMPLES = 160  # 20 ms at 8 kHz
FRAME_BYTES = 2 * FRAME_SAMPLES  # linear 16-bit little-endian
SILENT_FRAME = bytes(FRAME_BYTES)


@dataclass(frozen=True, slots=True)
class RecordingStarted:
    """The frames in ``Tick.record`` from now on belong to a new recording (a message or a greeting)."""

    kind: str  # "message" | "greeting"


@dataclass(frozen=True, slots=True)
class RecordingEnded:
    """The recording is complete: keep it (``keep``) or discard it (too short, cancelled)."""

    kind: str  # "message" | "greeting"
    reason: str  # "hash" | "silence" | "max" | "hangup"
    seconds: float  # what was kept (trailing silence trimmed)
    keep: bool


@dataclass(frozen=True, slots=True)
class MarkHeard:
    msg_id: str


@dataclass(frozen=True, slots=True)
class DeleteMessage:
    msg_id: str


@dataclass(frozen=True, slots=True)
class DeleteGreeting:
    pass


@dataclass(frozen=True, slots=True)
class Hangup:
    """The application is done: the service sends BYE."""

    reason: str


AppEvent = RecordingStarted | RecordingEnded | MarkHeard | DeleteMessage | DeleteGreeting | Hangup


class Tick(NamedTuple):
    out: bytes  # FRAME_BYTES to send (SILENT_FRAME when there is nothing to play)
    record: bytes | None  # PCM to append to the recording in progress (whole frames; may be several)
    events: tuple[AppEvent, ...]


NO_EVENTS: tuple[AppEvent, ...] = ()
