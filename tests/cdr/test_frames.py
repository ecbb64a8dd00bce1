"""Spool framing: whole frames decode, torn and corrupt tails are detected where they start."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdr.frames import HEADER_SIZE, FrameStop, decode_frames, encode_frame

payloads = st.lists(st.binary(min_size=1, max_size=64), max_size=20)


@given(payloads)
def test_frames_round_trip(items: list[bytes]) -> None:
    data = b"".join(encode_frame(p) for p in items)
    dec = decode_frames(data)
    assert dec.payloads == items and dec.consumed == len(data) and dec.stop is FrameStop.END


@given(payloads.filter(bool), st.data())
def test_any_truncation_yields_the_whole_frames_before_it(items: list[bytes], data: st.DataObject) -> None:
    frames = [encode_frame(p) for p in items]
    buf = b"".join(frames)
    cut = data.draw(st.integers(min_value=0, max_value=len(buf) - 1))
    dec = decode_frames(buf[:cut])
    whole = 0
    n = 0
    for f in frames:
        if whole + len(f) > cut:
            break
        whole += len(f)
        n += 1
    assert dec.payloads == items[:n] and dec.consumed == whole
    assert dec.stop is (FrameStop.END if whole == cut else FrameStop.INCOMPLETE)


def test_flipped_payload_byte_is_corrupt_at_that_frame() -> None:
    a, b = encode_frame(b"first"), bytearray(encode_frame(b"second"))
    b[HEADER_SIZE + 2] ^= 0xFF
    dec = decode_frames(a + bytes(b))
    assert dec.payloads == [b"first"] and dec.consumed == len(a) and dec.stop is FrameStop.CORRUPT


def test_zero_filled_tail_is_corrupt_not_an_empty_frame() -> None:
    a = encode_frame(b"x")
    dec = decode_frames(a + bytes(64))
    assert dec.payloads == [b"x"] and dec.stop is FrameStop.CORRUPT


def test_limit_stops_early() -> None:
    data = b"".join(encode_frame(bytes([i + 1])) for i in range(5))
    dec = decode_frames(data, max_frames=2)
    assert len(dec.payloads) == 2 and dec.stop is FrameStop.LIMIT


def test_empty_and_oversized_payloads_are_refused() -> None:
    with pytest.raises(ValueError):
        encode_frame(b"")
    with pytest.raises(ValueError):
        encode_frame(bytes((1 << 20) + 1))
