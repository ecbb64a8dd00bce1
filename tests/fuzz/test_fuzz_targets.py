"""The fuzz targets (fuzz/) in make test: every seed and every input that once found a bug passes
its target's checks in-process, and each target runs briefly under atheris (a bounded number of
inputs, so the time does not depend on the machine's load). `make fuzz` runs them for minutes."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.run import TARGETS, regressions

ROOT = Path(__file__).resolve().parents[2]
# inputs per target in CI: ~2-4 s each on an idle machine (docs/reliability.md gives the rates)
RUNS = {"parser": 3000, "digest": 30000, "lane": 15000, "framing": 2000, "sdp": 15000, "config": 1500}


@pytest.mark.parametrize("name", TARGETS)
def test_seeds_and_regressions_pass_the_target(name: str) -> None:
    target = importlib.import_module(f"fuzz.target_{name}")
    seeds = list(target.seeds())
    assert seeds, name
    for data in [*seeds, *(p.read_bytes() for p in regressions(name))]:
        target.check(data)


def test_every_fixed_bug_is_kept_as_a_regression_input() -> None:
    assert {name for name in TARGETS if regressions(name)} >= {"parser", "lane", "sdp", "framing"}


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


@pytest.mark.parametrize("name", ["lane", "digest"])
def test_the_c_readers_under_address_sanitizer(name: str, sanitized: Path, tmp_path: Path) -> None:
    """The C readers built with ASan/UBSan, on the seeds and regressions and mutations of them,
    compared with their Python references (a memory error aborts the process: exit status != 0)."""
    libasan = subprocess.run(
        ["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True
    ).stdout.strip()
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz.run", name, "--asan", str(sanitized), "--runs", "10000",
         "--workdir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "LD_PRELOAD": libasan, "ASAN_OPTIONS": "detect_leaks=0"},
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert "no crash" in proc.stdout, proc.stdout[-3000:]
