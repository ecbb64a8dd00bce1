"""Media pure-core CPU per 20 ms frame, no sockets: `python -m benchmarks.bench_media [--repeat N]`.

- G.711 per frame (160 samples): encode/decode, table paths (pure and numpy).
- Recording stream: PCMU payload -> linear (decode) -> silence check (frame energy) -> WAV append
  (buffered writes to a temporary file, header fixed at close), per frame.
- Conference: per participant-frame in rooms of 10 and 20: decode every participant's PCMU, mix
  (each hears the others), encode every output; numpy mixer vs the pure-Python reference.

From the CPU per frame it prints how many concurrent streams (50 frames/s each) one core could carry
if it did nothing else: an upper bound, the RTP/UDP and event-loop costs are not in it.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.machine import cpu_model, load_note
from media import g711, mixer, tones, wav

FRAMES_PER_SECOND = 50
SAMPLES = 160


def cpu_per_call(fn: Callable[[], object], calls: int, repeat: int) -> float:
    """Median over ``repeat`` runs of process CPU seconds per call."""
    runs = []
    for _ in range(repeat):
        t0 = time.process_time()
        for _ in range(calls):
            fn()
        runs.append((time.process_time() - t0) / calls)
    return statistics.median(runs)


def speech_like_frames(n: int, seed: int = 1) -> list[bytes]:
    """PCMU payloads of a tone mix with noise (all code values occur; the table paths do not care)."""
    rnd = random.Random(seed)
    pcm = tones.multi_tone((300, 1100, 2300), 20 * n, dbov=-20)
    samples = tones.samples_of(pcm)
    noisy = [max(-32768, min(32767, s + rnd.randint(-800, 800))) for s in samples]
    codes = g711.ulaw_encode_py(b"".join(int(v).to_bytes(2, "little", signed=True) for v in noisy))
    return [codes[i * SAMPLES : (i + 1) * SAMPLES] for i in range(n)]


def bench_codec(frames: list[bytes], repeat: int) -> list[tuple[str, float]]:
    pcm = g711.ulaw_decode(frames[0])
    rows = [
        ("PCMU decode (translate)", cpu_per_call(lambda: g711.ulaw_decode(frames[0]), 20_000, repeat)),
        ("PCMU encode (pure table)", cpu_per_call(lambda: g711.ulaw_encode_py(pcm), 5_000, repeat)),
    ]
    if g711.HAVE_NUMPY:
        rows.append(
            ("PCMU encode (numpy table)", cpu_per_call(lambda: g711.ulaw_encode_np(pcm), 20_000, repeat))
        )
    rows.append(("frame energy / silence check", cpu_per_call(lambda: tones.is_silent(pcm), 20_000, repeat)))
    return rows


def bench_recording(frames: list[bytes], repeat: int) -> float:
    """CPU per frame of decode + silence check + WAV append, over 3,000-frame (60 s) recordings."""
    per_file = 3000
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeat):
            path = Path(tmp) / f"rec{r}.wav"
            t0 = time.process_time()
            w = wav.WavWriter(path)
            for i in range(per_file):
                pcm = g711.ulaw_decode(frames[i % len(frames)])
                tones.is_silent(pcm)
                w.write(pcm)
            w.close(fsync=False)  # the fsync is once per message, disk-bound, not CPU per frame
            runs.append((time.process_time() - t0) / per_file)
    return statistics.median(runs)


def bench_room(
    frames: list[bytes],
    size: int,
    mix: Callable[..., list[bytes]],
    encode: Callable[[bytes], bytes],
    repeat: int,
) -> float:
    """CPU per participant-frame of one room tick: decode all, mix, encode all (one muted, one lost)."""
    payloads = [frames[i % len(frames)] for i in range(size)]
    muted = [i == 1 for i in range(size)]

    def tick() -> None:
        linear: list[bytes | None] = [g711.ulaw_decode(p) for p in payloads]
        linear[2] = None  # a late packet
        for out in mix(linear, muted):
            encode(out)

    calls = 2000 if mix is not mixer.mix_reference else 100
    return cpu_per_call(tick, calls, repeat) / size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    frames = speech_like_frames(200)
    print(
        f"command: {' '.join([os.path.basename(sys.executable), '-m', 'benchmarks.bench_media', *sys.argv[1:]])}"
    )
    print(f"date: {datetime.now(UTC).isoformat(timespec='seconds')}")
    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()}")
    print(
        f"numpy: {'yes ' + __import__('numpy').__version__ if g711.HAVE_NUMPY else 'no (pure Python paths)'}"
    )
    print("\nG.711 and levels, per 20 ms frame (160 samples):")
    for name, cost in bench_codec(frames, args.repeat):
        print(f"  {name:32s} {cost * 1e6:7.2f} µs")
    rec = bench_recording(frames, args.repeat)
    print("\nrecording stream (PCMU -> linear -> silence check -> WAV append):")
    print(f"  {rec * 1e6:.2f} µs CPU per frame -> {1 / (rec * FRAMES_PER_SECOND):,.0f} streams per core")
    print("\nconference, per participant-frame (decode + mix + encode; 1 muted, 1 late per room):")
    variants = [("reference", mixer.mix_reference, g711.ulaw_encode_py)]
    if mixer.HAVE_NUMPY:
        variants.append(("numpy", mixer.mix_numpy, g711.ulaw_encode_np))
    for size in (10, 20):
        for name, mix, encode in variants:
            cost = bench_room(frames, size, mix, encode, args.repeat)
            print(
                f"  room of {size:2d}, {name:9s} {cost * 1e6:8.2f} µs -> "
                f"{1 / (cost * FRAMES_PER_SECOND):,.0f} participants per core"
            )
    print(f"\n{load_note()}")


if __name__ == "__main__":
    main()
