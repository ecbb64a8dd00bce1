"""The module-level guard of the C extensions' differential tests."""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

import pytest


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
