"""G.711 is bit-exact: every input against audioop (Python 3.11) and the G.191 symmetry; fast paths
against the table path; a 1 kHz tone survives PCMU and PCMA (Goertzel)."""

from __future__ import annotations

import struct
import warnings

import pytest

from media import g711, tones

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    audioop = pytest.importorskip("audioop")  # the oracle only: gone in 3.13, product code never uses it

ALL_SAMPLES = list(range(-32768, 32768))
ALL_PCM = struct.pack("<65536h", *ALL_SAMPLES)
ALL_CODES = bytes(range(256))


def test_alaw_encode_equals_audioop_on_every_sample() -> None:
    assert g711.alaw_encode_py(ALL_PCM) == audioop.lin2alaw(ALL_PCM, 2)


def test_ulaw_encode_equals_audioop_except_its_documented_negative_offset() -> None:
    """audioop (Sun's g711.c) takes -(x >> 2) for a negative x where G.191 takes (~x) >> 2, one
    14-bit step more: so audioop(x) == G.191(x - 4) for every negative x, and equal for x >= 0."""
    ours = g711.ulaw_encode_py(ALL_PCM)
    theirs = audioop.lin2ulaw(ALL_PCM, 2)
    shifted = [ours[max(x - 4, -32768) + 32768] if x < 0 else ours[x + 32768] for x in ALL_SAMPLES]
    assert bytes(shifted) == theirs
    differing = [x for x in ALL_SAMPLES if ours[x + 32768] != theirs[x + 32768]]
    assert len(differing) == 508 and all(x < 0 for x in differing)
    assert g711.ulaw_compress_sample(-1) == 0x7F  # negative zero in G.191; audioop says 0x7E
    assert theirs[-1 + 32768] == 0x7E


@pytest.mark.parametrize("compress", [g711.ulaw_compress_sample, g711.alaw_compress_sample])
def test_g191_encoders_are_mirror_images(compress) -> None:
    for x in range(0, 32768):
        assert compress(~x) == compress(x) ^ 0x80


def test_decoders_equal_audioop_on_every_code() -> None:
    assert g711.ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert g711.alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def test_known_values_of_the_standard() -> None:
    assert g711.ULAW_DECODE[0xFF] == 0 and g711.ULAW_DECODE[0x7F] == 0
    assert g711.ULAW_DECODE[0x80] == 32124 and g711.ULAW_DECODE[0x00] == -32124
    assert g711.ALAW_DECODE[0xD5] == 8 and g711.ALAW_DECODE[0x55] == -8
    assert g711.ALAW_DECODE[0xAA] == 32256 and g711.ALAW_DECODE[0x2A] == -32256
    assert g711.ulaw_encode(struct.pack("<h", 0)) == b"\xff"
    assert g711.alaw_encode(struct.pack("<h", 0)) == b"\xd5"


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_decode_then_encode_is_identity_on_codes(law: str) -> None:
    encode, decode = getattr(g711, f"{law}_encode"), getattr(g711, f"{law}_decode")
    again = encode(decode(ALL_CODES))
    if law == "ulaw":  # 0x7F (negative zero) decodes to 0, which encodes as positive zero
        assert again == ALL_CODES.replace(b"\x7f", b"\xff")
    else:
        assert again == ALL_CODES


@pytest.mark.skipif(not g711.HAVE_NUMPY, reason="numpy not installed")
def test_numpy_paths_equal_the_table_path() -> None:
    import numpy as np

    assert g711.ulaw_encode_np(ALL_PCM) == g711.ulaw_encode_py(ALL_PCM)
    assert g711.alaw_encode_np(ALL_PCM) == g711.alaw_encode_py(ALL_PCM)
    samples = np.arange(-32768, 32768, dtype=np.int16)
    assert g711.ulaw_encode_array(samples).tobytes() == g711.ulaw_encode_py(ALL_PCM)
    assert g711.alaw_encode_array(samples.reshape(256, 256)).tobytes() == g711.alaw_encode_py(ALL_PCM)
    assert g711.ulaw_decode_array(ALL_CODES).astype("<i2").tobytes() == g711.ulaw_decode(ALL_CODES)
    assert g711.alaw_decode_array(np.frombuffer(ALL_CODES, np.uint8)).tobytes() == g711.alaw_decode(ALL_CODES)


def test_odd_length_pcm_is_refused() -> None:
    for encode in (g711.ulaw_encode, g711.alaw_encode, g711.ulaw_encode_py):
        with pytest.raises(ValueError):
            encode(b"\x00\x00\x00")


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_1khz_tone_survives_the_codec(codec: str) -> None:
    pcm = tones.sine(1000, 200, dbov=-10)
    decoded = g711.DECODERS[codec](g711.ENCODERS[codec](pcm))
    samples = tones.samples_of(decoded)
    for block in range(0, len(samples), 160):  # every 20 ms frame
        frame = samples[block : block + 160]
        assert tones.tone_ratio(frame, 1000) > 0.99
        assert tones.tone_ratio(frame, 2000) < 0.001
        assert tones.goertzel_amplitude(frame, 1000) == pytest.approx(tones.amplitude_of(-10), rel=0.02)
