"""Tones (prompts, beep, join/leave, DTMF) as 8 kHz 16-bit PCM, a Goertzel detector, frame levels.

All PCM here is little-endian signed 16-bit at 8 kHz, the layout ``media.g711`` decodes to. The
generators are deterministic (same bytes every run), so tests compare them exactly. Levels are in
dBov: 0 dBov is a full-scale square wave (RMS 32768), so a full-scale sine is about -3 dBov, and
digital silence is reported as ``MIN_DBOV`` (-127, the floor of RFC 6464) rather than minus infinity.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Sequence

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy is optional
    np = None

RATE = 8000
FULL_SCALE = 32768
MIN_DBOV = -127.0
_LITTLE = sys.byteorder == "little"

BEEP_HZ = 1000
BEEP_MS = 400
JOIN_TONES = ((440, 100), (660, 100))  # rising: someone came in
LEAVE_TONES = ((660, 100), (440, 100))  # falling: someone left
DTMF_LOW = {"1": 697, "2": 697, "3": 697, "A": 697, "4": 770, "5": 770, "6": 770, "B": 770}
DTMF_LOW |= {"7": 852, "8": 852, "9": 852, "C": 852, "*": 941, "0": 941, "#": 941, "D": 941}
DTMF_HIGH = {"1": 1209, "4": 1209, "7": 1209, "*": 1209, "2": 1336, "5": 1336, "8": 1336, "0": 1336}
DTMF_HIGH |= {"3": 1477, "6": 1477, "9": 1477, "#": 1477, "A": 1633, "B": 1633, "C": 1633, "D": 1633}


def _pack(samples: Sequence[int]) -> bytes:
    arr = array("h", samples)
    if not _LITTLE:  # pragma: no cover - big-endian hosts
        arr.byteswap()
    return arr.tobytes()


def samples_of(pcm: bytes | bytearray | memoryview) -> array:
    """The int16 samples of little-endian PCM bytes."""
    if len(pcm) % 2:
        raise ValueError("linear PCM must be whole 16-bit samples (even length)")
    arr = array("h", pcm)
    if not _LITTLE:  # pragma: no cover - big-endian hosts
        arr.byteswap()
    return arr


def amplitude_of(dbov: float) -> float:
    """Peak amplitude of a sine whose level is ``dbov`` (RMS = peak / sqrt 2)."""
    return FULL_SCALE * math.sqrt(2) * 10 ** (dbov / 20)


def multi_tone(freqs: Sequence[float], ms: int, dbov: float = -10.0, rate: int = RATE) -> bytes:
    """Sum of sines, each at ``dbov``, starting at phase 0, for ``ms`` milliseconds (clipped to int16)."""
    n = rate * ms // 1000
    amp = amplitude_of(dbov)
    steps = [2 * math.pi * f / rate for f in freqs]
    out = []
    for i in range(n):
        v = round(sum(amp * math.sin(step * i) for step in steps))
        out.append(32767 if v > 32767 else -32768 if v < -32768 else v)
    return _pack(out)


def sine(freq: float, ms: int, dbov: float = -10.0, rate: int = RATE) -> bytes:
    """A sine at ``freq`` Hz for ``ms`` milliseconds at ``dbov``."""
    return multi_tone((freq,), ms, dbov, rate)


def silence(ms: int, rate: int = RATE) -> bytes:
    return bytes(2 * (rate * ms // 1000))


def beep(dbov: float = -10.0) -> bytes:
    """The voicemail 'start speaking now' beep: 1 kHz, 400 ms."""
    return sine(BEEP_HZ, BEEP_MS, dbov)


def _sequence(parts: Sequence[tuple[float, int]], dbov: float) -> bytes:
    return b"".join(sine(f, ms, dbov) for f, ms in parts)


def join_tone(dbov: float = -16.0) -> bytes:
    """Played to a conference room when someone joins (rising two notes)."""
    return _sequence(JOIN_TONES, dbov)


def leave_tone(dbov: float = -16.0) -> bytes:
    """Played to a conference room when someone leaves (falling two notes)."""
    return _sequence(LEAVE_TONES, dbov)


def dtmf(digit: str, ms: int = 100, dbov: float = -10.0) -> bytes:
    """The dual tone of a DTMF key (0-9, *, #, A-D), for tests of in-band detection."""
    key = digit.upper()
    if key not in DTMF_LOW:
        raise ValueError(f"not a DTMF key: {digit!r}")
    return multi_tone((DTMF_LOW[key], DTMF_HIGH[key]), ms, dbov)


def goertzel_power(samples: Sequence[int], freq: float, rate: int = RATE) -> float:
    """|X(f)|² of the block at ``freq`` (any frequency, not only a DFT bin): one pass, no FFT."""
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def goertzel_amplitude(samples: Sequence[int], freq: float, rate: int = RATE) -> float:
    """Estimated peak amplitude of the ``freq`` component (exact for a whole number of cycles)."""
    n = len(samples)
    return 2 * math.sqrt(max(goertzel_power(samples, freq, rate), 0.0)) / n if n else 0.0


def tone_ratio(samples: Sequence[int], freq: float, rate: int = RATE) -> float:
    """Share of the block's energy at ``freq``: about 1 for a pure tone there, about 0 elsewhere."""
    energy = sum(x * x for x in samples)
    if not energy:
        return 0.0
    amp = goertzel_amplitude(samples, freq, rate)
    return (amp * amp / 2) * len(samples) / energy


def frame_energy(pcm: bytes | bytearray | memoryview) -> int:
    """Exact sum of squares of a PCM frame (numpy when present; same integer either way)."""
    if np is not None:
        a = np.frombuffer(pcm, dtype="<i2").astype(np.int64)
        return int(np.dot(a, a))
    return frame_energy_py(pcm)


def frame_energy_py(pcm: bytes | bytearray | memoryview) -> int:
    """Reference for ``frame_energy``."""
    return sum(x * x for x in samples_of(pcm))


def rms(pcm: bytes | bytearray | memoryview) -> float:
    n = len(pcm) // 2
    return math.sqrt(frame_energy(pcm) / n) if n else 0.0


def dbov(pcm: bytes | bytearray | memoryview) -> float:
    """Level of a frame in dBov (``MIN_DBOV`` for digital silence or an empty frame)."""
    level = rms(pcm)
    if level <= 0:
        return MIN_DBOV
    return max(20 * math.log10(level / FULL_SCALE), MIN_DBOV)


def is_silent(pcm: bytes | bytearray | memoryview, threshold_dbov: float = -45.0) -> bool:
    """Below ``threshold_dbov``: what "end the recording on silence" counts frame by frame.

    Compares energies instead of taking a logarithm per frame (the recorder calls this 50 times a
    second per stream)."""
    n = len(pcm) // 2
    if not n:
        return True
    limit = n * (FULL_SCALE * 10 ** (threshold_dbov / 20)) ** 2
    return frame_energy(pcm) < limit
