"""The module-level guards of the C extensions' and the mypyc build's differential tests, and the
process of Python sources those tests compare with."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import sipcore

ROOT = Path(__file__).resolve().parents[1]


def require_extension(loaded: object, name: str) -> None:
    """Skip the module when extension ``name`` is not in use (``loaded`` is None) and could not have
    been built here; fail it when it could have been (a compiler and the Python headers): `make dev`
    builds it, and the speed it exists for must not vanish without a failing test."""
    if loaded is not None:
        return
    buildable = (
        shutil.which("gcc") is not None and Path(sysconfig.get_paths()["include"], "Python.h").exists()
    )
    if buildable and not os.environ.get("SIPCORE_PURE_PYTHON"):
        pytest.fail(f"{name} is not built although it can be here: run `make dev`", pytrace=False)
    pytest.skip(f"{name} is not built here", allow_module_level=True)


def require_compiled_build() -> None:
    """`require_extension` for the mypyc build (setup.py): in use when sipcore's path holds it."""
    if str(Path(sipcore.__file__).parent / "_compiled") not in sipcore.__path__:
        require_extension(None, "the mypyc build of sipcore (sipcore/_compiled/)")


def python_output(code: str, pure: bool, stdin: str = "", hash_seed: int | None = None) -> str:
    """What ``code`` prints in a fresh interpreter at the project's root: on the sources alone when
    ``pure`` (SIPCORE_PURE_PYTHON=1), else on whatever this install built. ``hash_seed`` fixes
    PYTHONHASHSEED, for code whose output follows the order of a set of strings."""
    env = {k: v for k, v in os.environ.items() if k != "SIPCORE_PURE_PYTHON"}
    if pure:
        env["SIPCORE_PURE_PYTHON"] = "1"
    if hash_seed is not None:
        env["PYTHONHASHSEED"] = str(hash_seed)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, input=stdin, capture_output=True,
                         text=True, timeout=300, check=True)  # fmt: skip
    return out.stdout
