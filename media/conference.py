"""Conference rooms (``Room``), the room table (``Rooms``) and the seat application (``RoomEntry``).

A ``Room`` mixes one 20 ms frame per participant per ``tick``: everyone hears everyone else
(``media.mixer.mix``: not themselves, muted ones contribute nothing), plus room notices (the join
tone when someone comes in, the leave tone when someone goes: everyone else hears them) and their
own private prompt if any (``play_to``: 'you are muted', heard by that participant only).

Two phases every 20 ms, so that each room is mixed once however many calls sit in it:

1. every call's application ticks: a seated ``RoomEntry.tick(frame_in)`` hands the caller's frame to
   its room (``Room.submit``) and returns what the room mixed for this caller at the last room tick
   (``Room.heard``);
2. the owner of the room table ticks every room once (``Rooms.tick``): the submitted frames are
   mixed and each participant's output waits for phase 1 of the next cycle. Rooms left empty are
   dropped there.

So a participant hears the others exactly one frame (20 ms) late, whichever phase the adapter runs
first; a frame not submitted in a cycle (lost, late) counts as silence from that participant.
``Room.tick(frames)`` can also be called directly with a mapping of frames (the phase-free form).

``RoomEntry`` puts one caller in a room: at once (a fixed room, e.g. one per customer), or after a
PIN from ``pins`` (digits then '#', 3 attempts). Seated, '1' toggles mute. A full room: 'conference
full', ``Hangup("full")``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from media import mixer, tones
from media.app import FRAME_BYTES, NO_EVENTS, SILENT_FRAME, AppEvent, Hangup, Tick
from media.prompts import InputTimer, Player, PromptSet

Pid = Hashable  # whatever the adapter names a call by (a Call-ID, a counter)
MAX_PARTICIPANTS = mixer.MAX_PARTICIPANTS
PIN_ATTEMPTS = 3
MAX_PIN_DIGITS = 32
PROMPTS_USED = frozenset(
    {
        "enter_conference_pin",
        "invalid_pin",
        "goodbye",
        "conference_joined",
        "only_person",
        "conference_full",
        "muted",
        "unmuted",
    }
)
"""Every prompt name this module says (a test checks the shipped set has them all)."""


@cache
def _default_join_tone() -> bytes:
    return tones.join_tone()


@cache
def _default_leave_tone() -> bytes:
    return tones.leave_tone()


@dataclass(slots=True)
class _Seat:
    joined_at: float
    muted: bool = False
    private: Player = field(default_factory=Player)  # prompts for this participant only
    notices: list[tuple[bytes, int]] = field(default_factory=list)  # (pcm, position): tones, may overlap
    inbox: bytes | None = None  # the frame submitted for the next room tick
    outbox: bytes = SILENT_FRAME  # what the last room tick mixed for this participant

    def overlay_frames(self) -> list[bytes]:
        """This tick's frames of the notices and the private prompt (advancing them)."""
        out: list[bytes] = []
        playing: list[tuple[bytes, int]] = []
        for pcm, pos in self.notices:
            chunk = pcm[pos : pos + FRAME_BYTES]
            out.append(chunk + bytes(FRAME_BYTES - len(chunk)))
            if pos + FRAME_BYTES < len(pcm):
                playing.append((pcm, pos + FRAME_BYTES))
        self.notices = playing
        if self.private.busy:
            out.append(self.private.next_frame()[0])
        return out


class Room:
    """One conference: participants, mute flags, and the mix (module docstring for the timing)."""

    def __init__(
        self,
        name: str,
        max_participants: int = MAX_PARTICIPANTS,
        join_tone: bytes | None = None,
        leave_tone: bytes | None = None,
    ) -> None:
        if max_participants < 1:
            raise ValueError("a room needs room for someone")
        self.name = name
        self.max_participants = max_participants
        self.join_tone = _default_join_tone() if join_tone is None else join_tone
        self.leave_tone = _default_leave_tone() if leave_tone is None else leave_tone
        self._seats: dict[Pid, _Seat] = {}  # insertion order: join order

    # --- membership ----------------------------------------------------------------------------

    def join(self, pid: Pid, now: float) -> bool:
        """Seat ``pid`` (False: the room is full). Everyone already there hears the join tone.
        Joining twice is a no-op (True)."""
        if pid in self._seats:
            return True
        if len(self._seats) >= self.max_participants:
            return False
        self._notify(self.join_tone)
        self._seats[pid] = _Seat(joined_at=now)
        return True

    def leave(self, pid: Pid, now: float) -> None:
        """Unseat ``pid`` (no-op if absent); the others hear the leave tone."""
        if self._seats.pop(pid, None) is not None:
            self._notify(self.leave_tone)

    def toggle_mute(self, pid: Pid) -> bool:
        """Mute or unmute; returns the new state (True: muted)."""
        seat = self._seats[pid]
        seat.muted = not seat.muted
        return seat.muted

    def is_muted(self, pid: Pid) -> bool:
        return self._seats[pid].muted

    def play_to(self, pid: Pid, pcm: bytes) -> None:
        """A prompt heard by ``pid`` only, over the mix. A new one cuts the previous one short:
        the latest news ('you are unmuted') is the one that matters."""
        seat = self._seats[pid]
        seat.private.stop()
        seat.private.play(pcm)

    @property
    def participants(self) -> tuple[Pid, ...]:
        """In join order."""
        return tuple(self._seats)

    @property
    def empty(self) -> bool:
        """Nobody left: whoever owns the room table drops the room."""
        return not self._seats

    def __len__(self) -> int:
        return len(self._seats)

    def __contains__(self, pid: object) -> bool:
        return pid in self._seats

    # --- mixing --------------------------------------------------------------------------------

    def submit(self, pid: Pid, frame: bytes | None) -> None:
        """Phase 1: ``pid``'s frame for the next ``tick()`` (ignored when not seated)."""
        seat = self._seats.get(pid)
        if seat is not None:
            seat.inbox = frame

    def heard(self, pid: Pid) -> bytes:
        """What the last ``tick`` mixed for ``pid`` (silence before the first one, or when absent)."""
        seat = self._seats.get(pid)
        return SILENT_FRAME if seat is None else seat.outbox

    def tick(self, frames: Mapping[Pid, bytes | None] | None = None) -> dict[Pid, bytes]:
        """Mix one frame for everyone. ``frames``: each participant's frame (missing or None:
        silence from them); without it, the frames ``submit``ted since the last tick."""
        pids = list(self._seats)
        seats = [self._seats[p] for p in pids]
        if frames is None:
            inputs = [s.inbox for s in seats]
        else:
            inputs = [frames.get(p) for p in pids]
        for seat in seats:
            seat.inbox = None
        mixed = mixer.mix(inputs, [s.muted for s in seats])
        out: dict[Pid, bytes] = {}
        for pid, seat, frame in zip(pids, seats, mixed, strict=True):
            overlays = seat.overlay_frames()
            if overlays:
                frame = _add(frame, overlays)
            seat.outbox = frame
            out[pid] = frame
        return out

    def _notify(self, pcm: bytes) -> None:
        if not pcm:
            return
        for seat in self._seats.values():
            seat.notices.append((pcm, 0))


def _add(frame: bytes, overlays: list[bytes]) -> bytes:
    total = np.frombuffer(frame, dtype="<i2").astype(np.int32)
    for extra in overlays:
        total += np.frombuffer(extra, dtype="<i2")
    np.clip(total, -32768, 32767, out=total)
    return total.astype("<i2").tobytes()


class Rooms:
    """The room table: a room is made on first use (``rooms(name)``) and dropped by ``tick`` once
    empty. Pass the instance itself as ``RoomEntry``'s ``rooms``."""

    def __init__(self, factory: Callable[[str], Room] = Room) -> None:
        self._factory = factory
        self._rooms: dict[str, Room] = {}

    def __call__(self, name: str) -> Room:
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = self._factory(name)
        return room

    def get(self, name: str) -> Room | None:
        return self._rooms.get(name)

    def tick(self) -> None:
        """Phase 2: mix every room once; drop the empty ones."""
        for name, room in list(self._rooms.items()):
            if room.empty:
                del self._rooms[name]
            else:
                room.tick()

    def __len__(self) -> int:
        return len(self._rooms)

    def __iter__(self) -> Iterator[Room]:
        return iter(list(self._rooms.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._rooms


class Stage(enum.Enum):
    START = "start"  # joins a fixed room at the first tick
    PIN = "pin"
    SEATED = "seated"
    BYE = "bye"
    DONE = "done"


# Keys while seated: key -> action.
SEATED_KEYS: Mapping[str, str] = {"1": "toggle_mute"}


class RoomEntry:
    """One caller's way into a room and their seat there (``media.app`` contract).

    Exactly one of ``room`` (join it at once) and ``pins`` ({pin: room name}: ask first).
    ``rooms`` finds or makes a room by name (a ``Rooms`` table)."""

    def __init__(
        self,
        pid: Pid,
        rooms: Callable[[str], Room],
        prompts: PromptSet,
        *,
        room: str | None = None,
        pins: Mapping[str, str] | None = None,
        timeout: float = 5.0,
        repeats: int = 3,
    ) -> None:
        if (room is None) == (pins is None):
            raise ValueError("give either a room or a PIN map")
        self.pid = pid
        self.prompts = prompts
        self._rooms = rooms
        self._fixed = room
        self._pins = dict(pins or {})
        self._player = Player()
        self._timer = InputTimer(timeout, repeats)
        self._pending: list[AppEvent] = []
        self._digits = ""
        self._failures = 0
        self._bye_reason = "done"
        self.room: Room | None = None
        if room is not None:
            self.stage = Stage.START
        else:
            self.stage = Stage.PIN
            self._say("enter_conference_pin")

    @property
    def done(self) -> bool:
        return self.stage is Stage.DONE

    @property
    def muted(self) -> bool:
        return self.room is not None and self.room.is_muted(self.pid)

    def tick(self, frame_in: bytes | None, now: float) -> Tick:
        if self.stage is Stage.START and self._fixed is not None:
            self._join(self._fixed, now)
        if self.stage is Stage.SEATED and self.room is not None:
            out = self.room.heard(self.pid)
            self.room.submit(self.pid, frame_in)
            return Tick(out, None, self._flush())
        idle = not self._player.busy
        out = SILENT_FRAME if idle else self._player.next_frame()[0]
        if not self._player.busy:
            self._played_out(now, idle)
            if idle and self._player.busy:  # a repeat starts now, not a tick later
                out = self._player.next_frame()[0]
        return Tick(out, None, self._flush())

    def on_digit(self, digit: str, now: float) -> None:
        if self.stage is Stage.PIN:
            self._timer.key()
            if digit == "#":
                self._check_pin(now)
            elif digit == "*":
                self._digits = ""
            elif digit.isdigit() and len(self._digits) < MAX_PIN_DIGITS:
                self._player.stop()  # barge-in
                self._digits += digit
        elif self.stage is Stage.SEATED and SEATED_KEYS.get(digit) == "toggle_mute":
            self._toggle_mute()

    def on_hangup(self, now: float) -> tuple[AppEvent, ...]:
        if self.stage is Stage.SEATED and self.room is not None:
            self.room.leave(self.pid, now)
        self._player.stop()
        self.stage = Stage.DONE
        return self._flush()

    # --- internals -----------------------------------------------------------------------------

    def _played_out(self, now: float, idle: bool) -> None:
        if self.stage is Stage.PIN:
            if idle:  # silence since the last tick: the wait for a key runs from here
                self._timer.start(now)
            verdict = self._timer.check(now)
            if verdict is InputTimer.GIVE_UP:
                self._bye("timeout")
            elif verdict is InputTimer.REPEAT:
                if self._digits:
                    self._check_pin(now)  # a pause after some digits counts as '#'
                else:
                    self._say("enter_conference_pin")
        elif self.stage is Stage.BYE:
            self.stage = Stage.DONE
            self._pending.append(Hangup(self._bye_reason))

    def _check_pin(self, now: float) -> None:
        entered, self._digits = self._digits, ""
        name = self._pins.get(entered)
        if name is not None:
            self._join(name, now)
            return
        self._failures += 1
        if self._failures >= PIN_ATTEMPTS:
            self._bye("pin", "invalid_pin")
        else:
            self._player.stop()
            self._timer.pause()
            self._say("invalid_pin", "enter_conference_pin")

    def _join(self, name: str, now: float) -> None:
        room = self._rooms(name)
        if not room.join(self.pid, now):
            self._bye("full", "conference_full")
            return
        self.room = room
        self.stage = Stage.SEATED
        self._player.stop()
        welcome = ["conference_joined"] + (["only_person"] if len(room) == 1 else [])
        room.play_to(self.pid, self.prompts.join(welcome))

    def _toggle_mute(self) -> None:
        assert self.room is not None
        muted = self.room.toggle_mute(self.pid)
        self.room.play_to(self.pid, self.prompts.get("muted" if muted else "unmuted"))

    def _bye(self, reason: str, *before: str) -> None:
        self.stage = Stage.BYE
        self._bye_reason = reason
        self._player.stop()
        self._say(*before, "goodbye")

    def _say(self, *names: str) -> None:
        self._player.play(*self.prompts.clips(names))

    def _flush(self) -> tuple[AppEvent, ...]:
        if not self._pending:
            return NO_EVENTS
        events, self._pending = tuple(self._pending), []
        return events
