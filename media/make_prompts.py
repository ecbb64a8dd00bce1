"""Generate the voice prompts (``media/prompts/en/*.wav``) with espeak-ng.

``python -m media.make_prompts [--voice en-us] [--out DIR] [--speed WPM] [--only NAME ...]``

``CATALOGUE`` (name -> text) is the single source of the prompt names: ``media.prompts`` speaks
numbers and dates with these names, the applications name their phrases with them, and a test
checks that the shipped set holds exactly this catalogue. Each prompt is synthesised by espeak-ng
(22050 Hz), resampled to 8 kHz through a Kaiser-windowed sinc low-pass (plain decimation would fold
everything above 4 kHz back into the voice band as hiss), trimmed to ``MARGIN_MS`` of silence at
each end, and normalised so its loudest 20 ms frame sits at ``TARGET_DBOV`` (speech peaks then stay
well under full scale: no clipping). Same espeak-ng, same files: the output is deterministic.

The signal processing (``resample``, ``trim``, ``normalise``) is pure numpy and tested; only
``synthesise`` runs a program.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from media import wav
from media.prompts import MONTHS, WEEKDAYS

RATE = 8000
MARGIN_MS = 50
TARGET_DBOV = -16.0
PEAK_LIMIT = 0.9 * 32767  # never scale a sample past this, whatever the frame level says
DEFAULT_OUT = Path(__file__).resolve().parent / "prompts" / "en"
DEFAULT_VOICE = "en-us"
DEFAULT_SPEED = 190  # words per minute (espeak-ng default 175 drawls single words; keeps the set small)

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = {20: "twenty", 30: "thirty", 40: "forty", 50: "fifty", 60: "sixty", 70: "seventy", 80: "eighty"}
_TENS |= {90: "ninety"}
_ORDINAL_ONES = [
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
    "eleventh",
    "twelfth",
    "thirteenth",
    "fourteenth",
    "fifteenth",
    "sixteenth",
    "seventeenth",
    "eighteenth",
    "nineteenth",
]


def _ordinal_text(n: int) -> str:
    if n < 20:
        return _ORDINAL_ONES[n - 1]
    return _TENS[n][:-1] + "ieth"  # twentieth, thirtieth


def _catalogue() -> dict[str, str]:
    words: dict[str, str] = {f"n_{i}": w for i, w in enumerate(_ONES)}
    words |= {f"n_{n}": w for n, w in _TENS.items()}
    words |= {"hundred": "hundred", "thousand": "thousand", "oh": "oh"}
    words |= {f"ord_{d}": _ordinal_text(d) for d in (*range(1, 20), 20, 30)}  # 21st: n_20 ord_1
    words |= {m: m for m in MONTHS} | {d: d for d in WEEKDAYS}
    words |= {"today": "today", "yesterday": "yesterday", "received": "received", "at": "at"}
    words |= {"a_m": "A M", "p_m": "P M"}
    phrases = {
        # message counts, envelope
        "you_have": "you have",
        "new_message": "new message",
        "new_messages": "new messages",
        "saved_message": "saved message",
        "saved_messages": "saved messages",
        "and": "and",
        "no_messages": "you have no messages.",
        "message_from": "message from",
        "unknown_caller": "an unknown caller",
        # deposit
        "person_calling": "The person you are calling",  # + is_not_available: the default greeting
        "mailbox_of": "The mailbox of",
        "is_not_available": "is not available. Please leave a message after the tone.",
        "mailbox_full": "This mailbox is full.",
        "goodbye": "Goodbye.",
        # the owner's menu
        "enter_pin": "Enter your pin, then press pound.",
        "incorrect_pin": "Incorrect pin.",
        "main_menu": "Press one for your messages, zero for mailbox options, pound to exit.",
        "message_options": (
            "Press five to replay, seven to delete, nine to save, six for the next message, pound for the main menu."
        ),
        "message_deleted": "Message deleted.",
        "message_saved": "Message saved.",
        "no_more_messages": "No more messages.",
        "mailbox_options": (
            "Press one to record your greeting, two to hear it, three to delete it, star to go back."
        ),
        "record_greeting": "Record your greeting after the tone, then press pound.",
        "greeting_saved": "Greeting saved.",
        "greeting_not_saved": "Too short, not saved.",
        "greeting_deleted": "Greeting deleted.",
        "no_greeting": "You have not recorded a greeting.",
        "invalid_choice": "Invalid choice.",
        # conference
        "enter_conference_pin": "Enter the conference pin, then press pound.",
        "invalid_pin": "That pin is not valid.",
        "conference_joined": "You are now in the conference.",
        "only_person": "You are the only person in this conference.",
        "conference_full": "This conference is full.",
        "muted": "You are muted.",
        "unmuted": "You are unmuted.",
    }
    return words | phrases


CATALOGUE: dict[str, str] = _catalogue()


# --- signal processing ---------------------------------------------------------------------------


def lowpass_kernel(offsets: np.ndarray, cutoff: float, half_width: int, beta: float = 7.0) -> np.ndarray:
    """Kaiser-windowed ideal low-pass at ``offsets`` (in input samples, any real value):
    ``2 fc sinc(2 fc t)``, ``cutoff`` in cycles per input sample, zero beyond ``half_width``."""
    inside = np.abs(offsets) < half_width
    ratio = np.where(inside, offsets / half_width, 0.0)
    window = np.where(inside, np.i0(beta * np.sqrt(1.0 - ratio * ratio)) / np.i0(beta), 0.0)
    return 2.0 * cutoff * np.sinc(2.0 * cutoff * offsets) * window


def resample(
    samples: np.ndarray,
    src_rate: int,
    dst_rate: int = RATE,
    passband_hz: float | None = None,
    half_width: int = 64,
) -> np.ndarray:
    """Band-limited resampling (float in, float out) by direct evaluation of a windowed sinc at each
    output instant. The cutoff sits below the lower Nyquist frequency so the transition band ends
    near it: what cannot be represented at ``dst_rate`` is filtered, not folded back."""
    x = np.asarray(samples, dtype=np.float64)
    if src_rate == dst_rate:
        return x.copy()
    nyquist = min(src_rate, dst_rate) / 2
    cutoff_hz = passband_hz if passband_hz is not None else 0.9 * nyquist
    cutoff = cutoff_hz / src_rate
    n_out = len(x) * dst_rate // src_rate
    if n_out <= 0:
        return np.zeros(0)
    t = np.arange(n_out) * (src_rate / dst_rate)  # output instants in input samples
    taps = np.arange(-half_width + 1, half_width + 1)
    padded = np.concatenate([np.zeros(half_width), x, np.zeros(half_width + 1)])
    out = np.empty(n_out)
    step = 4096  # bounded memory: (step, 2*half_width) at a time
    for lo in range(0, n_out, step):
        tt = t[lo : lo + step]
        base = np.floor(tt).astype(np.int64)
        idx = base[:, None] + taps[None, :]
        h = lowpass_kernel(tt[:, None] - idx, cutoff, half_width)  # taps sum to ~1: unit passband gain
        out[lo : lo + step] = (padded[idx + half_width] * h).sum(axis=1)
    return out


def trim(
    samples: np.ndarray, rate: int = RATE, margin_ms: int = MARGIN_MS, floor_db: float = -40.0
) -> np.ndarray:
    """Cut leading and trailing silence (below ``floor_db`` relative to the peak), keeping exactly
    ``margin_ms`` of quiet at each end (zero padding if the synthesiser left less)."""
    x = np.asarray(samples, dtype=np.float64)
    margin = rate * margin_ms // 1000
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak == 0.0:
        return np.zeros(2 * margin)
    loud = np.flatnonzero(np.abs(x) > peak * 10 ** (floor_db / 20))
    first, last = int(loud[0]), int(loud[-1])
    start, stop = first - margin, last + 1 + margin
    head = np.zeros(max(0, -start))
    tail = np.zeros(max(0, stop - len(x)))
    return np.concatenate([head, x[max(0, start) : min(len(x), stop)], tail])


def frame_dbov(samples: np.ndarray, frame: int = 160) -> np.ndarray:
    """Level of each whole 20 ms frame in dBov (0 dBov = full-scale square, as ``media.tones``)."""
    n = len(samples) // frame
    if n == 0:
        return np.full(1, -127.0)
    blocks = np.asarray(samples[: n * frame], dtype=np.float64).reshape(n, frame)
    rms = np.sqrt(np.mean(blocks * blocks, axis=1))
    with np.errstate(divide="ignore"):
        return np.maximum(20 * np.log10(rms / 32768.0), -127.0)


def normalise(samples: np.ndarray, target_dbov: float = TARGET_DBOV) -> np.ndarray:
    """Scale so the loudest 20 ms frame is at ``target_dbov``, unless a sample would then pass
    ``PEAK_LIMIT``; return int16 values."""
    x = np.asarray(samples, dtype=np.float64)
    loudest = float(np.max(frame_dbov(x)))
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak == 0.0:
        return np.zeros(len(x), dtype=np.int16)
    gain = min(10 ** ((target_dbov - loudest) / 20), PEAK_LIMIT / peak)
    return np.clip(np.round(x * gain), -32768, 32767).astype(np.int16)


def process(samples: np.ndarray, src_rate: int) -> bytes:
    """Synthesiser output -> the shipped 8 kHz PCM (little-endian int16 bytes)."""
    pcm = normalise(trim(resample(samples, src_rate)))
    return pcm.astype("<i2").tobytes()


# --- synthesis -----------------------------------------------------------------------------------


def synthesise(
    text: str, voice: str = DEFAULT_VOICE, speed: int = DEFAULT_SPEED, espeak: str = "espeak-ng"
) -> bytes:
    """One prompt through espeak-ng (written to a temporary WAV, read with ``media.wav``)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.wav"
        subprocess.run(
            [espeak, "-v", voice, "-s", str(speed), "-w", str(path), "--", text],
            check=True,
            capture_output=True,
        )
        raw, info = wav.read_wav(path)
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    return process(samples, info.rate)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--voice", default=DEFAULT_VOICE)
    parser.add_argument("--speed", type=int, default=DEFAULT_SPEED, help="words per minute")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--espeak", default="espeak-ng", help="the espeak-ng program")
    parser.add_argument("--only", nargs="*", metavar="NAME", help="generate only these prompts")
    args = parser.parse_args(argv)
    if shutil.which(args.espeak) is None:
        print(f"{args.espeak} not found (apt-get install espeak-ng)", file=sys.stderr)
        return 2
    names = args.only or sorted(CATALOGUE)
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        print(f"not in the catalogue: {', '.join(unknown)}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for name in names:
        pcm = synthesise(CATALOGUE[name], args.voice, args.speed, args.espeak)
        wav.write_wav(args.out / f"{name}.wav", pcm)
        total += len(pcm) + wav.HEADER_SIZE
    extra = sorted(p.stem for p in args.out.glob("*.wav") if p.stem not in CATALOGUE)
    if extra:
        print(f"not in the catalogue (left alone): {', '.join(extra)}", file=sys.stderr)
    seconds = (total - len(names) * wav.HEADER_SIZE) / (2 * RATE)
    print(f"{len(names)} prompts, {seconds:.1f} s, {total / 1e6:.2f} MB in {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
