"""8 kHz mono 16-bit PCM WAV: written incrementally, read back even after a crash.

Own code, not the stdlib ``wave``: (1) ``wave``'s writer seeks back and rewrites the header on every
``writeframes`` call whose size differs from the one announced, three extra system calls per 20 ms
frame for each of hundreds of recordings, where we write the sizes once at ``close``; (2) ``wave``'s
reader believes the header, so a recording interrupted by a crash (sizes still 0) reads as empty,
where ours recovers the length from the file size; (3) the format is one fixed 44-byte header.

A file is: ``RIFF`` size ``WAVE``, ``fmt `` (16 bytes: PCM, 1 channel, rate, 16 bits), ``data`` size,
samples. ``WavWriter`` writes the header with both sizes 0, appends samples through Python's buffer,
and on ``close`` fixes the sizes (and fsyncs, so a mailbox indexes only durable messages).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

RATE = 8000
HEADER_SIZE = 44
_PCM = 1
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


class WavError(ValueError):
    """Not a WAV file we can read (not RIFF/WAVE, not 16-bit mono PCM, no data chunk)."""


def header(data_size: int, rate: int = RATE) -> bytes:
    """The canonical 44-byte header of a mono 16-bit PCM file holding ``data_size`` bytes."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_size,
        b"WAVE",
        b"fmt ",
        16,
        _PCM,
        1,
        rate,
        rate * 2,
        2,
        16,
        b"data",
        data_size,
    )


class WavWriter:
    """Append-only writer: ``write`` frames as they come, ``close`` fixes the header.

    Until ``close`` the header says 0 bytes; ``read_wav`` then takes the data up to the end of the
    file (whole samples), so a crash loses at most what was still in the write buffer (``flush``
    bounds that when it matters)."""

    def __init__(self, path: str | os.PathLike[str], rate: int = RATE) -> None:
        self.path = Path(path)
        self.rate = rate
        self.data_size = 0
        self._fh = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        self._fh.write(header(0, rate))

    def write(self, pcm: bytes | bytearray | memoryview) -> None:
        """Append little-endian int16 samples."""
        if len(pcm) % 2:
            raise ValueError("linear PCM must be whole 16-bit samples (even length)")
        self._fh.write(pcm)
        self.data_size += len(pcm)

    @property
    def samples(self) -> int:
        return self.data_size // 2

    @property
    def duration(self) -> float:
        """Seconds written so far (what the recorder compares with the maximum message length)."""
        return self.samples / self.rate

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def flush(self) -> None:
        self._fh.flush()

    def close(self, fsync: bool = True) -> None:
        """Fix the RIFF and data sizes, then (by default) make the file durable. Idempotent."""
        if self._fh.closed:
            return
        try:
            self._fh.seek(4)
            self._fh.write(struct.pack("<I", 36 + self.data_size))
            self._fh.seek(40)
            self._fh.write(struct.pack("<I", self.data_size))
            self._fh.flush()
            if fsync:
                os.fsync(self._fh.fileno())
        finally:
            self._fh.close()

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class WavInfo:
    """Where the samples are in a file, and whether the header said so (``recovered``: it did not)."""

    rate: int
    data_offset: int
    data_size: int
    recovered: bool

    @property
    def samples(self) -> int:
        return self.data_size // 2

    @property
    def duration(self) -> float:
        return self.samples / self.rate


def inspect(path: str | os.PathLike[str]) -> WavInfo:
    """Read the chunks of a mono 16-bit PCM WAV (any chunk order, unknown chunks skipped).

    A data size of 0 or 0xFFFFFFFF (never fixed, or a streaming writer) or running past the end of
    the file (truncated) is replaced by what the file holds, rounded down to whole samples."""
    with open(path, "rb") as fh:
        file_size = os.fstat(fh.fileno()).st_size
        riff = fh.read(12)
        if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
            raise WavError(f"{path}: not a RIFF/WAVE file")
        rate = None
        pos = 12
        while pos + 8 <= file_size:
            fh.seek(pos)
            chunk_id, size = struct.unpack("<4sI", fh.read(8))
            body = pos + 8
            if chunk_id == b"fmt ":
                fmt = fh.read(16)
                if len(fmt) < 16:
                    raise WavError(f"{path}: truncated fmt chunk")
                tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt)
                if tag != _PCM or channels != 1 or bits != 16:
                    raise WavError(f"{path}: not mono 16-bit PCM (format {tag}, {channels} ch, {bits} bits)")
            elif chunk_id == b"data":
                if rate is None:
                    raise WavError(f"{path}: data chunk before fmt chunk")
                available = file_size - body
                recovered = size in _UNKNOWN_SIZES or size > available
                data_size = available if recovered else size
                return WavInfo(rate, body, data_size - data_size % 2, recovered)
            pos = body + size + (size & 1)  # chunks are word-aligned
        raise WavError(f"{path}: no data chunk")


def read_wav(path: str | os.PathLike[str]) -> tuple[bytes, WavInfo]:
    """The samples (little-endian int16 bytes) and where they came from."""
    info = inspect(path)
    with open(path, "rb") as fh:
        fh.seek(info.data_offset)
        return fh.read(info.data_size), info


def repair(path: str | os.PathLike[str]) -> WavInfo:
    """Fix the sizes of a file left by a crash, in place, so any player reads it; a no-op otherwise.

    The data runs to the end of such a file; a trailing odd byte (half a sample) is cut off."""
    info = inspect(path)
    if not info.recovered:
        return info
    with open(path, "r+b") as fh:
        fh.truncate(info.data_offset + info.data_size)
        fh.seek(4)
        fh.write(struct.pack("<I", info.data_offset + info.data_size - 8))
        fh.seek(info.data_offset - 4)
        fh.write(struct.pack("<I", info.data_size))
        fh.flush()
        os.fsync(fh.fileno())
    return WavInfo(info.rate, info.data_offset, info.data_size, recovered=False)


def write_wav(path: str | os.PathLike[str], pcm: bytes, rate: int = RATE) -> None:
    """A whole file at once (prompts, greetings, tests)."""
    with WavWriter(path, rate) as w:
        w.write(pcm)
