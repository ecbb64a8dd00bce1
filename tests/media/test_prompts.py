"""Prompts: the shipped set is the generator's catalogue (8 kHz, levels, margins, size); English
numbers, counts, dates and digits as prompt names; every name any module says exists; the
resampler filters instead of aliasing; the frame player and the menu timer."""

from __future__ import annotations

import ast
import shutil
import struct
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from media import conference, make_prompts, menu, tones, voicemail, wav
from media.app import FRAME_BYTES, SILENT_FRAME
from media.make_prompts import CATALOGUE
from media.prompts import (
    DEFAULT_DIR,
    InputTimer,
    Player,
    PromptSet,
    say_datetime,
    say_digits,
    say_message_counts,
    say_number,
    say_ordinal,
)

BERLIN = ZoneInfo("Europe/Berlin")
SHIPPED = PromptSet.default()


def at(*args: int, tz: ZoneInfo = BERLIN) -> float:
    return datetime(*args, tzinfo=tz).timestamp()


# --- the shipped set -----------------------------------------------------------------------------


def test_shipped_set_is_exactly_the_catalogue() -> None:
    assert SHIPPED.names == set(CATALOGUE)
    assert sorted(p.stem for p in DEFAULT_DIR.glob("*.wav")) == sorted(CATALOGUE)


def test_shipped_prompts_are_8khz_levelled_trimmed_and_small() -> None:
    total = 0
    for path in DEFAULT_DIR.glob("*.wav"):
        pcm, info = wav.read_wav(path)
        total += path.stat().st_size
        assert info.rate == 8000 and not info.recovered, path.name
        x = np.frombuffer(pcm, dtype="<i2")
        assert int(np.max(np.abs(x))) <= make_prompts.PEAK_LIMIT + 1, path.name  # never clips
        loudest = max(
            tones.dbov(pcm[i : i + FRAME_BYTES]) for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES)
        )
        assert -16.5 <= loudest <= -15.5 or int(np.max(np.abs(x))) >= make_prompts.PEAK_LIMIT - 1, path.name
        # ~50 ms of quiet at each end, and speech right after it
        margin = 400
        assert np.max(np.abs(x[:margin])) < 0.01 * np.max(np.abs(x)), path.name
        assert np.max(np.abs(x[-margin:])) < 0.01 * np.max(np.abs(x)), path.name
        assert np.max(np.abs(x[margin : margin + 80])) > 0.01 * np.max(np.abs(x)), path.name
    assert total < 1.55e6


def test_every_prompt_name_a_module_says_is_shipped() -> None:
    for module in (menu, voicemail, conference):
        assert SHIPPED.names >= module.PROMPTS_USED, module.__name__
    # ... and the declared lists are complete: every literal handed to a speaking call is declared
    for module in (menu, voicemail, conference):
        spoken = _spoken_literals(Path(module.__file__))
        assert spoken, module.__name__
        assert spoken <= module.PROMPTS_USED, (module.__name__, spoken - module.PROMPTS_USED)


# call name -> how many leading arguments are not prompt names
_SPEAKING_CALLS = {"_say": 0, "_announce_names": 0, "_bye": 1, "clips": 0, "join": 0, "get": 0}


def _spoken_literals(path: Path) -> set[str]:
    """String literals given to the calls that speak (prompt names) in a module's source."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name not in _SPEAKING_CALLS:
            continue
        if name in ("get", "clips", "join") and "prompts" not in ast.unparse(func):
            continue  # dict.get, str.join: not prompt look-ups
        args = node.args[_SPEAKING_CALLS[name] :]
        for arg in args:
            for sub in ast.walk(arg):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and sub.value:
                    found.add(sub.value)
    return found


def test_every_name_the_speaking_helpers_return_is_shipped() -> None:
    names: set[str] = set()
    for n in range(10_000):
        names.update(say_number(n))
    for n in (99_999, 123_456, 999_999):
        names.update(say_number(n))
    for d in range(1, 32):
        names.update(say_ordinal(d))
    for new in range(4):
        for saved in range(4):
            names.update(say_message_counts(new, saved))
    now = at(2024, 3, 10, 12, 0)
    for hours in range(0, 24 * 400, 7):  # every hour of day, weekday, month, and another year
        names.update(say_datetime(now - hours * 3600 - 60 * (hours % 60), BERLIN, now))
    names.update(say_digits("+0123456789"))
    names.update(say_digits("anonymous"))
    assert names <= SHIPPED.names, names - SHIPPED.names


# --- numbers, counts, dates, digits --------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "said"),
    [
        (0, ["n_0"]),
        (7, ["n_7"]),
        (13, ["n_13"]),
        (19, ["n_19"]),
        (20, ["n_20"]),
        (21, ["n_20", "n_1"]),
        (99, ["n_90", "n_9"]),
        (100, ["n_1", "hundred"]),
        (105, ["n_1", "hundred", "n_5"]),
        (999, ["n_9", "hundred", "n_90", "n_9"]),
        (1000, ["n_1", "thousand"]),
        (1001, ["n_1", "thousand", "n_1"]),
        (2024, ["n_2", "thousand", "n_20", "n_4"]),
        (9999, ["n_9", "thousand", "n_9", "hundred", "n_90", "n_9"]),
        (120_000, ["n_1", "hundred", "n_20", "thousand"]),
    ],
)
def test_say_number(n: int, said: list[str]) -> None:
    assert say_number(n) == said


@pytest.mark.parametrize("n", [-1, 1_000_000])
def test_say_number_out_of_range(n: int) -> None:
    with pytest.raises(ValueError):
        say_number(n)


def test_say_ordinal() -> None:
    assert say_ordinal(1) == ["ord_1"]
    assert say_ordinal(19) == ["ord_19"]
    assert say_ordinal(20) == ["ord_20"]
    assert say_ordinal(23) == ["n_20", "ord_3"]
    assert say_ordinal(30) == ["ord_30"]
    assert say_ordinal(31) == ["n_30", "ord_1"]
    for bad in (0, 32):
        with pytest.raises(ValueError):
            say_ordinal(bad)


@pytest.mark.parametrize(
    ("new", "saved", "said"),
    [
        (0, 0, ["no_messages"]),
        (1, 0, ["you_have", "n_1", "new_message"]),
        (0, 3, ["you_have", "n_3", "saved_messages"]),
        (2, 1, ["you_have", "n_2", "new_messages", "and", "n_1", "saved_message"]),
        (21, 0, ["you_have", "n_20", "n_1", "new_messages"]),
    ],
)
def test_say_message_counts(new: int, saved: int, said: list[str]) -> None:
    assert say_message_counts(new, saved) == said


NOW = at(2024, 3, 14, 15, 0)  # a Thursday afternoon in Berlin


@pytest.mark.parametrize(
    ("when", "said"),
    [
        (at(2024, 3, 14, 9, 5), ["received", "today", "at", "n_9", "oh", "n_5", "a_m"]),
        (at(2024, 3, 14, 0, 0), ["received", "today", "at", "n_12", "a_m"]),
        (at(2024, 3, 14, 12, 30), ["received", "today", "at", "n_12", "n_30", "p_m"]),
        (at(2024, 3, 13, 23, 59), ["received", "yesterday", "at", "n_11", "n_50", "n_9", "p_m"]),
        (at(2024, 3, 11, 8, 15), ["received", "monday", "at", "n_8", "n_15", "a_m"]),
        (at(2024, 3, 8, 18, 0), ["received", "friday", "at", "n_6", "p_m"]),
        (at(2024, 3, 7, 18, 0), ["received", "march", "ord_7", "at", "n_6", "p_m"]),  # a week ago
        (at(2024, 1, 23, 10, 10), ["received", "january", "n_20", "ord_3", "at", "n_10", "n_10", "a_m"]),
        (
            at(2023, 12, 31, 13, 1),
            [
                "received",
                "december",
                "n_30",
                "ord_1",
                "n_2",
                "thousand",
                "n_20",
                "n_3",
                "at",
                "n_1",
                "oh",
                "n_1",
                "p_m",
            ],
        ),
        (
            at(2024, 3, 20, 9, 0),
            ["received", "march", "ord_20", "at", "n_9", "a_m"],
        ),  # future: a clock was wrong
    ],
)
def test_say_datetime(when: float, said: list[str]) -> None:
    assert say_datetime(when, BERLIN, NOW) == said


def test_say_datetime_counts_days_in_the_mailbox_time_zone() -> None:
    now = at(2024, 3, 10, 0, 30)  # just after midnight in Berlin: 23:30 UTC the day before
    msg = at(2024, 3, 9, 23, 45)  # 22:45 UTC, the same UTC day as now
    assert say_datetime(msg, BERLIN, now)[:2] == ["received", "yesterday"]
    assert say_datetime(msg, ZoneInfo("UTC"), now)[:2] == ["received", "today"]
    assert say_datetime(msg, BERLIN, now)[3:] == ["n_11", "n_40", "n_5", "p_m"]  # local time, not UTC


def test_say_digits() -> None:
    assert say_digits("1001") == ["n_1", "n_0", "n_0", "n_1"]
    assert say_digits("+4930") == ["n_4", "n_9", "n_3", "n_0"]
    for not_a_number in ("", "alice", "anonymous", "10 01", "+", "sip:1001@example.com"):
        assert say_digits(not_a_number) == ["unknown_caller"], not_a_number


# --- PromptSet -----------------------------------------------------------------------------------


def test_prompt_set_get_and_join() -> None:
    ps = PromptSet.from_dict({"a": b"\x01\x00", "b": b"\x02\x00\x03\x00"})
    assert ps.get("a") == b"\x01\x00" and "a" in ps and "c" not in ps and len(ps) == 2
    assert ps.join(["b", "a"]) == b"\x02\x00\x03\x00\x01\x00"
    with pytest.raises(KeyError, match="'missing'"):
        ps.get("missing")
    with pytest.raises(KeyError, match="'nope'"):
        ps.clips(["a", "nope"])
    with pytest.raises(ValueError, match="whole 16-bit"):
        PromptSet.from_dict({"odd": b"\x01"})


def test_prompt_set_load(tmp_path: Path) -> None:
    wav.write_wav(tmp_path / "hello.wav", tones.sine(440, 100))
    wav.write_wav(tmp_path / "bye.wav", tones.sine(660, 60))
    (tmp_path / "notes.txt").write_text("not a prompt")
    ps = PromptSet.load(tmp_path)
    assert ps.names == {"hello", "bye"}
    assert ps.get("hello") == tones.sine(440, 100)
    wav.write_wav(tmp_path / "wideband.wav", tones.sine(440, 100), rate=16000)
    with pytest.raises(ValueError, match="16000 Hz"):
        PromptSet.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        PromptSet.load(tmp_path / "nothing-here")


def test_default_set_is_loaded_once() -> None:
    assert PromptSet.default() is PromptSet.default()


# --- signal processing of the generator ----------------------------------------------------------


def _sine(freq: float, rate: int, seconds: float, amp: float = 10000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def _amplitude(x: np.ndarray, freq: float) -> float:
    mid = x[400:-400]  # away from the filter's edge effects
    return tones.goertzel_amplitude([int(v) for v in mid], freq)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_resample_keeps_the_voice_band(freq: float) -> None:
    y = make_prompts.resample(_sine(freq, 22050, 0.5), 22050)
    assert len(y) == 4000
    assert _amplitude(y, freq) == pytest.approx(10000, rel=0.06)


@pytest.mark.parametrize(("freq", "alias"), [(5000.0, 3000.0), (7000.0, 1000.0), (4500.0, 3500.0)])
def test_resample_filters_what_would_fold_back(freq: float, alias: float) -> None:
    x = _sine(freq, 22050, 0.5)
    y = make_prompts.resample(x, 22050)
    assert _amplitude(y, alias) < 10000 * 10 ** (-40 / 20)  # at least 40 dB down
    naive = x[(np.arange(4000) * 22050 // 8000)]  # picking samples folds the tone to ``alias``
    assert _amplitude(naive, alias) > 5000


def test_trim_keeps_50_ms_at_each_end_and_pads_when_short() -> None:
    speech = _sine(500, 8000, 0.2)  # sample 0 is sin(0) = 0: the first loud sample is the second
    x = np.concatenate([np.zeros(2400), speech, np.zeros(4000)])
    y = make_prompts.trim(x)
    loud = np.flatnonzero(np.abs(y) > 100)
    assert loud[0] == 400 and len(y) - 1 - loud[-1] == 400  # exactly 50 ms each side
    assert np.array_equal(y[400 : 400 + 1599], speech[1:])
    tight = make_prompts.trim(speech)  # no quiet to keep: zeros are added
    loud = np.flatnonzero(np.abs(tight) > 100)
    assert loud[0] == 400 and len(tight) - 1 - loud[-1] == 400
    assert len(make_prompts.trim(np.zeros(50))) == 800  # all quiet: just the two margins


def test_normalise_sets_the_loudest_frame_and_never_clips() -> None:
    quiet = np.concatenate([_sine(1000, 8000, 0.2, amp=300.0), _sine(1000, 8000, 0.2, amp=30.0)])
    y = make_prompts.normalise(quiet)
    assert y.dtype == np.int16
    assert tones.dbov(y.astype("<i2").tobytes()[:FRAME_BYTES]) == pytest.approx(-16.0, abs=0.1)
    spiky = np.zeros(1600)
    spiky[::160] = 1000.0  # a click train: frame level low, peaks high
    z = make_prompts.normalise(spiky)
    assert int(np.max(np.abs(z))) <= make_prompts.PEAK_LIMIT + 1


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_generator_writes_the_prompts_it_is_asked_for(tmp_path: Path) -> None:
    assert make_prompts.main(["--out", str(tmp_path), "--only", "n_1", "goodbye"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["goodbye.wav", "n_1.wav"]
    assert (tmp_path / "n_1.wav").read_bytes() == (DEFAULT_DIR / "n_1.wav").read_bytes()  # deterministic
    assert make_prompts.main(["--out", str(tmp_path), "--only", "no_such_prompt"]) == 2


# --- Player and InputTimer -----------------------------------------------------------------------


def frame_of(value: int) -> bytes:
    return struct.pack("<160h", *[value] * 160)


def test_player_plays_back_to_back_pads_and_reports_marks_with_the_last_frame() -> None:
    p = Player()
    assert not p.busy and p.next_frame() == (SILENT_FRAME, ())
    p.play(frame_of(1) + frame_of(2)[:100], mark="first")
    p.play(frame_of(3), mark="second")
    assert p.busy
    assert p.next_frame() == (frame_of(1), ())
    padded, marks = p.next_frame()
    assert padded == frame_of(2)[:100] + bytes(FRAME_BYTES - 100) and marks == ("first",)
    assert p.next_frame() == (frame_of(3), ("second",))
    assert not p.busy


def test_player_stop_drops_clips_and_their_marks() -> None:
    p = Player()
    p.play(frame_of(1), frame_of(2), mark="m")
    assert p.next_frame() == (frame_of(1), ())
    p.stop()
    assert p.next_frame() == (SILENT_FRAME, ())


def test_player_reports_the_mark_of_an_empty_clip() -> None:
    p = Player()
    p.play(b"", mark="empty")
    p.play(frame_of(5))
    assert p.next_frame() == (frame_of(5), ("empty",))


def test_input_timer_repeats_then_gives_up() -> None:
    t = InputTimer(timeout=5.0, repeats=2)
    assert t.check(100.0) is None  # not waiting
    t.start(0.0)
    assert t.check(4.98) is None
    assert t.check(250 * 0.02) is InputTimer.REPEAT  # 5.0 exactly, as a float sum of ticks
    t.start(10.0)
    t.key()  # someone pressed a key: the count starts over
    t.start(20.0)
    assert t.check(25.0) is InputTimer.REPEAT
    t.start(30.0)
    assert t.check(35.0) is InputTimer.REPEAT
    t.start(40.0)
    assert t.check(44.99) is None
    assert t.check(45.0) is InputTimer.GIVE_UP
