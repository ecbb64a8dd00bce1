"""The C readers under AddressSanitizer and UBSan (built by fuzz/build_asan.sh): loaded in place of
the installed build, then driven by a plain mutation loop over the coverage-guided corpus, since
libFuzzer's coverage hooks do not survive gcc's ASan runtime in one process."""

from __future__ import annotations

import importlib.util
import os
import random
import sys
import time
from pathlib import Path
from types import ModuleType

C_READERS = (
    "registrar._lane_c",
    "sipcore._digest_c",
    "sipcore._digest_hash_c",
    "sipcore._message_c",
    "sipcore._ownership_c",
    "rating._rater_c",
)


def use_sanitized(directory: Path) -> None:
    """Load the C readers from ``directory`` (built by fuzz/build_asan.sh with AddressSanitizer and
    UBSan) in place of the installed ones: an out-of-bounds read then stops the run even when it
    happens not to change a result the differential check sees. Call it before anything imports the
    code under test: that code keeps the build it imported. libFuzzer's coverage hooks do not
    survive gcc's ASan runtime in the process, so this mode runs `mutate_corpus` instead."""
    for name in C_READERS:
        if name in sys.modules:  # its users hold that build (rating.rater calls setup() on it at import)
            raise RuntimeError(f"{name} was imported before the sanitized build: call use_sanitized first")
        path = next(directory.glob(name.rpartition(".")[2] + ".*.so"))
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None, path
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module  # what speedups.optional_extension imports


_EDITS = [b" ", b";", b"=", b":", b"<", b">", b'"', b"@", b",", b"\\", b"\r\n", b"\n", b"\r", b"\t", b"\x00",
          b"\xff", b"\xc3\xa9", b"0", b"9" * 30, b"%", b"[", b"]", b"?", b"SIP/2.0", b"sip:", b"Digest "]  # fmt: skip


def mutate_corpus(target: ModuleType, corpus: Path, crashes: Path, seconds: int, runs: int) -> None:
    """Every corpus input (what coverage-guided runs found), then random edits and splices of them,
    for ``seconds`` or ``runs`` inputs; the input being tried is kept in crashes/last-input, so one
    that makes the sanitizer abort the process is on disk."""
    inputs = [p.read_bytes() for p in sorted(corpus.iterdir())]
    rng = random.Random(2026)
    last = os.open(crashes / "last-input", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    start, done = time.monotonic(), 0

    def run(data: bytes) -> None:
        os.lseek(last, 0, os.SEEK_SET)
        os.ftruncate(last, 0)
        os.write(last, data)
        target.check(data)

    for data in inputs:
        run(data)
        done += 1
    while (runs < 0 and time.monotonic() - start < seconds) or done < runs:
        data = rng.choice(inputs)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data) + 1)
            kind = rng.randrange(5)
            if kind == 0 and data:
                j = min(i, len(data) - 1)
                data = data[:j] + bytes([data[j] ^ (1 << rng.randrange(8))]) + data[j + 1 :]
            elif kind == 1:
                data = data[:i] + rng.choice(_EDITS) + data[i:]
            elif kind == 2:
                data = data[:i] + data[i + rng.randint(1, 16) :]
            elif kind == 3:
                data = data[:i] + data[i : i + rng.randint(1, 64)] * 2 + data[i + 64 :]
            else:
                other = rng.choice(inputs)
                data = data[:i] + other[rng.randrange(len(other) + 1) :]
        run(data)
        done += 1
    os.close(last)
    elapsed = time.monotonic() - start
    print(
        f"sanitized {corpus.name}: {done} inputs in {elapsed:.0f} s ({done / max(elapsed, 1e-9):.0f}/s), no crash"
    )
