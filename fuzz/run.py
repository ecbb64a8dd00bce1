"""Run one fuzz target under atheris (libFuzzer), bounded in time or in executions.

    python -m fuzz.run parser --seconds 60           # what `make fuzz` does for each target
    python -m fuzz.run lane --runs 2000              # a fixed number of inputs (the CI check)
    python -m fuzz.run parser --replay .fuzz/crashes/parser/crash-...   # one input again
    fuzz/build_asan.sh .fuzz/asan && LD_PRELOAD=$(gcc -print-file-name=libasan.so) \
        python -m fuzz.run lane --asan .fuzz/asan          # the C reader under AddressSanitizer

The working corpus is WORKDIR/corpus/TARGET (seeded from fuzz/seeds.py and fuzz/regressions/TARGET/
on every run; what libFuzzer finds is added there and kept between runs); crashing inputs go to
WORKDIR/crashes/TARGET/: once fixed, copy each into fuzz/regressions/TARGET/ (the tests replay them). The
packages under test are instrumented for coverage (the C readers are exercised and compared with
their Python references; libFuzzer's coverage is of the Python side, so the code runs from its
sources, not its mypyc build). Exit status 0: no crash.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import sys
from pathlib import Path
from types import ModuleType

TARGETS = ("parser", "digest", "lane", "invite_lane", "framing", "sdp", "config", "rater")
INSTRUMENTED = ["sipcore", "registrar", "media", "config", "rating", "fuzz"]


def load(name: str, instrument: bool = True) -> ModuleType:
    """The target module, its code under test instrumented for coverage (unless told not to)."""
    if not instrument:
        return importlib.import_module(f"fuzz.target_{name}")
    import atheris

    with atheris.instrument_imports(include=INSTRUMENTED):
        return importlib.import_module(f"fuzz.target_{name}")


REGRESSIONS = Path(__file__).resolve().parent / "regressions"


def regressions(name: str) -> list[Path]:
    """The inputs that once found a bug in target ``name`` (kept, replayed by the tests)."""
    return sorted((REGRESSIONS / name).glob("*"))


def seed(target: ModuleType, name: str, corpus: Path) -> int:
    """Write the target's seeds and regressions into the corpus directory (named by content)."""
    corpus.mkdir(parents=True, exist_ok=True)
    count = 0
    for data in [*target.seeds(), *(p.read_bytes() for p in regressions(name))]:
        path = corpus / f"seed-{hashlib.sha1(data).hexdigest()}"
        if not path.exists():
            path.write_bytes(data)
        count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split("\n")[0])
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--seconds", type=int, default=60, help="time budget (default 60)")
    parser.add_argument("--runs", type=int, default=-1, help="stop after this many inputs instead")
    parser.add_argument("--workdir", type=Path, default=Path(".fuzz"))
    parser.add_argument("--max-len", type=int, default=8192, help="largest input tried (bytes)")
    parser.add_argument("--replay", type=Path, nargs="*", help="run these inputs once, no fuzzing")
    parser.add_argument("--asan", type=Path, help="load the C readers from this sanitizer build")
    args = parser.parse_args(argv)

    from sipcore.speedups import sources_only

    sources_only()  # the sources, which libFuzzer's coverage sees, not their mypyc build
    if args.asan is not None:  # before the target imports the code under test, which keeps its build
        from .sanitized import use_sanitized

        use_sanitized(args.asan)

    target = load(args.target, instrument=args.asan is None)
    if args.replay:
        for path in args.replay:
            target.check(path.read_bytes())
            print(f"{path}: ok")
        return
    corpus = args.workdir / "corpus" / args.target
    crashes = args.workdir / "crashes" / args.target
    crashes.mkdir(parents=True, exist_ok=True)
    print(f"fuzz {args.target}: {seed(target, args.target, corpus)} seeds in {corpus}", flush=True)
    if args.asan is not None:
        from .sanitized import mutate_corpus

        mutate_corpus(target, corpus, crashes, args.seconds, args.runs)
        return
    import atheris

    libfuzzer = [
        sys.argv[0],
        str(corpus),
        f"-artifact_prefix={crashes}/",
        f"-max_len={args.max_len}",
        "-timeout=10",  # one input taking 10 s is a finding (super-linear work), not a slow machine
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
    ]
    if args.runs >= 0:
        libfuzzer.append(f"-runs={args.runs}")
    else:
        libfuzzer.append(f"-max_total_time={args.seconds}")
    atheris.Setup(libfuzzer, target.check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
