"""The owner's menu, driven tick by tick: PIN (3 attempts), counts, messages (envelope, MarkHeard
only when played to the end, replay, delete, save, next), greeting options (record with its limits,
hear, delete), barge-in, menu repeats and the hang-up of an abandoned call.

Prompts here are labels: each prompt is a frame of constant value ``100 * k`` then one of ``-100 * k``,
so the audio sent out reads back as the list of prompt names said (``said``)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from media import tones
from media.app import (
    FRAME_BYTES,
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
from media.make_prompts import CATALOGUE
from media.menu import KEYS, Retrieval, State
from media.prompts import PromptSet

BERLIN = ZoneInfo("Europe/Berlin")
WALL_NOW = datetime(2024, 3, 14, 15, 0, tzinfo=BERLIN).timestamp()
NAMES = sorted(CATALOGUE)
LABELS = {name: 100 * (i + 1) for i, name in enumerate(NAMES)}
BODY_BASE = 20000  # message k's audio: constant frames of BODY_BASE + 100 * k
GREETING_VALUE = 30000
BEEP_VALUE = 31000
VOICE = tones.sine(1000, 20, -20)


def frame_of(value: int) -> bytes:
    return struct.pack("<160h", *[value] * 160)


def label_clip(value: int, frames: int = 1) -> bytes:
    return frame_of(value) * frames + frame_of(-value)


PROMPTS = PromptSet.from_dict({n: label_clip(LABELS[n]) for n in NAMES})
WHAT = {v: n for n, v in LABELS.items()} | {GREETING_VALUE: "<greeting>", BEEP_VALUE: "<beep>"}


def message(k: int, caller: str, hour: int, new: bool) -> Message:
    start = datetime(2024, 3, 14, hour, 0, tzinfo=BERLIN).timestamp()
    return Message(f"m{k}", caller, start, 2.0, new, Path(f"/nowhere/m{k}.wav"))


MESSAGES = [message(1, "1001", 9, True), message(2, "1002", 10, True), message(3, "alice", 11, False)]
ENVELOPES = {
    "m1": ["message_from", "n_1", "n_0", "n_0", "n_1", "received", "today", "at", "n_9", "a_m"],
    "m2": ["message_from", "n_1", "n_0", "n_0", "n_2", "received", "today", "at", "n_10", "a_m"],
    "m3": ["message_from", "unknown_caller", "received", "today", "at", "n_11", "a_m"],
}


def body(msg_id: str) -> bytes:
    return label_clip(BODY_BASE + 100 * int(msg_id[1:]), frames=3)


def said(frames: list[bytes]) -> list[str]:
    """Each labelled clip's first frame, as a name; message bodies as <m1>..."""
    out: list[str] = []
    previous = b""
    for f in frames:
        first = struct.unpack_from("<h", f)[0]
        if first <= 0 or f != frame_of(first) or f == previous:
            previous = f
            continue
        previous = f
        if first in WHAT:
            out.append(WHAT[first])
        elif BODY_BASE < first < GREETING_VALUE:
            out.append(f"<m{(first - BODY_BASE) // 100}>")
    return out


@dataclass
class Driver:
    app: Retrieval
    k: int = 0
    out: list[bytes] = field(default_factory=list)
    recorded: bytearray = field(default_factory=bytearray)
    events: list[tuple[int, AppEvent]] = field(default_factory=list)
    mark: int = 0  # ``fresh`` reads from here

    @property
    def now(self) -> float:
        return 50.0 + self.k * 0.02

    def tick(self, frame: bytes | None = None) -> Tick:
        t = self.app.tick(frame, self.now)
        assert len(t.out) == FRAME_BYTES
        assert t.record is None or not {type(e) for e in t.events} & {RecordingStarted, RecordingEnded}
        self.events += [(self.k, e) for e in t.events]
        if t.record is not None:
            self.recorded += t.record
        self.out.append(t.out)
        self.k += 1
        return t

    def run(self, n: int, frame: bytes | None = None) -> None:
        for _ in range(n):
            self.tick(frame)

    def settle(self, limit: int = 2000) -> None:
        """Run until the application waits for a key (or records, or has hung up): the tick that
        sent the last frame of what it had to say is the last one run."""
        for _ in range(limit):
            self.tick()
            if not self.app._player.busy:
                return
        raise AssertionError("still playing")

    def keys(self, digits: str) -> None:
        for d in digits:
            self.app.on_digit(d, self.now)

    def fresh(self) -> list[str]:
        """What was said since the last call."""
        words = said(self.out[self.mark :])
        self.mark = len(self.out)
        return words

    def kinds(self) -> list[AppEvent]:
        return [e for _, e in self.events]


def retrieval(messages=MESSAGES, greeting: bytes | None = None, **kw) -> Driver:
    state = {"greeting": greeting}
    kw.setdefault("beep", label_clip(BEEP_VALUE))
    app = Retrieval(messages, PROMPTS, body, lambda: state["greeting"], now=WALL_NOW, tz=BERLIN, **kw)
    return Driver(app)


def at_main_menu(**kw) -> Driver:
    d = retrieval(**kw)
    d.settle()
    d.settle()
    assert d.fresh()[-1] == "main_menu"
    return d


# --- start, PIN ----------------------------------------------------------------------------------


def test_without_pin_counts_then_main_menu() -> None:
    d = retrieval()
    d.settle()
    d.settle()
    assert d.fresh() == ["you_have", "n_2", "new_messages", "and", "n_1", "saved_message", "main_menu"]
    assert d.app.state is State.MAIN and d.events == []


def test_empty_mailbox() -> None:
    d = retrieval(messages=[])
    d.settle()
    d.settle()
    assert d.fresh() == ["no_messages", "main_menu"]
    d.keys("1")
    d.settle()
    d.settle()
    assert d.fresh() == ["no_messages", "main_menu"]


def test_pin_right_first_time() -> None:
    d = retrieval(pin="4711")
    d.settle()
    assert d.fresh() == ["enter_pin"]
    d.keys("4711#")
    d.settle()
    assert d.fresh()[0] == "you_have"


def test_pin_typed_over_the_prompt_stops_it() -> None:
    d = retrieval(pin="4711")
    d.tick()
    d.keys("4")
    d.run(5)
    assert d.fresh() == ["enter_pin"] and d.out[-1] == bytes(FRAME_BYTES)
    d.keys("711#")
    d.settle()
    assert d.fresh()[0] == "you_have"


def test_three_wrong_pins_hang_up() -> None:
    d = retrieval(pin="4711")
    d.settle()
    for _ in range(3):
        d.keys("1234#")
        d.settle()
        d.settle()
    assert d.fresh() == [
        "enter_pin",
        "incorrect_pin",
        "enter_pin",
        "incorrect_pin",
        "enter_pin",
        "incorrect_pin",
        "goodbye",
    ]
    assert d.kinds() == [Hangup("pin")] and d.app.done


def test_two_wrong_pins_then_the_right_one() -> None:
    d = retrieval(pin="4711")
    d.keys("0#47#")  # typed over the prompts
    d.keys("4711#")
    d.settle()
    assert d.fresh() == ["you_have", "n_2", "new_messages", "and", "n_1", "saved_message", "main_menu"]
    assert d.events == []


def test_star_starts_the_pin_over_and_a_pause_after_digits_counts_as_hash() -> None:
    d = retrieval(pin="4711")
    d.settle()
    d.keys("99*4711")
    d.run(250)  # 5 s of silence after the last key...
    assert d.app.state is State.PIN
    d.tick()  # ... and the PIN is taken
    assert d.app.state is State.ANNOUNCE
    d.settle()
    assert d.fresh() == [
        "enter_pin",
        "you_have",
        "n_2",
        "new_messages",
        "and",
        "n_1",
        "saved_message",
        "main_menu",
    ]


def test_empty_pin_is_a_wrong_attempt() -> None:
    d = retrieval(pin="4711")
    d.keys("#")
    d.settle()
    d.settle()
    assert d.fresh() == ["incorrect_pin", "enter_pin"]


# --- messages ------------------------------------------------------------------------------------


def test_listen_plays_envelope_message_options_and_marks_heard_at_the_end() -> None:
    d = at_main_menu()
    d.keys("1")
    d.settle()
    assert d.fresh() == [*ENVELOPES["m1"], "<m1>", "message_options"]
    # with the message's last frame (4 frames from its first), not before
    assert d.events == [(_first_tick_of(d, "<m1>") + 3, MarkHeard("m1"))]


def _first_tick_of(d: Driver, what: str) -> int:
    for i, f in enumerate(d.out):
        if said([f]) == [what]:
            return i
    raise AssertionError(what)


def test_next_skips_without_marking_and_after_the_last_comes_the_main_menu() -> None:
    d = at_main_menu()
    d.keys("1")
    d.run(2)  # 'message from' of m1
    d.keys("6")  # skip m1 before it was heard
    d.settle()
    d.keys("6")  # m2 heard to the end, then next
    d.settle()
    d.keys("6")  # m3 (saved) heard, then next
    d.settle()
    d.settle()
    assert d.fresh() == [
        "message_from",
        *ENVELOPES["m2"],
        "<m2>",
        "message_options",
        *ENVELOPES["m3"],
        "<m3>",
        "message_options",
        "no_more_messages",
        "main_menu",
    ]
    assert d.kinds() == [MarkHeard("m2")]  # not m1 (skipped), not m3 (already saved)


def test_message_keys_act_during_the_message_itself() -> None:
    d = at_main_menu()
    d.keys("1")
    for _ in range(100):
        d.tick()
        if said(d.out[-1:]) == ["<m1>"]:
            break
    assert d.events == []
    d.keys("5")  # replay, from the start of the message (no envelope)
    d.settle()
    assert d.fresh() == [*ENVELOPES["m1"], "<m1>", "message_options"]
    assert d.out.count(frame_of(BODY_BASE + 100)) == 1 + 3  # cut after one frame, then all of it
    assert d.kinds() == [MarkHeard("m1")]  # once, at the end of the complete replay


def test_stray_keys_do_not_cut_the_message_off() -> None:
    d = at_main_menu()
    d.keys("1")
    d.run(2)
    d.keys("3")
    d.keys("*")
    d.settle()
    assert d.fresh() == [*ENVELOPES["m1"], "<m1>", "message_options"]
    d.keys("3")  # after the message: an invalid choice is said
    d.settle()
    assert d.fresh() == ["invalid_choice", "message_options"]


def test_delete_goes_to_the_next_message() -> None:
    d = at_main_menu()
    d.keys("1")
    d.run(2)
    d.keys("7")
    d.settle()
    d.settle()
    assert d.fresh() == ["message_from", "message_deleted", *ENVELOPES["m2"], "<m2>", "message_options"]
    assert d.kinds() == [DeleteMessage("m1"), MarkHeard("m2")]


def test_save_marks_a_new_message_heard_even_unplayed() -> None:
    d = at_main_menu()
    d.keys("1")
    d.run(2)
    d.keys("9")
    d.run(1)
    assert d.kinds() == [MarkHeard("m1")]
    d.settle()
    d.settle()
    assert d.fresh() == ["message_from", "message_saved", *ENVELOPES["m2"], "<m2>", "message_options"]
    d.keys("9")  # m2: played to the end already, so no second MarkHeard
    d.settle()
    assert d.kinds() == [MarkHeard("m1"), MarkHeard("m2")]


def test_deleted_messages_are_gone_for_the_rest_of_the_call() -> None:
    d = at_main_menu()
    d.keys("1")
    for _ in range(3):
        d.run(1)
        d.keys("7")
    d.settle()
    d.settle()
    assert d.fresh()[-2:] == ["no_messages", "main_menu"]
    d.keys("1")
    d.settle()
    assert d.fresh() == ["no_messages", "main_menu"]
    assert d.kinds() == [DeleteMessage("m1"), DeleteMessage("m2"), DeleteMessage("m3")]


def test_hash_in_message_returns_to_the_main_menu_and_1_starts_over() -> None:
    d = at_main_menu()
    d.keys("1")
    d.settle()
    d.keys("#")
    d.settle()
    d.keys("1")
    d.run(1)
    assert d.fresh()[-2:] == ["main_menu", "message_from"]
    assert d.app._current == 0


# --- barge-in, repeats, abandoned calls ----------------------------------------------------------


def test_key_during_counts_acts_in_the_main_menu_at_once() -> None:
    d = retrieval()
    d.run(2)
    d.keys("1")
    d.run(1)
    assert d.fresh() == ["you_have", "message_from"]


def test_main_menu_repeats_after_5_s_and_hangs_up_after_3_repeats() -> None:
    d = at_main_menu()
    last = max(i for i, f in enumerate(d.out) if any(f))  # the prompt's last frame
    d.run(last + 251 - d.k)
    assert d.fresh() == [] and d.out[last + 1 :] == [bytes(FRAME_BYTES)] * 250  # 5.00 s of silence
    d.tick()
    assert d.fresh() == ["main_menu"]
    for _ in range(2):
        d.settle()
        d.run(250)
        assert d.fresh() == []
        d.tick()
        assert d.fresh() == ["main_menu"]
    d.settle()
    d.run(250)
    assert d.events == []
    d.tick()
    d.settle()
    assert d.fresh() == ["goodbye"]
    assert d.kinds() == [Hangup("timeout")] and d.app.done


def test_a_key_resets_the_repeat_count() -> None:
    d = at_main_menu()
    for _ in range(3):
        d.run(251)
        d.settle()
    d.keys("5")  # invalid, but someone is there
    d.settle()
    for _ in range(3):
        d.run(251)
        d.settle()
    assert d.events == []
    d.run(251)
    d.settle()
    assert d.kinds() == [Hangup("timeout")]


def test_message_options_repeat_and_time_out_too() -> None:
    d = at_main_menu()
    d.keys("1")
    d.settle()
    d.fresh()
    for _ in range(4):
        d.run(251)
        d.settle()
    assert d.fresh() == ["message_options"] * 3 + ["goodbye"]
    assert d.kinds() == [MarkHeard("m1"), Hangup("timeout")]


def test_hash_in_main_menu_says_goodbye_and_hangs_up() -> None:
    d = at_main_menu()
    d.keys("#")
    d.settle()
    assert d.fresh() == ["goodbye"] and d.kinds() == [Hangup("done")]
    d.keys("1")
    d.run(5)
    assert d.fresh() == [] and len(d.events) == 1


def test_invalid_choice_in_the_main_menu() -> None:
    d = at_main_menu()
    d.keys("7")
    d.settle()
    assert d.fresh() == ["invalid_choice", "main_menu"]


def test_events_of_keys_are_returned_by_a_hangup_before_the_next_tick() -> None:
    d = at_main_menu()
    d.keys("1")
    d.run(1)
    d.keys("7")
    assert d.app.on_hangup(d.now) == (DeleteMessage("m1"),)
    d.run(3)
    assert d.events == [] and d.app.done


# --- greeting options ----------------------------------------------------------------------------


def at_options(**kw) -> Driver:
    d = at_main_menu(**kw)
    d.keys("0")
    d.settle()
    assert d.fresh() == ["mailbox_options"]
    return d


def record_greeting(d: Driver) -> int:
    d.keys("1")
    for _ in range(100):
        d.tick()
        if RecordingStarted("greeting") in d.kinds():
            break
    assert d.fresh() == ["record_greeting", "<beep>"]
    return d.k


def test_record_a_greeting() -> None:
    d = at_options()
    record_greeting(d)
    d.run(60, VOICE)
    d.run(10, None)
    d.keys("#")
    d.settle()
    d.settle()
    assert d.kinds() == [RecordingStarted("greeting"), RecordingEnded("greeting", "hash", 1.2, True)]
    assert len(d.recorded) == 60 * FRAME_BYTES
    assert tones.tone_ratio(tones.samples_of(bytes(d.recorded)), 1000) > 0.99
    assert d.fresh() == ["greeting_saved", "mailbox_options"]


def test_too_short_greeting_is_not_kept() -> None:
    d = at_options()
    record_greeting(d)
    d.run(49, VOICE)
    d.keys("#")
    d.settle()
    assert d.kinds()[-1] == RecordingEnded("greeting", "hash", 0.98, False)
    assert d.fresh() == ["greeting_not_saved", "mailbox_options"]


def test_greeting_recording_stops_at_its_maximum_exactly() -> None:
    d = at_options(max_greeting_seconds=2.0)
    start = record_greeting(d)
    d.run(100, VOICE)
    assert d.kinds() == [RecordingStarted("greeting")]
    d.tick(VOICE)
    assert d.events[-1] == (start + 100, RecordingEnded("greeting", "max", 2.0, True))
    assert len(d.recorded) == 100 * FRAME_BYTES


def test_greeting_recording_ends_on_silence() -> None:
    d = at_options()
    start = record_greeting(d)
    d.run(80, VOICE)
    d.run(250, None)
    assert d.events[-1] == (start + 329, RecordingEnded("greeting", "silence", 1.6, True))


def test_hangup_while_recording_the_greeting() -> None:
    d = at_options()
    record_greeting(d)
    d.run(75, VOICE)
    assert d.app.on_hangup(d.now) == (RecordingEnded("greeting", "hangup", 1.5, True),)
    d = at_options()
    record_greeting(d)
    d.run(20, VOICE)
    assert d.app.on_hangup(d.now) == (RecordingEnded("greeting", "hangup", 0.4, False),)


def test_hash_during_the_record_prompt_goes_to_the_beep_and_star_cancels() -> None:
    d = at_options()
    d.keys("1")
    d.run(1)
    d.keys("#")
    d.run(3)
    assert d.fresh() == ["record_greeting", "<beep>"]
    assert d.kinds() == [RecordingStarted("greeting")]
    d = at_options()
    d.keys("1")
    d.run(1)
    d.keys("*")
    d.settle()
    assert d.fresh() == ["record_greeting", "mailbox_options"] and d.events == []


def test_hear_and_delete_the_greeting() -> None:
    d = at_options(greeting=label_clip(GREETING_VALUE))
    d.keys("2")
    d.settle()
    d.settle()
    assert d.fresh() == ["<greeting>", "mailbox_options"]
    d.keys("3")
    d.settle()
    d.settle()
    assert d.fresh() == ["greeting_deleted", "mailbox_options"]
    assert d.kinds() == [DeleteGreeting()]
    d.keys("*")
    d.settle()
    assert d.fresh() == ["main_menu"]


def test_no_greeting_to_hear_or_delete() -> None:
    d = at_options()
    d.keys("2")
    d.settle()
    d.settle()
    d.keys("3")
    d.settle()
    d.settle()
    assert d.fresh() == ["no_greeting", "mailbox_options", "no_greeting", "mailbox_options"]
    assert d.events == []


def test_menu_table_actions_all_exist() -> None:
    app = retrieval().app
    for keys in KEYS.values():
        for action in keys.values():
            assert action in app._actions


# --- with the shipped prompts: every path says names that exist ---------------------------------


def test_a_whole_session_with_the_shipped_prompts() -> None:
    shipped = PromptSet.default()
    app = Retrieval(MESSAGES, shipped, body, lambda: b"\x01\x00" * 800, now=WALL_NOW, tz=BERLIN, pin="12")
    d = Driver(app)

    def step(keys: str, ticks: int = 600) -> None:
        d.keys(keys)
        d.run(ticks)

    step("", 50)
    step("9#", 200)  # wrong
    step("12#")
    step("1")
    step("9")
    step("7")
    step("5")
    step("6")  # after the last: back to the main menu
    step("1")
    step("#")  # from a message to the main menu
    step("3")  # invalid
    step("0")
    step("2")
    step("3")
    step("1", 200)
    d.run(60, VOICE)
    step("#")
    step("*")
    step("#")
    assert d.kinds()[-1] == Hangup("done")
    ended = [e for e in d.kinds() if isinstance(e, RecordingEnded)]
    assert len(ended) == 1 and ended[0].kind == "greeting" and ended[0].reason == "hash" and ended[0].keep
    assert DeleteGreeting() in d.kinds() and DeleteMessage("m2") in d.kinds()


@pytest.mark.parametrize("pin", ["", None])
def test_empty_pin_means_no_pin(pin: str | None) -> None:
    d = retrieval(pin=pin)
    d.settle()
    assert d.fresh()[0] == "you_have"
