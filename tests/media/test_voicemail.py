"""Leaving a message: greeting (skippable), beep, recording with trailing silence held back and
dropped, the ends ('#', silence, max, hang-up) at their exact limits, the minimum length, a full
mailbox; and the tick rules the adapter relies on."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from media import tones
from media.app import FRAME_BYTES, SILENT_FRAME, AppEvent, Hangup, RecordingEnded, RecordingStarted, Tick
from media.prompts import PromptSet
from media.voicemail import Deposit, Recorder, default_greeting

GREETING = tones.sine(400, 100)  # 5 frames
BEEP = tones.beep()  # 1 kHz, 400 ms: 20 frames
GOODBYE = tones.sine(600, 60)  # 3 frames
VOICE = tones.sine(1000, 20, -20)  # the caller speaking: one frame of 1 kHz
OTHER_VOICE = tones.sine(700, 20, -20)  # 20 ms holds 14 whole cycles: a clean 700 Hz frame


def has(pcm: bytes, freq: float) -> bool:
    """The frame is (almost only) a tone at ``freq``."""
    return tones.tone_ratio(tones.samples_of(pcm), freq) > 0.95


def level_at(pcm: bytes, freq: float) -> float:
    """Amplitude of ``freq`` in ``pcm`` (as a share of a -20 dBov sine's amplitude)."""
    return tones.goertzel_amplitude(tones.samples_of(pcm), freq) / tones.amplitude_of(-20)


@dataclass
class Driver:
    """Runs an application the way the adapter does: a tick every 20 ms, keys between ticks."""

    app: Deposit
    k: int = 0
    out: list[bytes] = field(default_factory=list)
    recorded: bytearray = field(default_factory=bytearray)
    events: list[tuple[int, AppEvent]] = field(default_factory=list)
    recording: bool = False

    @property
    def now(self) -> float:
        return 100.0 + self.k * 0.02

    def tick(self, frame: bytes | None = None) -> Tick:
        t = self.app.tick(frame, self.now)
        assert len(t.out) == FRAME_BYTES
        kinds = {type(e) for e in t.events}
        # the tick rules: no record in a tick that starts or ends a recording; records only inside one
        assert t.record is None or not kinds & {RecordingStarted, RecordingEnded}
        assert t.record is None or (self.recording and len(t.record) % FRAME_BYTES == 0)
        for e in t.events:
            self.recording = isinstance(e, RecordingStarted) or (
                self.recording and not isinstance(e, RecordingEnded)
            )
            self.events.append((self.k, e))
        if t.record is not None:
            self.recorded += t.record
        self.out.append(t.out)
        self.k += 1
        return t

    def run(self, n: int, frame: bytes | None = None) -> None:
        for _ in range(n):
            self.tick(frame)

    def key(self, digit: str) -> None:
        self.app.on_digit(digit, self.now)

    def hangup(self) -> tuple[AppEvent, ...]:
        events = self.app.on_hangup(self.now)
        self.events += [(self.k, e) for e in events]
        return events

    def kinds(self) -> list[AppEvent]:
        return [e for _, e in self.events]

    def until_recording(self) -> None:
        for _ in range(1000):
            self.tick()
            if any(isinstance(e, RecordingStarted) for e in self.kinds()):
                return
        raise AssertionError("the recording never started")


def deposit(**kw) -> Driver:
    kw.setdefault("goodbye", GOODBYE)
    return Driver(Deposit([GREETING], BEEP, **kw))


def test_greeting_beep_record_hash_goodbye_hangup() -> None:
    d = deposit()
    d.run(25)
    assert all(has(f, 400) for f in d.out[:5])  # the greeting
    assert all(tones.tone_ratio(tones.samples_of(f), 1000) > 0.99 for f in d.out[5:25])  # the beep
    assert d.events == [(24, RecordingStarted("message"))]  # with the last beep frame
    d.run(100, VOICE)
    d.key("#")
    d.run(6)
    assert d.kinds() == [
        RecordingStarted("message"),
        RecordingEnded("message", "hash", 2.0, True),
        Hangup("done"),
    ]
    assert len(d.recorded) == 100 * FRAME_BYTES
    assert level_at(bytes(d.recorded), 1000) == pytest.approx(1.0, rel=0.01)
    assert all(has(f, 600) for f in d.out[125:128])  # goodbye; the hang-up comes with its last frame
    assert d.events[1][0] == 125 and d.events[2][0] == 127
    assert d.app.done and d.app.ended == RecordingEnded("message", "hash", 2.0, True)
    d.run(3, VOICE)
    assert len(d.events) == 3 and len(d.recorded) == 100 * FRAME_BYTES  # nothing after the end


@pytest.mark.parametrize("key", ["#", "*"])
def test_hash_or_star_during_the_greeting_skips_to_the_beep(key: str) -> None:
    d = deposit()
    d.run(2)
    d.key(key)
    d.run(20)
    assert all(tones.tone_ratio(tones.samples_of(f), 1000) > 0.99 for f in d.out[2:22])
    assert d.events == [(21, RecordingStarted("message"))]


def test_other_keys_do_not_skip_the_greeting() -> None:
    d = deposit()
    d.run(2)
    for key in "0123456789":
        d.key(key)
    d.run(3)
    assert all(has(f, 400) for f in d.out[:5])


def test_keys_during_the_beep_and_recording_other_than_hash_do_nothing() -> None:
    d = deposit()
    d.run(10)
    d.key("#")  # during the beep: the beep is not skipped again, nothing ends
    d.until_recording()
    assert d.k == 25
    d.run(10, VOICE)
    d.key("*")
    d.key("1")
    d.run(10, VOICE)
    assert len(d.recorded) == 20 * FRAME_BYTES and d.kinds() == [RecordingStarted("message")]


def test_missing_frames_record_silence_so_time_stays_right() -> None:
    d = deposit()
    d.until_recording()
    d.run(10, VOICE)
    d.run(10, None)
    d.run(10, OTHER_VOICE)
    d.key("#")
    d.tick()
    rec = bytes(d.recorded)
    assert len(rec) == 30 * FRAME_BYTES
    assert rec[10 * FRAME_BYTES : 20 * FRAME_BYTES] == SILENT_FRAME * 10
    assert level_at(rec[20 * FRAME_BYTES :], 700) > 0.99 and level_at(rec[20 * FRAME_BYTES :], 1000) < 0.01
    assert d.kinds()[-1] == RecordingEnded("message", "hash", 0.6, False)


def test_silence_one_frame_short_of_the_limit_is_kept_when_speech_resumes() -> None:
    d = deposit(silence_seconds=5.0)
    d.until_recording()
    d.run(50, VOICE)
    d.run(249, None)  # 4.98 s
    assert len(d.recorded) == 50 * FRAME_BYTES  # held back so far
    d.tick(VOICE)
    assert len(d.recorded) == 300 * FRAME_BYTES  # released with the speech that ended it
    assert bytes(d.recorded[50 * FRAME_BYTES : 299 * FRAME_BYTES]) == SILENT_FRAME * 249
    assert d.kinds() == [RecordingStarted("message")]


def test_silence_exactly_at_the_limit_ends_and_is_not_recorded() -> None:
    d = deposit(silence_seconds=5.0)
    d.until_recording()
    start = d.k
    d.run(50, VOICE)
    d.run(249, SILENT_FRAME)
    assert d.kinds() == [RecordingStarted("message")]
    d.tick(SILENT_FRAME)  # the 250th silent frame: 5.00 s
    assert d.events[-1] == (start + 299, RecordingEnded("message", "silence", 1.0, True))
    assert len(d.recorded) == 50 * FRAME_BYTES
    assert level_at(bytes(d.recorded), 1000) == pytest.approx(1.0, rel=0.01)


def test_level_threshold_decides_what_is_silence() -> None:
    quiet = tones.sine(1000, 20, -44)  # just above -45 dBov: sound
    quieter = tones.sine(1000, 20, -46)  # just below: silence
    d = deposit(silence_seconds=1.0)
    d.until_recording()
    d.run(60, quiet)
    assert len(d.recorded) == 60 * FRAME_BYTES
    d.run(49, quieter)
    d.tick(quieter)
    assert d.kinds()[-1] == RecordingEnded("message", "silence", 1.2, True)
    assert len(d.recorded) == 60 * FRAME_BYTES


def test_caller_who_never_speaks_leaves_nothing() -> None:
    d = deposit(silence_seconds=5.0)
    d.until_recording()
    d.run(250, None)
    assert d.kinds()[-1] == RecordingEnded("message", "silence", 0.0, False)
    assert d.recorded == b""


def test_max_length_exactly() -> None:
    d = deposit(max_seconds=2.0)
    d.until_recording()
    start = d.k
    d.run(100, VOICE)  # 2.00 s: all of it recorded
    assert len(d.recorded) == 100 * FRAME_BYTES and d.kinds() == [RecordingStarted("message")]
    d.tick(VOICE)  # the 101st frame is not recorded: the recording ends instead
    assert d.events[-1] == (start + 100, RecordingEnded("message", "max", 2.0, True))
    assert len(d.recorded) == 100 * FRAME_BYTES
    d.run(4)
    assert d.kinds()[-1] == Hangup("done")


def test_max_length_counts_held_silence_and_drops_it() -> None:
    d = deposit(max_seconds=2.0, silence_seconds=5.0)
    d.until_recording()
    d.run(60, VOICE)
    d.run(40, None)
    d.tick(VOICE)
    assert d.kinds()[-1] == RecordingEnded("message", "max", 1.2, True)
    assert len(d.recorded) == 60 * FRAME_BYTES


@pytest.mark.parametrize(("frames", "keep"), [(49, False), (50, True)])
def test_minimum_length(frames: int, keep: bool) -> None:
    d = deposit(min_seconds=1.0)
    d.until_recording()
    d.run(frames, VOICE)
    d.run(30, None)  # trailing silence does not count towards the minimum
    d.key("#")
    d.tick()
    assert d.kinds()[-1] == RecordingEnded("message", "hash", frames / 50, keep)


def test_hangup_while_recording_ends_it_without_a_hangup_event() -> None:
    d = deposit()
    d.until_recording()
    d.run(75, VOICE)
    d.run(10, None)
    assert d.hangup() == (RecordingEnded("message", "hangup", 1.5, True),)
    d.run(3, VOICE)
    assert d.kinds() == [RecordingStarted("message"), RecordingEnded("message", "hangup", 1.5, True)]
    assert len(d.recorded) == 75 * FRAME_BYTES and d.app.done


def test_hash_then_hangup_before_the_next_tick_reports_the_hash_once() -> None:
    d = deposit()
    d.until_recording()
    d.run(60, VOICE)
    d.key("#")
    assert d.hangup() == (RecordingEnded("message", "hash", 1.2, True),)
    d.run(3)
    assert [type(e) for e in d.kinds()] == [RecordingStarted, RecordingEnded]


@pytest.mark.parametrize("ticks", [0, 3, 12, 24])
def test_hangup_before_recording_gives_no_recording_events(ticks: int) -> None:
    d = deposit()
    d.run(ticks)
    assert d.hangup() == ()
    d.run(40, VOICE)
    assert d.events == [] and d.recorded == b""


def test_without_goodbye_clip_the_hangup_comes_with_the_end() -> None:
    d = Driver(Deposit([GREETING], BEEP))
    d.until_recording()
    d.run(60, VOICE)
    d.key("#")
    d.tick()
    assert d.events[-2:] == [
        (d.k - 1, RecordingEnded("message", "hash", 1.2, True)),
        (d.k - 1, Hangup("done")),
    ]


def test_full_mailbox_plays_its_prompt_and_hangs_up_without_recording() -> None:
    full = tones.sine(500, 100)
    d = Driver(Deposit([GREETING], BEEP, full=True, full_prompt=full))
    d.key("#")
    d.run(8, VOICE)
    assert all(has(f, 500) for f in d.out[:5])
    assert d.events == [(4, Hangup("full"))]
    assert d.recorded == b""


def test_greeting_clips_play_in_order_and_an_empty_greeting_goes_straight_to_the_beep() -> None:
    d = Driver(Deposit([tones.sine(400, 40), tones.sine(500, 40)], BEEP))
    d.run(4)
    assert [has(f, 400) for f in d.out] == [True, True, False, False]
    assert [has(f, 500) for f in d.out] == [False, False, True, True]
    d = Driver(Deposit([], BEEP))
    d.run(21)
    assert tones.tone_ratio(tones.samples_of(d.out[1]), 1000) > 0.99
    assert d.events == [(20, RecordingStarted("message"))]


def test_recorder_rejects_a_non_positive_maximum() -> None:
    with pytest.raises(ValueError):
        Recorder("message", max_seconds=0)


def test_without_silence_limit_only_hash_max_or_hangup_end_it() -> None:
    d = deposit(silence_seconds=None, max_seconds=30.0)
    d.until_recording()
    d.run(50, VOICE)
    d.run(1449, None)
    assert d.kinds() == [RecordingStarted("message")]
    d.run(2, None)
    assert d.kinds()[-1] == RecordingEnded("message", "max", 1.0, True)


# --- with the shipped prompts --------------------------------------------------------------------

SHIPPED = PromptSet.default()


def played(d: Driver, n: int) -> bytes:
    return b"".join(d.out[:n])


def test_default_greeting_names_the_mailbox() -> None:
    clips = default_greeting(SHIPPED, "1001")
    expected = SHIPPED.clips(["mailbox_of", "n_1", "n_0", "n_0", "n_1", "is_not_available"])
    assert list(clips) == expected
    assert list(default_greeting(SHIPPED)) == SHIPPED.clips(["person_calling", "is_not_available"])
    assert list(default_greeting(SHIPPED, "alice")) == SHIPPED.clips(["person_calling", "is_not_available"])


def test_with_prompts_plays_the_default_greeting_then_the_beep() -> None:
    d = Driver(Deposit.with_prompts(SHIPPED, mailbox="2002"))
    d.until_recording()
    clips = default_greeting(SHIPPED, "2002")
    pcm = b"".join(c + bytes(-len(c) % FRAME_BYTES) for c in clips)  # each clip padded to whole frames
    assert played(d, len(pcm) // FRAME_BYTES) == pcm
    assert b"".join(d.out[-20:]) == tones.beep()


def test_with_prompts_own_greeting_and_full_box() -> None:
    own = tones.sine(450, 200)
    d = Driver(Deposit.with_prompts(SHIPPED, greeting=own, max_seconds=3.0))
    d.until_recording()
    assert played(d, 10) == own
    d.run(250, VOICE)  # 3 s, then 'goodbye'
    assert d.kinds()[-2:] == [RecordingEnded("message", "max", 3.0, True), Hangup("done")]
    full = Driver(Deposit.with_prompts(SHIPPED, full=True))
    full.run(400)
    prompt = SHIPPED.join(["mailbox_full", "goodbye"])
    assert played(full, len(prompt) // FRAME_BYTES) == prompt[: len(prompt) // FRAME_BYTES * FRAME_BYTES]
    assert full.kinds() == [Hangup("full")]
