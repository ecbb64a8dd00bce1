"""The mailbox owner's menu (voicemail retrieval): PIN, message counts, messages, greeting options.

``Retrieval`` implements the ``media.app`` contract. The menus are two tables, in the spirit of
h11's state tables: ``KEYS`` (state -> key -> action) and ``PROMPT_OF`` (state -> what it says on
entry and on each repeat); the states that only play something and move on (``ANNOUNCE``,
``BEEP``, ``BYE``) and the PIN entry are handled beside them::

    PIN --ok--> ANNOUNCE(counts) --> MAIN  1 -> MESSAGE (envelope, message, options), one per message
                                           0 -> OPTIONS  1 -> RECORD_PROMPT -> BEEP -> RECORDING
                                           # -> BYE                 2 hear / 3 delete greeting, * -> MAIN
    MESSAGE  5 replay, 7 delete, 9 save, 6 next, # -> MAIN; after the last: 'no more messages' -> MAIN

Rules:

- Barge-in: a key pressed while a prompt plays stops it and acts at once. An ``ANNOUNCE`` (counts,
  'message deleted', a greeting played back...) is cut short and the key acts in the state that
  follows. While the envelope or the message itself plays, only the message keys act (a stray
  key does not cut the message off).
- A message played to its end is marked heard (``MarkHeard``, new messages only, once); '6' skips
  without marking; '9' marks a new message heard whether it was played or not.
- A menu waits ``timeout`` s after its prompt, says it again, and after ``repeats`` repeats
  without a key says goodbye and hangs up (``Hangup("timeout")``): an abandoned call ends.
- Three wrong PINs: 'incorrect pin', 'goodbye', ``Hangup("pin")``. A PIN is digits then '#'
  ('*' starts over); ``timeout`` s after the last digit counts as '#'.
- The greeting recording follows ``media.voicemail``'s rules (``Recorder``, same tick rules):
  ``RecordingStarted("greeting")`` / ``RecordingEnded(kind="greeting")``, then 'greeting saved' or,
  when too short to keep, 'too short, not saved'.
- Keys' events come out with the next tick (or from ``on_hangup``).

``messages`` is a snapshot (``MailboxStore.messages``: new first, then saved); what the caller does
in this call is reported as events for the adapter to apply to the store. ``load_message`` and
``greeting`` are the only reads, injected; a message whose audio is gone should load as ``b""``.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Callable, Mapping, Sequence
from zoneinfo import ZoneInfo

from media import tones
from media.app import (
    NO_EVENTS,
    SILENT_FRAME,
    AppEvent,
    DeleteGreeting,
    DeleteMessage,
    Hangup,
    MarkHeard,
    RecordingEnded,
    RecordingStarted,
    Tick,
)
from media.mailbox import Message
from media.prompts import InputTimer, Player, PromptSet, say_datetime, say_digits, say_message_counts
from media.voicemail import Recorder

PIN_ATTEMPTS = 3
MAX_PIN_DIGITS = 32
_BODY = "body"  # Player mark: the message itself has been played to its end


class State(enum.Enum):
    PIN = "pin"
    ANNOUNCE = "announce"  # a prompt that leads on to ``_then``
    MAIN = "main"
    MESSAGE = "message"  # envelope, message, message options: keys act on the current message
    OPTIONS = "options"
    RECORD_PROMPT = "record_prompt"
    BEEP = "beep"
    RECORDING = "recording"
    BYE = "bye"
    DONE = "done"


# What each key does, state by state. Keys not listed: 'invalid choice' and the menu again in a
# waiting menu, nothing elsewhere; ``PIN`` collects digits, ``ANNOUNCE`` passes the key on.
KEYS: Mapping[State, Mapping[str, str]] = {
    State.MAIN: {"1": "listen", "0": "options", "#": "exit"},
    State.MESSAGE: {"5": "replay", "7": "delete", "9": "save", "6": "next", "#": "main"},
    State.OPTIONS: {"1": "record_greeting", "2": "hear_greeting", "3": "delete_greeting", "*": "main"},
    State.RECORD_PROMPT: {"#": "beep", "*": "options"},
    State.RECORDING: {"#": "stop_recording"},
}
# The prompt said on entering a state, and again on each repeat of a menu.
PROMPT_OF: Mapping[State, str] = {
    State.PIN: "enter_pin",
    State.MAIN: "main_menu",
    State.MESSAGE: "message_options",
    State.OPTIONS: "mailbox_options",
    State.RECORD_PROMPT: "record_greeting",
}
_WAITING = frozenset({State.PIN, State.MAIN, State.MESSAGE, State.OPTIONS})  # time out without a key
_NAMED_PROMPTS = frozenset(
    {
        "incorrect_pin",
        "goodbye",
        "invalid_choice",
        "message_from",
        "message_deleted",
        "message_saved",
        "no_more_messages",
        "no_messages",
        "greeting_saved",
        "greeting_not_saved",
        "greeting_deleted",
        "no_greeting",
    }
)
PROMPTS_USED: frozenset[str] = _NAMED_PROMPTS | frozenset(PROMPT_OF.values())
"""Every fixed prompt name this module says (a test checks the shipped set has them all)."""


class Retrieval:
    """The owner's menu for one call (module docstring: flow and rules).

    ``now`` is the wall clock (epoch seconds) at the start of the call, for 'today'/'yesterday';
    the ``now`` given to ``tick``/``on_digit`` is the adapter's monotonic clock."""

    def __init__(
        self,
        messages: Sequence[Message],
        prompts: PromptSet,
        load_message: Callable[[str], bytes],
        greeting: Callable[[], bytes | None],
        *,
        now: float,
        pin: str | None = None,
        tz: ZoneInfo | None = None,
        beep: bytes | None = None,
        max_greeting_seconds: float = 60.0,
        min_greeting_seconds: float = 1.0,
        silence_seconds: float | None = 5.0,
        silence_dbov: float = -45.0,
        timeout: float = 5.0,
        repeats: int = 3,
    ) -> None:
        self.messages = tuple(messages)
        self.prompts = prompts
        self._load_message = load_message
        self._greeting = greeting
        self._wall_now = now
        self._pin = pin or None
        self._tz = tz or ZoneInfo("UTC")
        self._beep = tones.beep() if beep is None else beep
        self._recorder_limits = {
            "max_seconds": max_greeting_seconds,
            "min_seconds": min_greeting_seconds,
            "silence_seconds": silence_seconds,
            "silence_dbov": silence_dbov,
        }
        self._timer = InputTimer(timeout, repeats)
        self._player = Player()
        self._pending: list[AppEvent] = []
        self._actions: dict[str, Callable[[], None]] = {
            "listen": self._listen,
            "options": lambda: self._enter_menu(State.OPTIONS),
            "main": lambda: self._enter_menu(State.MAIN),
            "exit": lambda: self._bye("done"),
            "replay": self._replay,
            "delete": self._delete,
            "save": self._save,
            "next": self._next,
            "record_greeting": lambda: self._enter_menu(State.RECORD_PROMPT),
            "hear_greeting": self._hear_greeting,
            "delete_greeting": self._delete_greeting,
            "beep": self._enter_beep,
            "stop_recording": lambda: self._end_recording("hash"),
            "pin": self._enter_pin,
        }
        self._then = "main"
        self._digits = ""
        self._pin_failures = 0
        self._bye_reason = "done"
        self._current = -1  # index in ``messages`` of the message being dealt with
        self._in_message = False  # envelope or message playing (not the options yet)
        self.deleted: set[str] = set()
        self.heard: set[str] = set()
        self.recorder: Recorder | None = None
        self.state = State.DONE
        if self._pin is not None:
            self._enter_pin()
        else:
            self._announce_counts()

    # --- the media.app contract ----------------------------------------------------------------

    def tick(self, frame_in: bytes | None, now: float) -> Tick:
        if self.state is State.RECORDING and self.recorder is not None:
            record, ended = self.recorder.feed(frame_in)
            if ended is not None:
                self._finish_recording(ended)
            return Tick(SILENT_FRAME, record, self._flush())
        idle = not self._player.busy  # already nothing to play at the start of this tick
        out = SILENT_FRAME if idle else self._next_frame()
        if not self._player.busy:
            self._played_out(now, idle)
            if idle and self._player.busy:  # a repeat (or a move) starts now, not a tick later
                out = self._next_frame()
        return Tick(out, None, self._flush())

    def on_digit(self, digit: str, now: float) -> None:
        state = self.state
        if state is State.PIN:
            self._timer.key()
            self._pin_key(digit)
        elif state is State.ANNOUNCE:
            self._player.stop()
            self._actions[self._then]()
            if self.state is not State.ANNOUNCE:  # the key acts where the announcement led
                self.on_digit(digit, now)
        elif state in KEYS:
            self._timer.key()
            action = KEYS[state].get(digit)
            if action is not None:
                self._player.stop()
                self._actions[action]()
            elif state in _WAITING and not (state is State.MESSAGE and self._in_message):
                self._invalid()
        # BEEP, BYE, DONE: keys do nothing

    def on_hangup(self, now: float) -> tuple[AppEvent, ...]:
        if self.state is State.RECORDING and self.recorder is not None:
            self._pending.append(self.recorder.end("hangup"))
        self._player.stop()
        self.state = State.DONE
        return self._flush()

    @property
    def done(self) -> bool:
        return self.state is State.DONE

    # --- playing out, timing out ---------------------------------------------------------------

    def _next_frame(self) -> bytes:
        out, marks = self._player.next_frame()
        if _BODY in marks:
            self._message_played()
        return out

    def _played_out(self, now: float, idle: bool) -> None:
        """Nothing more to play in the current state (``idle``: since before this tick; the wait
        for a key starts then, so a menu is repeated after exactly ``timeout`` s of silence)."""
        state = self.state
        if state in _WAITING:
            if idle:
                self._timer.start(now)
            verdict = self._timer.check(now)
            if verdict is InputTimer.GIVE_UP:
                self._bye("timeout")
            elif verdict is InputTimer.REPEAT:
                if state is State.PIN and self._digits:
                    self._check_pin()  # a pause after some digits counts as '#'
                else:
                    self._say(PROMPT_OF[state])
        elif state is State.ANNOUNCE:
            self._actions[self._then]()
        elif state is State.RECORD_PROMPT:
            self._enter_beep()
        elif state is State.BEEP:
            self.state = State.RECORDING
            self.recorder = Recorder("greeting", **self._recorder_limits)  # type: ignore[arg-type]
            self._pending.append(RecordingStarted("greeting"))
        elif state is State.BYE:
            self.state = State.DONE
            self._pending.append(Hangup(self._bye_reason))

    def _flush(self) -> tuple[AppEvent, ...]:
        if not self._pending:
            return NO_EVENTS
        events, self._pending = tuple(self._pending), []
        return events

    # --- entering states -----------------------------------------------------------------------

    def _say(self, *names: str) -> None:
        self._player.play(*self.prompts.clips(names))

    def _enter_menu(self, state: State) -> None:
        self.state = state
        self._player.stop()
        self._timer.pause()
        self._say(PROMPT_OF[state])

    def _announce(self, clips: Sequence[bytes], then: str) -> None:
        self.state = State.ANNOUNCE
        self._player.stop()
        self._player.play(*clips)
        self._then = then

    def _announce_names(self, names: Sequence[str], then: str) -> None:
        self._announce(self.prompts.clips(names), then)

    def _bye(self, reason: str, *before: str) -> None:
        self.state = State.BYE
        self._bye_reason = reason
        self._player.stop()
        self._say(*before, "goodbye")

    def _invalid(self) -> None:
        self._player.stop()
        self._say("invalid_choice", PROMPT_OF[self.state])

    # --- PIN -----------------------------------------------------------------------------------

    def _enter_pin(self) -> None:
        self.state = State.PIN
        self._digits = ""
        self._player.stop()
        self._timer.pause()
        self._say(PROMPT_OF[State.PIN])

    def _pin_key(self, digit: str) -> None:
        if digit == "#":
            self._check_pin()
        elif digit == "*":
            self._digits = ""
        elif digit.isdigit() and len(self._digits) < MAX_PIN_DIGITS:
            self._player.stop()
            self._digits += digit

    def _check_pin(self) -> None:
        entered, self._digits = self._digits, ""
        assert self._pin is not None
        if hmac.compare_digest(entered.encode(), self._pin.encode()):
            self._announce_counts()
            return
        self._pin_failures += 1
        if self._pin_failures >= PIN_ATTEMPTS:
            self._bye("pin", "incorrect_pin")
        else:
            self._announce_names(["incorrect_pin"], then="pin")

    def _announce_counts(self) -> None:
        new = sum(1 for m in self.messages if m.new)
        self._announce_names(say_message_counts(new, len(self.messages) - new), then="main")

    # --- messages ------------------------------------------------------------------------------

    def _listen(self) -> None:
        self._current = -1
        self._next()

    def _next(self) -> None:
        """The next message not deleted in this call, or 'no more messages' (or 'no messages')."""
        for i in range(self._current + 1, len(self.messages)):
            if self.messages[i].id not in self.deleted:
                self._current = i
                self._play_message(envelope=True)
                return
        remaining = any(m.id not in self.deleted for m in self.messages)
        self._announce_names(["no_more_messages" if remaining else "no_messages"], then="main")

    def _play_message(self, envelope: bool) -> None:
        msg = self.messages[self._current]
        self.state = State.MESSAGE
        self._player.stop()
        self._timer.pause()
        if envelope:
            self._say(
                "message_from", *say_digits(msg.caller), *say_datetime(msg.start, self._tz, self._wall_now)
            )
        self._player.play(self._load_message(msg.id), mark=_BODY)
        self._say(PROMPT_OF[State.MESSAGE])
        self._in_message = True

    def _message_played(self) -> None:
        self._in_message = False
        self._mark_heard(self.messages[self._current])

    def _mark_heard(self, msg: Message) -> None:
        if msg.new and msg.id not in self.heard:
            self.heard.add(msg.id)
            self._pending.append(MarkHeard(msg.id))

    def _replay(self) -> None:
        self._play_message(envelope=False)

    def _delete(self) -> None:
        msg = self.messages[self._current]
        self.deleted.add(msg.id)
        self._pending.append(DeleteMessage(msg.id))
        self._announce_names(["message_deleted"], then="next")

    def _save(self) -> None:
        self._mark_heard(self.messages[self._current])
        self._announce_names(["message_saved"], then="next")

    # --- greeting ------------------------------------------------------------------------------

    def _hear_greeting(self) -> None:
        pcm = self._greeting()
        if pcm is None:
            self._announce_names(["no_greeting"], then="options")
        else:
            self._announce([pcm], then="options")

    def _delete_greeting(self) -> None:
        if self._greeting() is None:
            self._announce_names(["no_greeting"], then="options")
            return
        self._pending.append(DeleteGreeting())
        self._announce_names(["greeting_deleted"], then="options")

    def _enter_beep(self) -> None:
        self.state = State.BEEP
        self._player.stop()
        self._player.play(self._beep or SILENT_FRAME)

    def _end_recording(self, reason: str) -> None:
        assert self.recorder is not None
        self._finish_recording(self.recorder.end(reason))

    def _finish_recording(self, ended: RecordingEnded) -> None:
        self._pending.append(ended)
        self.recorder = None
        self._announce_names(["greeting_saved" if ended.keep else "greeting_not_saved"], then="options")
