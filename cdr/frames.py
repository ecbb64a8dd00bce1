"""Spool framing (pure): magic, length and CRC-32 before each msgpack payload.

A frame is ``<magic:u16 LE><length:u32 LE><crc32:u32 LE><payload>``. The magic and a non-zero
length make a zero-filled tail (what a crash can leave) read as invalid rather than as an empty
frame; the CRC catches a frame whose bytes did not all reach the disk.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import StrEnum

MAGIC = 0xCD5F
HEADER = struct.Struct("<HII")
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 1 << 20


def encode_frame(payload: bytes) -> bytes:
    if not payload or len(payload) > MAX_PAYLOAD:
        raise ValueError(f"frame payload must be 1..{MAX_PAYLOAD} bytes, got {len(payload)}")
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


class FrameStop(StrEnum):
    """Why decoding stopped."""

    END = "end"  # consumed every byte given
    LIMIT = "limit"  # reached max_frames
    INCOMPLETE = "incomplete"  # the bytes end inside a frame (torn tail, or read more)
    CORRUPT = "corrupt"  # bad magic, length or CRC at `consumed`


@dataclass(frozen=True, slots=True)
class Decoded:
    payloads: list[bytes]
    consumed: int  # bytes of whole valid frames, from the start of the buffer
    stop: FrameStop


def decode_frames(buf: bytes | memoryview, max_frames: int | None = None) -> Decoded:
    """Split `buf` into payloads of whole valid frames, stopping at the first problem."""
    view = memoryview(buf)
    size = len(view)
    pos = 0
    out: list[bytes] = []
    unpack = HEADER.unpack_from
    crc32 = zlib.crc32
    while True:
        if max_frames is not None and len(out) >= max_frames:
            return Decoded(out, pos, FrameStop.LIMIT if pos < size else FrameStop.END)
        if pos == size:
            return Decoded(out, pos, FrameStop.END)
        if size - pos < HEADER_SIZE:
            return Decoded(out, pos, FrameStop.INCOMPLETE)
        magic, length, crc = unpack(view, pos)
        if magic != MAGIC or length == 0 or length > MAX_PAYLOAD:
            return Decoded(out, pos, FrameStop.CORRUPT)
        end = pos + HEADER_SIZE + length
        if end > size:
            return Decoded(out, pos, FrameStop.INCOMPLETE)
        payload = bytes(view[pos + HEADER_SIZE : end])
        if crc32(payload) != crc:
            return Decoded(out, pos, FrameStop.CORRUPT)
        out.append(payload)
        pos = end
