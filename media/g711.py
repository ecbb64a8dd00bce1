"""G.711 PCMU (µ-law) and PCMA (A-law): 16-bit linear PCM <-> 8-bit codes, bit-exact.

Behaviour is defined by the ITU-T reference code (G.191 STL, ``ulaw_compress``/``alaw_compress``/
``*_expand``), transcribed below as per-sample functions. They only build lookup tables at import;
every conversion is a table look-up, so the fast paths (``bytes.translate`` and numpy indexing) can
only differ from the reference by a wrong table, which the tests check value by value.

Linear PCM is little-endian signed 16-bit (the WAV and RTP-L16-in-memory layout on every machine we
run on), codes are the RTP payload bytes. Decoding is exact: the code's reconstruction value.

Note on ``audioop``: its A-law and both decoders agree with G.191 everywhere; its µ-law *encoder*
(Sun's g711.c) takes the magnitude of a negative sample as ``-(x >> 2)`` where G.191 takes the one's
complement ``(~x) >> 2``, so for 508 negative inputs sitting just past a decision value it picks the
next larger magnitude. G.191 is the mirror image ``encode(~x) == encode(x) ^ 0x80``; audioop is not.
"""

from __future__ import annotations

import sys
from array import array

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy is optional
    np = None

_LITTLE = sys.byteorder == "little"


def ulaw_compress_sample(x: int) -> int:
    """G.191 ``ulaw_compress`` for one signed 16-bit sample (14 most significant bits used)."""
    absno = ((~x) >> 2) + 33 if x < 0 else (x >> 2) + 33
    absno = min(absno, 0x1FFF)
    i = absno >> 6
    segno = 1
    while i:
        segno += 1
        i >>= 1
    code = ((8 - segno) << 4) | (0xF - ((absno >> segno) & 0xF))
    return code | 0x80 if x >= 0 else code


def ulaw_expand_code(code: int) -> int:
    """G.191 ``ulaw_expand`` for one code: the signed 16-bit reconstruction value."""
    sign = -1 if code < 0x80 else 1
    mantissa = ~code & 0xFF
    exponent = (mantissa >> 4) & 0x7
    step = 4 << (exponent + 1)
    mantissa &= 0xF
    return sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33)


def alaw_compress_sample(x: int) -> int:
    """G.191 ``alaw_compress`` for one signed 16-bit sample (13 most significant bits used)."""
    ix = (~x) >> 4 if x < 0 else x >> 4
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55


def alaw_expand_code(code: int) -> int:
    """G.191 ``alaw_expand`` for one code: the signed 16-bit reconstruction value."""
    ix = (code ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0xF
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 8
    if iexp > 1:
        mant <<= iexp - 1
    return mant if code > 127 else -mant


def _encode_table(compress) -> bytes:
    """Index = the sample's 16 bits read as unsigned (so a little-endian 'H' array indexes it)."""
    return bytes(compress(u - 65536 if u >= 32768 else u) for u in range(65536))


def _decode_tables(expand) -> tuple[tuple[int, ...], bytes, bytes]:
    values = tuple(expand(c) for c in range(256))
    low = bytes(v & 0xFF for v in values)
    high = bytes((v >> 8) & 0xFF for v in values)
    return values, low, high


ULAW_ENCODE = _encode_table(ulaw_compress_sample)
ALAW_ENCODE = _encode_table(alaw_compress_sample)
ULAW_DECODE, _ULAW_LOW, _ULAW_HIGH = _decode_tables(ulaw_expand_code)
ALAW_DECODE, _ALAW_LOW, _ALAW_HIGH = _decode_tables(alaw_expand_code)


def _samples(pcm: bytes | bytearray | memoryview) -> array:
    if len(pcm) % 2:
        raise ValueError("linear PCM must be whole 16-bit samples (even length)")
    arr = array("H", pcm)
    if not _LITTLE:  # pragma: no cover - big-endian hosts
        arr.byteswap()
    return arr


def _encode_py(table: bytes, pcm: bytes | bytearray | memoryview) -> bytes:
    return bytes(map(table.__getitem__, _samples(pcm)))


def _decode_py(low: bytes, high: bytes, codes: bytes | bytearray | memoryview) -> bytes:
    """Two ``translate`` passes (low and high bytes) interleaved by slice assignment: all in C."""
    codes = bytes(codes)
    out = bytearray(2 * len(codes))
    out[0::2] = codes.translate(low)
    out[1::2] = codes.translate(high)
    return bytes(out)


def ulaw_encode_py(pcm: bytes | bytearray | memoryview) -> bytes:
    """PCMU codes of little-endian int16 PCM (pure Python table path)."""
    return _encode_py(ULAW_ENCODE, pcm)


def alaw_encode_py(pcm: bytes | bytearray | memoryview) -> bytes:
    """PCMA codes of little-endian int16 PCM (pure Python table path)."""
    return _encode_py(ALAW_ENCODE, pcm)


def ulaw_decode(codes: bytes | bytearray | memoryview) -> bytes:
    """Little-endian int16 PCM of PCMU codes (translate is faster than numpy at 160 samples)."""
    return _decode_py(_ULAW_LOW, _ULAW_HIGH, codes)


def alaw_decode(codes: bytes | bytearray | memoryview) -> bytes:
    """Little-endian int16 PCM of PCMA codes."""
    return _decode_py(_ALAW_LOW, _ALAW_HIGH, codes)


HAVE_NUMPY = np is not None

if np is not None:
    _ULAW_ENCODE_NP = np.frombuffer(ULAW_ENCODE, dtype=np.uint8)
    _ALAW_ENCODE_NP = np.frombuffer(ALAW_ENCODE, dtype=np.uint8)
    _ULAW_DECODE_NP = np.array(ULAW_DECODE, dtype=np.int16)
    _ALAW_DECODE_NP = np.array(ALAW_DECODE, dtype=np.int16)

    def _encode_np(table, pcm: bytes | bytearray | memoryview) -> bytes:
        if len(pcm) % 2:
            raise ValueError("linear PCM must be whole 16-bit samples (even length)")
        return table[np.frombuffer(pcm, dtype="<u2")].tobytes()

    def ulaw_encode_np(pcm: bytes | bytearray | memoryview) -> bytes:
        """PCMU codes of little-endian int16 PCM (numpy table path)."""
        return _encode_np(_ULAW_ENCODE_NP, pcm)

    def alaw_encode_np(pcm: bytes | bytearray | memoryview) -> bytes:
        """PCMA codes of little-endian int16 PCM (numpy table path)."""
        return _encode_np(_ALAW_ENCODE_NP, pcm)

    def ulaw_encode_array(samples) -> np.ndarray:
        """PCMU codes (uint8 array, any shape) of an int16 array: the mixer's output path."""
        return _ULAW_ENCODE_NP[np.asarray(samples, dtype=np.int16).view(np.uint16)]

    def alaw_encode_array(samples) -> np.ndarray:
        """PCMA codes (uint8 array, any shape) of an int16 array."""
        return _ALAW_ENCODE_NP[np.asarray(samples, dtype=np.int16).view(np.uint16)]

    def ulaw_decode_array(codes) -> np.ndarray:
        """int16 array (same shape) of PCMU codes given as bytes or a uint8 array."""
        if isinstance(codes, bytes | bytearray | memoryview):
            codes = np.frombuffer(codes, dtype=np.uint8)
        return _ULAW_DECODE_NP[codes]

    def alaw_decode_array(codes) -> np.ndarray:
        """int16 array (same shape) of PCMA codes given as bytes or a uint8 array."""
        if isinstance(codes, bytes | bytearray | memoryview):
            codes = np.frombuffer(codes, dtype=np.uint8)
        return _ALAW_DECODE_NP[codes]

    ulaw_encode = ulaw_encode_np
    alaw_encode = alaw_encode_np
else:  # pragma: no cover - numpy is optional
    ulaw_encode = ulaw_encode_py
    alaw_encode = alaw_encode_py


ENCODERS = {"PCMU": ulaw_encode, "PCMA": alaw_encode}
DECODERS = {"PCMU": ulaw_decode, "PCMA": alaw_decode}
