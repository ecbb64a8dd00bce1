"""Conference rooms: each hears the others and not themselves (tones told apart by Goertzel), mute,
join/leave tones to the others, private prompts, the 20-seat limit; the room table; the seat
application (fixed room or PIN, mute key, 'only person', full room, one frame of delay)."""

from __future__ import annotations

import struct

import pytest

from media import mixer, tones
from media.app import FRAME_BYTES, SILENT_FRAME, Hangup
from media.conference import MAX_PARTICIPANTS, Room, RoomEntry, Rooms
from media.make_prompts import CATALOGUE
from media.prompts import PromptSet

# 20 ms holds a whole number of cycles of each: clean Goertzel readings frame by frame
A_HZ, B_HZ, C_HZ = 500, 1000, 1500
LEVEL = -20.0


def tone(freq: float, dbov: float = LEVEL) -> bytes:
    return tones.sine(freq, 20, dbov)


def amp(frame: bytes, freq: float) -> float:
    """Amplitude of ``freq`` in the frame, relative to a ``LEVEL`` sine (1.0: that tone is there)."""
    return tones.goertzel_amplitude(tones.samples_of(frame), freq) / tones.amplitude_of(LEVEL)


def hears(frame: bytes, freq: float) -> bool:
    return amp(frame, freq) > 0.95


def silent_at(frame: bytes, freq: float) -> bool:
    return amp(frame, freq) < 0.01


def room_with(*pids: str, **kw) -> Room:
    room = Room("r", join_tone=b"", leave_tone=b"", **kw)
    for pid in pids:
        assert room.join(pid, 0.0)
    return room


# --- Room ----------------------------------------------------------------------------------------


def test_each_hears_the_other_two_and_not_themselves() -> None:
    room = room_with("a", "b", "c")
    out = room.tick({"a": tone(A_HZ), "b": tone(B_HZ), "c": tone(C_HZ)})
    assert hears(out["a"], B_HZ) and hears(out["a"], C_HZ) and silent_at(out["a"], A_HZ)
    assert hears(out["b"], A_HZ) and hears(out["b"], C_HZ) and silent_at(out["b"], B_HZ)
    assert hears(out["c"], A_HZ) and hears(out["c"], B_HZ) and silent_at(out["c"], C_HZ)


def test_room_mix_is_the_mixer_exactly() -> None:
    room = room_with("a", "b", "c")
    frames = [tone(A_HZ, -3), tone(B_HZ, -3), None]
    out = room.tick(dict(zip("abc", frames, strict=True)))
    assert [out[p] for p in "abc"] == mixer.mix_reference(frames, [False] * 3)


def test_muted_contributes_nothing_but_still_hears() -> None:
    room = room_with("a", "b", "c")
    assert room.toggle_mute("b") is True and room.is_muted("b")
    out = room.tick({"a": tone(A_HZ), "b": tone(B_HZ), "c": tone(C_HZ)})
    assert silent_at(out["a"], B_HZ) and silent_at(out["c"], B_HZ)
    assert hears(out["b"], A_HZ) and hears(out["b"], C_HZ)
    assert room.toggle_mute("b") is False
    out = room.tick({"a": tone(A_HZ), "b": tone(B_HZ), "c": tone(C_HZ)})
    assert hears(out["a"], B_HZ)


def test_missing_frames_are_silence_and_strangers_are_ignored() -> None:
    room = room_with("a", "b")
    out = room.tick({"a": tone(A_HZ), "stranger": tone(C_HZ)})
    assert out.keys() == {"a", "b"}
    assert out["a"] == SILENT_FRAME and hears(out["b"], A_HZ) and silent_at(out["b"], C_HZ)


def test_join_tone_to_everyone_already_there_leave_tone_to_those_who_stay() -> None:
    room = Room("r")  # the default tones: 440 then 660 Hz to join, 660 then 440 to leave
    room.join("a", 0.0)
    room.join("b", 0.0)  # a hears the join tone, b (the newcomer) does not
    outs = [room.tick({}) for _ in range(10)]
    a = b"".join(o["a"] for o in outs)
    assert a == tones.join_tone()
    assert all(o["b"] == SILENT_FRAME for o in outs)
    assert room.tick({}) == {"a": SILENT_FRAME, "b": SILENT_FRAME}  # played once
    room.join("c", 1.0)
    room.leave("b", 2.0)  # a hears both tones at once, c hears the leave tone
    outs = [room.tick({}) for _ in range(10)]
    assert b"".join(o["c"] for o in outs) == tones.leave_tone()
    first = outs[0]["a"]
    assert tones.goertzel_amplitude(tones.samples_of(first), 440) > 0.9 * tones.amplitude_of(-16)
    assert tones.goertzel_amplitude(tones.samples_of(first), 660) > 0.9 * tones.amplitude_of(-16)


def test_first_participant_hears_no_tone_and_a_room_empties() -> None:
    room = Room("r")
    room.join("a", 0.0)
    assert room.tick({}) == {"a": SILENT_FRAME}
    room.leave("a", 1.0)
    room.leave("a", 1.0)  # twice: no-op
    assert room.empty and len(room) == 0 and room.tick({}) == {}


def test_twenty_participants_and_the_21st_refused() -> None:
    room = Room("r", join_tone=b"")  # 19 join tones at once would drown the check below
    for i in range(MAX_PARTICIPANTS):
        assert room.join(f"p{i}", 0.0)
    assert len(room) == 20 and not room.join("p20", 0.0) and "p20" not in room
    frames = {f"p{i}": tone(A_HZ, -40) for i in range(20)}
    out = room.tick(frames)
    assert len(out) == 20 and amp(out["p0"], A_HZ) == pytest.approx(19 * 10 ** (-20 / 20), rel=0.01)
    room.leave("p7", 0.0)
    assert room.join("p20", 0.0) and room.participants[-1] == "p20"
    assert room.join("p0", 0.0) and len(room) == 20  # already in: a no-op


def test_a_smaller_room() -> None:
    room = Room("r", max_participants=2)
    assert room.join("a", 0.0) and room.join("b", 0.0) and not room.join("c", 0.0)
    with pytest.raises(ValueError):
        Room("r", max_participants=0)


def test_private_prompt_only_to_its_listener_over_the_mix() -> None:
    room = room_with("a", "b")
    room.play_to("a", tones.sine(C_HZ, 40, LEVEL))
    outs = [room.tick({"a": tone(A_HZ), "b": tone(B_HZ)}) for _ in range(3)]
    assert all(hears(o["a"], C_HZ) and hears(o["a"], B_HZ) for o in outs[:2])
    assert silent_at(outs[2]["a"], C_HZ) and hears(outs[2]["a"], B_HZ)  # over after 40 ms
    assert all(silent_at(o["b"], C_HZ) for o in outs)


def test_a_new_private_prompt_cuts_the_previous_one() -> None:
    room = room_with("a")
    room.play_to("a", tones.sine(A_HZ, 100, LEVEL))
    room.tick({})
    room.play_to("a", tones.sine(B_HZ, 20, LEVEL))
    out = room.tick({})["a"]
    assert hears(out, B_HZ) and silent_at(out, A_HZ)
    assert room.tick({})["a"] == SILENT_FRAME


def test_overlays_saturate_instead_of_wrapping() -> None:
    room = room_with("a", "b")
    loud = struct.pack("<160h", *[30000] * 160)
    room.play_to("a", loud)
    out = room.tick({"b": loud})["a"]
    assert out == struct.pack("<160h", *[32767] * 160)


def test_submit_then_tick_then_heard() -> None:
    room = room_with("a", "b")
    assert room.heard("a") == SILENT_FRAME  # nothing mixed yet
    room.submit("a", tone(A_HZ))
    room.submit("b", tone(B_HZ))
    room.submit("nobody", tone(C_HZ))
    room.tick()
    assert hears(room.heard("b"), A_HZ) and hears(room.heard("a"), B_HZ)
    room.tick()  # nothing submitted since: silence from both
    assert room.heard("a") == SILENT_FRAME and room.heard("gone") == SILENT_FRAME


# --- the room table ------------------------------------------------------------------------------


def test_rooms_make_on_first_use_and_drop_when_empty() -> None:
    rooms = Rooms()
    r = rooms("acme")
    assert rooms("acme") is r and "acme" in rooms and len(rooms) == 1
    r.join("a", 0.0)
    rooms.tick()
    assert rooms.get("acme") is r
    r.leave("a", 0.0)
    rooms.tick()
    assert rooms.get("acme") is None and len(rooms) == 0 and list(rooms) == []


# --- RoomEntry -----------------------------------------------------------------------------------

NAMES = sorted(CATALOGUE)
LABELS = {name: 100 * (i + 1) for i, name in enumerate(NAMES)}
WHAT = {v: n for n, v in LABELS.items()}
PROMPTS = PromptSet.from_dict({n: struct.pack("<160h", *[v] * 160) for n, v in LABELS.items()})


def said(frames: list[bytes]) -> list[str]:
    """Prompt labels in the frames (each label prompt is one constant frame)."""
    out = []
    for f in frames:
        first = struct.unpack_from("<h", f)[0]
        if f == struct.pack("<160h", *[first] * 160) and first in WHAT:
            out.append(WHAT[first])
    return out


class Cycle:
    """The adapter's 20 ms loop: every seat ticks, then every room once."""

    def __init__(self, rooms: Rooms, *entries: RoomEntry) -> None:
        self.rooms = rooms
        self.entries = list(entries)
        self.k = 0
        self.heard: dict[object, list[bytes]] = {e.pid: [] for e in entries}
        self.events: dict[object, list] = {e.pid: [] for e in entries}

    def run(self, n: int = 1, frames: dict | None = None) -> None:
        for _ in range(n):
            for e in self.entries:
                if e.done:
                    continue
                t = e.tick((frames or {}).get(e.pid), self.k * 0.02)
                assert len(t.out) == FRAME_BYTES and t.record is None
                self.heard[e.pid].append(t.out)
                self.events[e.pid] += t.events
            self.rooms.tick()
            self.k += 1

    def key(self, pid: object, digits: str) -> None:
        entry = next(e for e in self.entries if e.pid == pid)
        for d in digits:
            entry.on_digit(d, self.k * 0.02)


def quiet_rooms() -> Rooms:
    return Rooms(lambda name: Room(name, join_tone=b"", leave_tone=b""))


def test_fixed_room_one_frame_of_delay_and_welcome_prompts() -> None:
    rooms = quiet_rooms()
    a = RoomEntry("a", rooms, PROMPTS, room="acme")
    b = RoomEntry("b", rooms, PROMPTS, room="acme")
    cyc = Cycle(rooms, a, b)
    cyc.run(1)
    assert cyc.heard["a"] == [SILENT_FRAME] and cyc.heard["b"] == [SILENT_FRAME]  # nothing mixed yet
    cyc.run(2)
    assert said(cyc.heard["a"]) == ["conference_joined", "only_person"]  # alone when a joined
    assert said(cyc.heard["b"]) == ["conference_joined"]
    cyc.run(1, {"a": tone(A_HZ)})  # cycle 3: a speaks
    assert silent_at(cyc.heard["b"][3], A_HZ)
    cyc.run(1, {"b": tone(B_HZ)})  # cycle 4: b hears what a said in cycle 3
    assert hears(cyc.heard["b"][4], A_HZ) and silent_at(cyc.heard["a"][4], A_HZ)
    cyc.run(1)
    assert hears(cyc.heard["a"][5], B_HZ) and silent_at(cyc.heard["b"][5], A_HZ)
    assert cyc.events == {"a": [], "b": []}


def test_mute_key_with_private_prompts() -> None:
    rooms = quiet_rooms()
    a = RoomEntry("a", rooms, PROMPTS, room="acme")
    b = RoomEntry("b", rooms, PROMPTS, room="acme")
    cyc = Cycle(rooms, a, b)
    cyc.run(4)
    cyc.key("a", "1")
    assert a.muted
    cyc.run(3, {"a": tone(A_HZ)})
    assert said(cyc.heard["a"][4:]) == ["muted"] and said(cyc.heard["a"][5:6]) == ["muted"]  # next cycle
    assert said(cyc.heard["b"][4:]) == []
    assert all(silent_at(f, A_HZ) for f in cyc.heard["b"][4:])
    cyc.key("a", "1")
    assert not a.muted
    cyc.run(3, {"a": tone(A_HZ)})
    assert said(cyc.heard["a"][7:]) == ["unmuted"]
    assert silent_at(cyc.heard["b"][7], A_HZ) and hears(cyc.heard["b"][8], A_HZ)  # a frame late
    cyc.key("b", "2#*0")  # other keys do nothing seated
    assert not b.muted


def test_hangup_leaves_the_room_the_others_hear_the_leave_tone_and_the_room_goes() -> None:
    rooms = Rooms()
    a = RoomEntry("a", rooms, PROMPTS, room="acme")
    b = RoomEntry("b", rooms, PROMPTS, room="acme")
    cyc = Cycle(rooms, a, b)
    cyc.run(30)  # the join tone and the welcome are over
    assert a.on_hangup(cyc.k * 0.02) == ()
    cyc.run(11)
    assert cyc.heard["b"][-11] == SILENT_FRAME
    assert b"".join(cyc.heard["b"][-10:]) == tones.leave_tone()  # from the next cycle
    assert rooms.get("acme") is not None and len(rooms("acme")) == 1
    b.on_hangup(cyc.k * 0.02)
    cyc.run(1)
    assert rooms.get("acme") is None


def test_pin_entry_joins_the_mapped_room() -> None:
    rooms = quiet_rooms()
    pins = {"1234": "sales", "999": "support"}
    a = RoomEntry("a", rooms, PROMPTS, pins=pins)
    b = RoomEntry("b", rooms, PROMPTS, pins=pins)
    c = RoomEntry("c", rooms, PROMPTS, pins=pins)
    cyc = Cycle(rooms, a, b, c)
    cyc.run(1)
    assert said(cyc.heard["a"]) == ["enter_conference_pin"] and len(rooms) == 0
    cyc.key("a", "1234#")
    cyc.key("b", "999#")
    cyc.key("c", "1234#")
    cyc.run(4, {"a": tone(A_HZ), "b": tone(B_HZ), "c": tone(C_HZ)})
    assert rooms.get("sales") is not None and rooms("sales").participants == ("a", "c")
    assert rooms("support").participants == ("b",)
    assert hears(cyc.heard["c"][-1], A_HZ) and silent_at(cyc.heard["c"][-1], B_HZ)
    assert silent_at(cyc.heard["b"][-1], A_HZ) and silent_at(cyc.heard["b"][-1], C_HZ)


def test_three_wrong_pins_hang_up() -> None:
    rooms = quiet_rooms()
    a = RoomEntry("a", rooms, PROMPTS, pins={"1234": "sales"})
    cyc = Cycle(rooms, a)
    cyc.run(1)
    for wrong in ("1", "12345", ""):
        cyc.key("a", wrong + "#")
        cyc.run(3)
    cyc.run(2)
    assert said(cyc.heard["a"]) == [
        "enter_conference_pin",
        "invalid_pin",
        "enter_conference_pin",
        "invalid_pin",
        "enter_conference_pin",
        "invalid_pin",
        "goodbye",
    ]
    assert cyc.events["a"] == [Hangup("pin")] and a.done and len(rooms) == 0


def test_two_wrong_pins_then_the_right_one_and_star_clears() -> None:
    rooms = quiet_rooms()
    a = RoomEntry("a", rooms, PROMPTS, pins={"1234": "sales"})
    cyc = Cycle(rooms, a)
    cyc.key("a", "1#2#99*1234#")
    cyc.run(2)
    assert rooms("sales").participants == ("a",) and cyc.events["a"] == []


def test_pin_prompt_repeats_and_an_abandoned_call_ends() -> None:
    rooms = quiet_rooms()
    a = RoomEntry("a", rooms, PROMPTS, pins={"1234": "sales"})
    cyc = Cycle(rooms, a)
    cyc.run(1 + 250)  # the prompt (1 frame), then 5 s of silence
    assert said(cyc.heard["a"]) == ["enter_conference_pin"]
    cyc.run(1)
    assert said(cyc.heard["a"]) == ["enter_conference_pin"] * 2
    cyc.run(2 * 251 + 251 + 2)
    assert said(cyc.heard["a"]) == ["enter_conference_pin"] * 4 + ["goodbye"]
    assert cyc.events["a"] == [Hangup("timeout")]


def test_digits_then_a_pause_count_as_hash() -> None:
    rooms = quiet_rooms()
    a = RoomEntry("a", rooms, PROMPTS, pins={"1234": "sales"})
    cyc = Cycle(rooms, a)
    cyc.run(1)
    cyc.key("a", "1234")
    cyc.run(250)
    assert rooms.get("sales") is None
    cyc.run(1)
    assert rooms("sales").participants == ("a",)


def test_full_room_says_so_and_hangs_up() -> None:
    rooms = Rooms(lambda name: Room(name, max_participants=1))
    a = RoomEntry("a", rooms, PROMPTS, room="acme")
    b = RoomEntry("b", rooms, PROMPTS, room="acme")
    cyc = Cycle(rooms, a, b)
    cyc.run(4)
    assert said(cyc.heard["b"]) == ["conference_full", "goodbye"]
    assert cyc.events["b"] == [Hangup("full")] and b.done
    assert rooms("acme").participants == ("a",)
    assert b.on_hangup(cyc.k * 0.02) == () and rooms("acme").participants == ("a",)


def test_room_or_pins_but_not_both_nor_neither() -> None:
    with pytest.raises(ValueError):
        RoomEntry("a", Rooms(), PROMPTS)
    with pytest.raises(ValueError):
        RoomEntry("a", Rooms(), PROMPTS, room="x", pins={"1": "x"})


def test_shipped_prompts_for_a_conference() -> None:
    shipped = PromptSet.default()
    rooms = Rooms()
    a = RoomEntry("a", rooms, shipped, pins={"42": "r"})
    b = RoomEntry("b", rooms, shipped, room="r")
    cyc = Cycle(rooms, a, b)
    cyc.key("a", "7#")
    cyc.run(200)
    cyc.key("a", "42#")
    cyc.run(10)
    cyc.key("a", "1")
    cyc.key("a", "1")
    cyc.run(100)
    assert rooms("r").participants == ("b", "a")
    expected = shipped.join(["conference_joined", "only_person"])
    got = b"".join(cyc.heard["b"][1 : 1 + len(expected) // FRAME_BYTES])
    assert got == expected[: len(got)]  # b was alone, heard its welcome (nobody else yet)
