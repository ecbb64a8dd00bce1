"""Conference mixing: each participant hears the sum of everyone else, saturated to int16.

One 20 ms tick of a room is a list of participants' decoded frames (little-endian int16 PCM, all the
same length) where ``None`` is a frame that did not arrive in time (lost or late: it counts as
silence, the participant still hears the others), and a list of mute flags (a muted participant
contributes nothing but still hears). Output ``i`` is ``clip(total - own_i)`` where ``total`` is
the exact integer sum of every contribution: the same value as adding the N-1 others, computed in N
additions instead of N·(N-1), and clipped once, so overflow in the middle of a sum never matters.

``mix_reference`` defines the behaviour in plain Python; ``mix_numpy`` (and ``mix_block`` for a
pipeline already holding an ``(N, samples)`` int16 array) must equal it exactly: a differential test
holds them to it.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy is optional
    np = None

FRAME_SAMPLES = 160  # 20 ms at 8 kHz
MAX_PARTICIPANTS = 20
_LITTLE = sys.byteorder == "little"
Frame = bytes | bytearray | memoryview


def _check(frames: Sequence[Frame | None], muted: Sequence[bool], samples: int) -> None:
    if len(frames) != len(muted):
        raise ValueError("one mute flag per participant")
    for frame in frames:
        if frame is not None and len(frame) != 2 * samples:
            raise ValueError(f"a frame must be {samples} samples ({2 * samples} bytes), got {len(frame)}")


def mix_reference(
    frames: Sequence[Frame | None], muted: Sequence[bool], samples: int = FRAME_SAMPLES
) -> list[bytes]:
    """What each participant hears (one frame each, in the same order): the behaviour's definition."""
    _check(frames, muted, samples)
    own: list[array | None] = []
    for frame, is_muted in zip(frames, muted, strict=True):
        if frame is None or is_muted:
            own.append(None)
            continue
        arr = array("h", frame)
        if not _LITTLE:  # pragma: no cover - big-endian hosts
            arr.byteswap()
        own.append(arr)
    contributions = [a for a in own if a is not None]
    total = [sum(column) for column in zip(*contributions, strict=True)] if contributions else [0] * samples
    out = []
    for mine in own:
        heard = total if mine is None else [t - m for t, m in zip(total, mine, strict=True)]
        clipped = array("h", [32767 if v > 32767 else -32768 if v < -32768 else v for v in heard])
        if not _LITTLE:  # pragma: no cover - big-endian hosts
            clipped.byteswap()
        out.append(clipped.tobytes())
    return out


HAVE_NUMPY = np is not None

if np is not None:

    def mix_block(block: np.ndarray, contributes: np.ndarray) -> np.ndarray:
        """``(N, samples)`` int16 frames and ``(N,)`` bools (has a frame and is not muted) ->
        ``(N, samples)`` int16: row ``i`` is what participant ``i`` hears."""
        own = block.astype(np.int32)
        own[~contributes] = 0
        heard = own.sum(axis=0, dtype=np.int32) - own  # broadcasts the total over every row
        np.clip(heard, -32768, 32767, out=heard)
        return heard.astype(np.int16)

    def mix_numpy(
        frames: Sequence[Frame | None], muted: Sequence[bool], samples: int = FRAME_SAMPLES
    ) -> list[bytes]:
        """Same contract and results as ``mix_reference``."""
        _check(frames, muted, samples)
        n = len(frames)
        if not n:
            return []
        silent = bytes(2 * samples)
        joined = b"".join(silent if f is None else f for f in frames)
        block = np.frombuffer(joined, dtype="<i2").reshape(n, samples)
        contributes = np.fromiter(
            (f is not None and not m for f, m in zip(frames, muted, strict=True)), dtype=bool, count=n
        )
        heard = mix_block(block, contributes).astype("<i2", copy=False).tobytes()
        size = 2 * samples
        return [heard[i * size : (i + 1) * size] for i in range(n)]

    mix = mix_numpy
else:  # pragma: no cover - numpy is optional
    mix = mix_reference
