"""The fuzz targets (fuzz/) in make test: every seed and every input that once found a bug passes
its target's checks in-process, and each target runs briefly under atheris (a bounded number of
inputs, so the time does not depend on the machine's load). `make fuzz` runs them for minutes."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from fuzz.run import TARGETS, regressions
from rating.events import CallRated

ROOT = Path(__file__).resolve().parents[2]
# inputs per target in CI: ~2-4 s each on an idle machine (docs/reliability.md gives the rates; a rater
# input is a whole Hypothesis example, two Raters and eight calls rated on each: ~75 inputs/s)
RUNS = {
    "parser": 3000,
    "digest": 30000,
    "lane": 15000,
    "invite_lane": 15000,
    "framing": 2000,
    "sdp": 15000,
    "config": 1500,
    "rater": 200,
}


@pytest.mark.parametrize("name", TARGETS)
def test_seeds_and_regressions_pass_the_target(name: str) -> None:
    target = importlib.import_module(f"fuzz.target_{name}")
    seeds = list(target.seeds())
    assert seeds, name
    for data in [*seeds, *(p.read_bytes() for p in regressions(name))]:
        target.check(data)


def test_every_fixed_bug_is_kept_as_a_regression_input() -> None:
    assert {name for name in TARGETS if regressions(name)} >= {"parser", "lane", "sdp", "framing"}


def test_the_rater_target_fails_on_a_c_answer_one_micro_unit_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rater target's comparison reaches the fuzzer: Hypothesis' fuzz_one_input re-raises the
    AssertionError of a C rater whose prices are one micro-unit off, on the seeds alone."""
    from fuzz import target_rater
    from rating import rater
    from tests.extensions import require_extension

    built = rater._rater_c
    require_extension(built, "rating._rater_c")

    def rate_off_by_one(*args: object, **kwargs: object) -> object:
        rated = built.rate(*args, **kwargs)
        return rated._replace(price_micros=rated.price_micros + 1) if isinstance(rated, CallRated) else rated

    seeds = list(target_rater.seeds())
    monkeypatch.setattr(rater, "_rater_c", SimpleNamespace(authorise=built.authorise, rate=built.rate))
    for data in seeds:  # the stand-in itself passes: what fails below is the micro-unit
        target_rater.check(data)
    monkeypatch.setattr(rater, "_rater_c", SimpleNamespace(authorise=built.authorise, rate=rate_off_by_one))
    with pytest.raises(AssertionError):
        for data in seeds:
            target_rater.check(data)


def test_the_rater_target_compares_nothing_without_the_c_rater(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where rating._rater_c is not built (or SIPCORE_PURE_PYTHON=1), the target passes without
    drawing examples instead of failing on the missing build."""
    from fuzz import target_rater
    from rating import rater

    monkeypatch.setattr(rater, "_rater_c", None)
    drawn = []
    monkeypatch.setattr(target_rater, "agree", lambda *args: drawn.append(args))
    for data in target_rater.seeds():
        target_rater.check(data)
    assert drawn == []


@pytest.mark.parametrize("name", TARGETS)
def test_a_short_coverage_guided_run_finds_nothing(name: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz.run", name, "--runs", str(RUNS[name]), "--workdir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "Done" in output or "DONE" in output, output[-3000:]
    assert not list((tmp_path / "crashes" / name).iterdir()), output[-6000:]


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C readers built once with ASan/UBSan (skipped where gcc has no ASan runtime)."""
    directory = tmp_path_factory.mktemp("asan")
    built = subprocess.run(
        [str(ROOT / "fuzz" / "build_asan.sh"), str(directory)],
        env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if built.returncode == 2:
        pytest.skip("no AddressSanitizer runtime for gcc here")
    assert built.returncode == 0, built.stderr[-3000:]
    return directory


# inputs per C reader under ASan/UBSan (the rater: ~60/s, so ~3-4 s; parser drives the header splitter)
SANITIZED_RUNS = {"lane": 10000, "digest": 10000, "rater": 200, "parser": 3000}


@pytest.mark.parametrize("name", SANITIZED_RUNS)
def test_the_c_readers_under_address_sanitizer(name: str, sanitized: Path, tmp_path: Path) -> None:
    """The C readers built with ASan/UBSan, on the seeds and regressions and mutations of them,
    compared with their Python references (a memory error aborts the process: exit status != 0)."""
    libasan = subprocess.run(
        ["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True
    ).stdout.strip()
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz.run", name, "--asan", str(sanitized), "--runs", str(SANITIZED_RUNS[name]),
         "--workdir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "LD_PRELOAD": libasan, "ASAN_OPTIONS": "detect_leaks=0"},
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert "no crash" in proc.stdout, proc.stdout[-3000:]
