"""Mailboxes: deposit, list new then saved, heard, delete, counts, greeting, limits; the index
survives restarts and every crash point (WAV without entry, entry without WAV, interrupted recording)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from media import tones, wav
from media.mailbox import INDEX_NAME, DepositRefused, MailboxStore, MessageCounts, Refusal, UnknownMessage

T0 = 1_700_000_000.0


def record(store: MailboxStore, box: str, caller: str, start: float, ms: int = 200) -> Path:
    path = store.recording_path(box, caller, start)
    with wav.WavWriter(path) as w:
        w.write(tones.sine(1000, ms))
    return path


def deposit(store: MailboxStore, box: str, caller: str, start: float, ms: int = 200):
    return store.deposit(box, record(store, box, caller, start, ms), caller, start, ms / 1000)


@pytest.fixture
def store(tmp_path: Path) -> MailboxStore:
    return MailboxStore(tmp_path / "vm", max_messages=3, max_message_seconds=1.0)


def test_empty_box_creates_nothing(store: MailboxStore) -> None:
    assert store.messages("1001") == [] and store.counts("1001") == MessageCounts(0, 0)
    assert store.greeting_path("1001") is None
    assert not store.root.exists()


def test_deposit_list_heard_delete(store: MailboxStore) -> None:
    m1 = deposit(store, "1001", "+33612345678", T0 + 10)
    m2 = deposit(store, "1001", "1002", T0)
    assert m1.path.is_file() and m1.path.parent == store.root / "1001"
    assert [m.id for m in store.messages("1001")] == [m2.id, m1.id]  # oldest first
    assert store.counts("1001") == MessageCounts(2, 0)
    heard = store.mark_heard("1001", m2.id, now=T0 + 100)
    assert not heard.new and heard.heard_at == T0 + 100
    assert store.mark_heard("1001", m2.id, now=T0 + 200) == heard
    assert [(m.id, m.new) for m in store.messages("1001")] == [(m1.id, True), (m2.id, False)]  # new first
    assert store.counts("1001") == MessageCounts(1, 1)
    store.delete("1001", m1.id)
    assert not m1.path.exists() and store.counts("1001") == MessageCounts(0, 1)
    with pytest.raises(UnknownMessage):
        store.delete("1001", m1.id)
    assert store.messages("1002") == []  # boxes are separate


def test_index_survives_restart(store: MailboxStore, tmp_path: Path) -> None:
    m1 = deposit(store, "1001", "+33612345678", T0)
    deposit(store, "1001", "anonymous", T0 + 1)
    store.mark_heard("1001", m1.id, now=T0 + 5)
    again = MailboxStore(tmp_path / "vm", max_messages=3, max_message_seconds=1.0)
    assert again.messages("1001") == store.messages("1001")
    assert again.message("1001", m1.id).caller == "+33612345678"


def test_limits_refuse_cleanly_and_discard_the_recording(store: MailboxStore) -> None:
    long_one = record(store, "1001", "1002", T0, ms=1200)
    with pytest.raises(DepositRefused) as exc:
        store.deposit("1001", long_one, "1002", T0, 1.2)
    assert exc.value.reason is Refusal.TOO_LONG and not long_one.exists()
    for i in range(3):
        deposit(store, "1001", "1002", T0 + i)
    assert not store.can_deposit("1001")
    extra = record(store, "1001", "1003", T0 + 9)
    with pytest.raises(DepositRefused) as exc:
        store.deposit("1001", extra, "1003", T0 + 9, 0.2)
    assert exc.value.reason is Refusal.FULL and not extra.exists()
    assert store.counts("1001") == MessageCounts(3, 0)


def test_same_caller_same_time_gets_distinct_ids(store: MailboxStore) -> None:
    a = deposit(store, "1001", "1002", T0)
    b = deposit(store, "1001", "1002", T0)
    assert a.id != b.id and a.path.is_file() and b.path.is_file()


def test_deposit_from_elsewhere_is_moved_in(store: MailboxStore, tmp_path: Path) -> None:
    outside = tmp_path / "rec.wav"
    wav.write_wav(outside, tones.sine(440, 100))
    m = store.deposit("1001", outside, "sip:bob@example.com", T0, 0.1)
    assert not outside.exists() and m.path.is_file() and m.caller == "sip:bob@example.com"


def test_greeting(store: MailboxStore, tmp_path: Path) -> None:
    g = tmp_path / "g.wav"
    wav.write_wav(g, tones.sine(440, 100))
    path = store.set_greeting("1001", g)
    assert store.greeting_path("1001") == path and store.messages("1001") == []  # not a message
    store.remove_greeting("1001")
    assert store.greeting_path("1001") is None


@pytest.mark.parametrize("box", ["", "../x", ".hidden", "a/b", "x" * 70])
def test_bad_box_names_are_refused(store: MailboxStore, box: str) -> None:
    with pytest.raises(ValueError):
        store.messages(box)


def reopen(store: MailboxStore) -> MailboxStore:
    return MailboxStore(
        store.root, max_messages=store.max_messages, max_message_seconds=store.max_message_seconds
    )


def test_crash_between_wav_and_index_adopts_the_wav(store: MailboxStore) -> None:
    deposit(store, "1001", "1002", T0)
    index = (store.root / "1001" / INDEX_NAME).read_text()
    m2 = deposit(store, "1001", "+33612345678", T0 + 60)
    (store.root / "1001" / INDEX_NAME).write_text(index)  # the second index write never happened
    (store.root / "1001" / ".index-zz").write_text("{")  # nor its rename
    msgs = reopen(store).messages("1001")
    assert [(m.id, m.caller, m.start, m.new) for m in msgs][1] == (m2.id, "+33612345678", T0 + 60, True)
    assert msgs[1].duration == pytest.approx(0.2)
    assert not (store.root / "1001" / ".index-zz").exists()
    assert len(json.loads((store.root / "1001" / INDEX_NAME).read_text())["messages"]) == 2  # repaired


def test_crash_between_unlink_and_index_drops_the_entry(store: MailboxStore) -> None:
    m1 = deposit(store, "1001", "1002", T0)
    m2 = deposit(store, "1001", "1003", T0 + 1)
    m1.path.unlink()  # delete() died after removing the WAV
    again = reopen(store)
    assert [m.id for m in again.messages("1001")] == [m2.id]
    assert again.counts("1001") == MessageCounts(1, 0)


def test_crash_mid_recording_is_recovered_as_new_message(store: MailboxStore) -> None:
    path = store.recording_path("1001", "+33612345678", T0)
    w = wav.WavWriter(path)
    w.write(tones.sine(1000, 300))
    w.flush()  # the process dies: no close, no deposit
    empty = store.recording_path("1001", "1002", T0 + 1)
    wav.WavWriter(empty).flush()  # died right after opening: nothing to keep
    again = reopen(store)
    (msg,) = again.messages("1001")
    assert (msg.caller, msg.start, msg.new) == ("+33612345678", T0, True)
    assert msg.duration == pytest.approx(0.3)
    data, info = wav.read_wav(msg.path)
    assert not info.recovered and data == tones.sine(1000, 300)  # header fixed in place
    assert list((store.root / "1001" / "incoming").iterdir()) == []
    w._fh.close()


def test_damaged_index_is_set_aside_and_rebuilt(store: MailboxStore) -> None:
    m = deposit(store, "1001", "1002", T0)
    (store.root / "1001" / INDEX_NAME).write_text("{not json")
    (store.root / "1001" / "notes.wav").write_bytes(b"foreign")  # not ours: left alone
    (msg,) = reopen(store).messages("1001")
    assert msg.id == m.id and msg.caller == "1002"
    assert (store.root / "1001" / (INDEX_NAME + ".bad")).exists()
    assert (store.root / "1001" / "notes.wav").exists()


def test_constructor_refuses_nonsense_limits(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        MailboxStore(tmp_path, max_messages=0)
    assert MailboxStore.in_state_dir(tmp_path).root == tmp_path / "voicemail"
