"""WAV files: written incrementally, closed with the right sizes, readable after a crash."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import pytest

from media import tones
from media import wav as mwav


def test_written_file_is_standard(tmp_path: Path) -> None:
    path = tmp_path / "m.wav"
    pcm = tones.sine(1000, 100)
    with mwav.WavWriter(path) as w:
        for i in range(0, len(pcm), 320):
            w.write(pcm[i : i + 320])
        assert w.duration == pytest.approx(0.1)
    assert path.stat().st_size == 44 + len(pcm)
    with wave.open(str(path), "rb") as r:  # the stdlib agrees
        assert (r.getnchannels(), r.getsampwidth(), r.getframerate()) == (1, 2, 8000)
        assert r.readframes(r.getnframes()) == pcm
    data, info = mwav.read_wav(path)
    assert data == pcm and not info.recovered and info.duration == pytest.approx(0.1)


def test_crash_before_close_is_recovered_from_the_file_size(tmp_path: Path) -> None:
    path = tmp_path / "crash.wav"
    pcm = tones.sine(440, 60)
    w = mwav.WavWriter(path)
    w.write(pcm)
    w.flush()  # the process dies here: close() never runs
    with open(path, "ab") as fh:
        fh.write(b"\x01")  # half a sample, as a torn write would leave
    data, info = mwav.read_wav(path)
    assert data == pcm and info.recovered and info.samples == len(pcm) // 2
    fixed = mwav.repair(path)
    assert not fixed.recovered and path.stat().st_size == 44 + len(pcm)
    with wave.open(str(path), "rb") as r:
        assert r.readframes(r.getnframes()) == pcm
    assert mwav.repair(path) == fixed  # idempotent
    w._fh.close()


def test_header_only_and_truncated_files(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(mwav.header(0))
    assert mwav.read_wav(path)[0] == b""
    path.write_bytes(mwav.header(1000) + b"\x00\x01" * 10)  # says 1000 bytes, holds 20
    data, info = mwav.read_wav(path)
    assert len(data) == 20 and info.recovered


def test_unknown_chunks_are_skipped_and_trailing_ones_kept(tmp_path: Path) -> None:
    pcm = tones.sine(1000, 20)
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, 8000, 16000, 2, 16)
    body = (
        b"WAVE"
        + b"LIST"
        + struct.pack("<I", 3)
        + b"abc\x00"
        + fmt
        + b"data"
        + struct.pack("<I", len(pcm))
        + pcm
    )
    body += b"junk" + struct.pack("<I", 4) + b"1234"
    path = tmp_path / "x.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    data, info = mwav.read_wav(path)
    assert data == pcm and not info.recovered
    assert mwav.repair(path) == info and path.read_bytes().endswith(b"1234")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"RIFX....WAVE",
        mwav.header(0)[:20],
        mwav.header(0).replace(b"\x01\x00\x01\x00", b"\x01\x00\x02\x00"),
    ],
)
def test_not_ours_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(mwav.WavError):
        mwav.inspect(path)


def test_odd_write_is_refused(tmp_path: Path) -> None:
    with mwav.WavWriter(tmp_path / "o.wav") as w, pytest.raises(ValueError):
        w.write(b"\x00")
