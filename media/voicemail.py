"""Leaving a message: greeting, beep, recording until '#', silence, the length limit or hang-up.

``Deposit`` implements the ``media.app`` contract for one caller. Flow (Asterisk's, simplified)::

    GREETING --('#'/'*' or end)--> BEEP --(end)--> RECORDING --('#', silence, max)--> GOODBYE --> DONE
    FULL (mailbox full: its prompt) --> DONE            any state --on_hangup--> DONE

``Recorder`` is the recording logic, shared with the owner's greeting recording (``media.menu``):
a missing incoming frame records silence (the file keeps real time), and silent frames are held
back and released only when sound resumes, so trailing silence (the caller stopped talking and
waited, or the line went quiet before the silence timeout) never ends up in the file.

Tick rules the adapter relies on:

- ``RecordingStarted`` comes in a tick whose ``record`` is None (the last beep frame); the caller's
  frames from the next tick on are the recording.
- ``RecordingEnded`` never shares a tick with a ``record``: everything in ``record`` before it
  belongs to the recording, and ``RecordingEnded.seconds`` is exactly what was handed out
  (``frames / 50``).
- ``record`` may hold several frames at once (held-back silence released with the sound that ends it).
- ``Hangup`` ("done" after a recording, "full") comes with the last frame of the last clip: send
  ``out``, then the BYE. A hang-up by the caller gets no ``Hangup`` back.
- A key (``on_digit``) acts at once; its events come out with the next tick, or from ``on_hangup``
  if the caller hangs up first.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from media import tones
from media.app import (
    NO_EVENTS,
    SILENT_FRAME,
    AppEvent,
    Hangup,
    RecordingEnded,
    RecordingStarted,
    Tick,
)
from media.prompts import Player, PromptSet, say_digits

FRAMES_PER_SECOND = 50  # 20 ms frames


def _frames(seconds: float) -> int:
    return round(seconds * FRAMES_PER_SECOND)


class Recorder:
    """One recording in progress: feed it every incoming frame, it says what to write and when to stop.

    Limits count frames (``round(seconds * 50)``): ``max_seconds`` of audio at most, including held
    silence; ``silence_seconds`` of consecutive silent frames end it (``None``: never);
    ``seconds < min_seconds`` is not worth keeping (``keep=False``)."""

    __slots__ = ("_held", "_max", "_min", "_silence", "elapsed", "kept", "kind", "silence_dbov")

    def __init__(
        self,
        kind: str,
        *,
        max_seconds: float,
        silence_seconds: float | None = 5.0,
        min_seconds: float = 1.0,
        silence_dbov: float = -45.0,
    ) -> None:
        if max_seconds <= 0:
            raise ValueError("max_seconds must be positive")
        self.kind = kind
        self._max = _frames(max_seconds)
        self._silence = _frames(silence_seconds) if silence_seconds else None
        self._min = min_seconds
        self.silence_dbov = silence_dbov
        self.elapsed = 0  # frames taken in, held silence included
        self.kept = 0  # frames handed out for the file
        self._held: list[bytes] = []

    def feed(self, frame: bytes | None) -> tuple[bytes | None, RecordingEnded | None]:
        """(PCM to append or None, the end of the recording or None) for one incoming frame."""
        if self.elapsed >= self._max:
            return None, self.end("max")
        pcm = SILENT_FRAME if frame is None else frame
        self.elapsed += 1
        if tones.is_silent(pcm, self.silence_dbov):
            self._held.append(pcm)
            if self._silence is not None and len(self._held) >= self._silence:
                return None, self.end("silence")
            return None, None
        self.kept += len(self._held) + 1
        out = b"".join((*self._held, pcm)) if self._held else pcm
        self._held.clear()
        return out, None

    def end(self, reason: str) -> RecordingEnded:
        """Stop (held trailing silence is dropped) and say what was kept."""
        self._held.clear()
        seconds = self.kept / FRAMES_PER_SECOND
        return RecordingEnded(self.kind, reason, seconds, seconds >= self._min - 1e-9)


class Phase(enum.Enum):
    GREETING = "greeting"
    BEEP = "beep"
    RECORDING = "recording"
    GOODBYE = "goodbye"
    FULL = "full"
    DONE = "done"


# What happens when a phase's audio has been played out: the next phase and the events to emit.
_ON_PLAYED_OUT: dict[Phase, tuple[Phase, tuple[AppEvent, ...]]] = {
    Phase.GREETING: (Phase.BEEP, NO_EVENTS),
    Phase.BEEP: (Phase.RECORDING, (RecordingStarted("message"),)),
    Phase.GOODBYE: (Phase.DONE, (Hangup("done"),)),
    Phase.FULL: (Phase.DONE, (Hangup("full"),)),
}
_SKIP_KEYS = frozenset("#*")  # during the greeting: straight to the beep
PROMPTS_USED = frozenset({"person_calling", "mailbox_of", "is_not_available", "mailbox_full", "goodbye"})
"""The prompt names ``default_greeting`` and ``Deposit.with_prompts`` say (besides digits)."""


def default_greeting(prompts: PromptSet, mailbox: str | None = None) -> tuple[bytes, ...]:
    """The system greeting for an account without its own: 'the mailbox of 1 0 0 1 is not
    available...' when the mailbox number is given, else 'the person you are calling is not...'."""
    digits = say_digits(mailbox or "")
    lead = ["person_calling"] if digits == ["unknown_caller"] else ["mailbox_of", *digits]
    return tuple(prompts.clips([*lead, "is_not_available"]))


class Deposit:
    """A caller leaving a message (see the module docstring for the flow and the tick rules).

    ``greeting``: the clips to play first, in order (the account's recorded greeting, or
    ``default_greeting``); ``full``: the mailbox cannot take a message, so play ``full_prompt``
    and hang up without recording; ``goodbye``: an optional short clip after a recording ends."""

    def __init__(
        self,
        greeting: Sequence[bytes],
        beep: bytes,
        *,
        max_seconds: float = 120.0,
        silence_seconds: float | None = 5.0,
        min_seconds: float = 1.0,
        silence_dbov: float = -45.0,
        full: bool = False,
        full_prompt: bytes = b"",
        goodbye: bytes = b"",
    ) -> None:
        self.recorder = Recorder(
            "message",
            max_seconds=max_seconds,
            silence_seconds=silence_seconds,
            min_seconds=min_seconds,
            silence_dbov=silence_dbov,
        )
        self._beep = beep
        self._goodbye = goodbye
        self._player = Player()
        self._pending: list[AppEvent] = []
        self.ended: RecordingEnded | None = None
        if full:
            self.phase = Phase.FULL
            self._player.play(full_prompt)
        else:
            self.phase = Phase.GREETING
            self._player.play(*greeting)

    @classmethod
    def with_prompts(
        cls,
        prompts: PromptSet,
        *,
        greeting: bytes | None = None,
        mailbox: str | None = None,
        full: bool = False,
        beep: bytes | None = None,
        **limits: float,
    ) -> Deposit:
        """The usual set-up: the account's greeting if it has one, else the default one; the shipped
        'mailbox full' and 'goodbye' prompts; ``tones.beep()``."""
        clips = (greeting,) if greeting is not None else default_greeting(prompts, mailbox)
        return cls(
            clips,
            tones.beep() if beep is None else beep,
            full=full,
            full_prompt=prompts.join(["mailbox_full", "goodbye"]),
            goodbye=prompts.get("goodbye"),
            **limits,  # type: ignore[arg-type]
        )

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE

    def tick(self, frame_in: bytes | None, now: float) -> Tick:
        events, self._pending = self._pending, []
        if self.phase is Phase.RECORDING:
            record, ended = self.recorder.feed(frame_in)
            if ended is not None:
                events.append(self._finish(ended))
            return Tick(SILENT_FRAME, record, tuple(events))
        out = SILENT_FRAME
        if self._player.busy:
            out, _ = self._player.next_frame()
        if not self._player.busy and self.phase in _ON_PLAYED_OUT:
            following, emitted = _ON_PLAYED_OUT[self.phase]
            self._enter(following)
            events += emitted
        return Tick(out, None, tuple(events) if events else NO_EVENTS)

    def on_digit(self, digit: str, now: float) -> None:
        if self.phase is Phase.GREETING and digit in _SKIP_KEYS:
            self._player.stop()
            self._enter(Phase.BEEP)
        elif self.phase is Phase.RECORDING and digit == "#":
            self._pending.append(self._finish(self.recorder.end("hash")))

    def on_hangup(self, now: float) -> tuple[AppEvent, ...]:
        events, self._pending = self._pending, []
        if self.phase is Phase.RECORDING:
            self.ended = self.recorder.end("hangup")
            events.append(self.ended)
        self._player.stop()
        self.phase = Phase.DONE
        return tuple(events)

    def _enter(self, phase: Phase) -> None:
        self.phase = phase
        if phase is Phase.BEEP:
            self._player.play(self._beep or SILENT_FRAME)  # no beep: one quiet frame, same timing

    def _finish(self, ended: RecordingEnded) -> RecordingEnded:
        """The recording is over (not by hang-up): say goodbye if there is a clip for it."""
        self.ended = ended
        self._enter(Phase.GOODBYE)
        if self._goodbye:
            self._player.play(self._goodbye)
        return ended
