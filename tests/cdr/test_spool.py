"""Spool: durability boundary, replay from the ack, rotation, torn tails, one process per spool."""

from __future__ import annotations

import threading
from pathlib import Path

import msgpack
import pytest

from cdr.metrics import CdrMetrics
from cdr.record import record_from_wire
from cdr.spool import Spool, SpoolError
from tests.cdr.factory import make_record


def keys(payloads: list[bytes]) -> list[str]:
    return [record_from_wire(msgpack.unpackb(p)).call_id for p in payloads]


def opened(path: Path, metrics: CdrMetrics | None = None, **kw: int) -> Spool:
    s = Spool(path, metrics=metrics, **kw)
    s.open()
    return s


def drain(s: Spool, n: int = 1000) -> list[bytes]:
    out: list[bytes] = []
    while batch := s.read_batch(n).payloads:
        out.extend(batch)
    return out


def test_only_flushed_records_are_readable(tmp_path: Path) -> None:
    s = opened(tmp_path)
    for i in range(3):
        s.append(make_record(i))
    assert s.read_batch(10).payloads == [] and s.buffered == 3
    assert s.flush() == 3 and s.buffered == 0
    assert keys(s.read_batch(10).payloads) == [f"call-{i}@sip.example" for i in range(3)]
    s.close()


def test_restart_replays_everything_not_acked(tmp_path: Path) -> None:
    s = opened(tmp_path)
    for i in range(10):
        s.append(make_record(i))
    s.flush()
    first = s.read_batch(4)
    s.ack(first.end)
    assert len(s.read_batch(100).payloads) == 6  # read but never acked
    s.close()
    s2 = opened(tmp_path)
    assert keys(drain(s2)) == [f"call-{i}@sip.example" for i in range(4, 10)]
    s2.close()


def test_close_flushes_and_fully_acked_spool_replays_nothing(tmp_path: Path) -> None:
    s = opened(tmp_path)
    s.append(make_record(1))
    s.close()
    s2 = opened(tmp_path)
    batch = s2.read_batch(10)
    assert len(batch.payloads) == 1
    s2.ack(batch.end)
    s2.close()
    s3 = opened(tmp_path)
    assert drain(s3) == [] and s3.backlog_bytes() == 0
    s3.close()


def test_rotation_reads_across_segments_and_ack_deletes_old_ones(tmp_path: Path, metrics: CdrMetrics) -> None:
    s = opened(tmp_path, metrics, segment_bytes=2000)
    for i in range(100):
        s.append(make_record(i))
        if i % 10 == 9:
            s.flush()
    assert len(list(tmp_path.glob("*.seg"))) > 3
    assert s.backlog_bytes() > 0
    got: list[bytes] = []
    while batch := s.read_batch(7):
        if not batch.payloads:
            break
        got.extend(batch.payloads)
        s.ack(batch.end)
    assert keys(got) == [f"call-{i}@sip.example" for i in range(100)]
    assert len(list(tmp_path.glob("*.seg"))) == 1  # only the active segment is left
    assert s.backlog_bytes() == 0 and metrics.backlog_bytes._value.get() == 0
    s.close()


def test_torn_final_frame_is_detected_and_ignored(tmp_path: Path, metrics: CdrMetrics) -> None:
    s = opened(tmp_path)
    for i in range(5):
        s.append(make_record(i))
    s.close()
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    whole = seg.read_bytes()
    # A crash mid-write: the start of a sixth frame reached the disk, the rest did not.
    s6 = Spool(tmp_path / "other")
    s6.open()
    s6.append(make_record(5))
    s6.close()
    frame6 = sorted((tmp_path / "other").glob("*.seg"))[-1].read_bytes()
    seg.write_bytes(whole + frame6[: len(frame6) // 2])

    s2 = opened(tmp_path, metrics)
    s2.append(make_record(6))
    s2.flush()
    assert keys(drain(s2)) == [f"call-{i}@sip.example" for i in (0, 1, 2, 3, 4, 6)]
    assert metrics.bad_frames._value.get() == 1
    s2.close()


def test_corrupt_frame_skips_rest_of_that_old_segment_only(tmp_path: Path, metrics: CdrMetrics) -> None:
    s = opened(tmp_path)
    for i in range(3):
        s.append(make_record(i))
    s.close()
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0xFF  # last frame's payload damaged
    seg.write_bytes(bytes(data))
    s2 = opened(tmp_path, metrics)
    s2.append(make_record(9))
    s2.flush()
    assert keys(drain(s2)) == ["call-0@sip.example", "call-1@sip.example", "call-9@sip.example"]
    assert metrics.bad_frames._value.get() == 1
    s2.close()


def test_second_process_cannot_open_the_same_spool(tmp_path: Path) -> None:
    s = opened(tmp_path)
    with pytest.raises(SpoolError, match="in use"):
        opened(tmp_path)
    s.close()
    opened(tmp_path).close()


def test_unreadable_ack_file_names_the_file(tmp_path: Path) -> None:
    tmp_path.joinpath("ack").write_text("garbage")
    with pytest.raises(SpoolError, match="ack"):
        opened(tmp_path)


def test_concurrent_appends_and_flushes_lose_nothing(tmp_path: Path) -> None:
    s = opened(tmp_path, segment_bytes=50_000)
    stop = threading.Event()

    def flusher() -> None:
        while not stop.is_set():
            s.flush()

    def producer(base: int) -> None:
        for i in range(1500):
            s.append(make_record(base + i))

    ft = threading.Thread(target=flusher)
    ft.start()
    producers = [threading.Thread(target=producer, args=(k * 10_000,)) for k in range(3)]
    for t in producers:
        t.start()
    for t in producers:
        t.join(timeout=30)
    stop.set()
    ft.join(timeout=30)
    s.flush()
    got = keys(drain(s, 700))
    assert len(got) == 4500 and len(set(got)) == 4500
    s.close()


def test_rejected_payload_is_kept_aside(tmp_path: Path, metrics: CdrMetrics) -> None:
    s = opened(tmp_path, metrics)
    s.reject(b"\x91\x63", reason="test")
    assert tmp_path.joinpath("rejected.frames").stat().st_size > 0
    assert metrics.bad_frames._value.get() == 1
    s.close()


def test_frames_larger_than_a_read_are_delivered(tmp_path: Path) -> None:
    s = opened(tmp_path)
    big = msgpack.packb(bytes(300_000))
    s.append_payload(big)
    s.append(make_record(1))
    s.flush()
    assert s.read_batch(1).payloads == [big]
    assert keys(s.read_batch(1).payloads) == ["call-1@sip.example"]
    s.close()
    s2 = opened(tmp_path)  # and from a closed segment after a restart
    assert s2.read_batch(1).payloads == [big]
    s2.close()


def test_failed_flush_keeps_frames_and_leaves_no_torn_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    s = opened(tmp_path)
    s.append(make_record(1))
    s.flush()
    s.append(make_record(2))
    real_fsync = os.fsync
    calls = {"n": 0}

    def failing_fsync(fd: int) -> None:
        calls["n"] += 1
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        s.flush()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert calls["n"] == 1 and s.buffered == 1  # the frame is still waiting, not lost
    s.append(make_record(3))
    assert s.flush() == 2
    assert keys(drain(s)) == ["call-1@sip.example", "call-2@sip.example", "call-3@sip.example"]
    s.close()
