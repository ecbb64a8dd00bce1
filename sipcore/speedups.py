"""The loader of the optional C extensions (setup.py): loaded when built, left out with
SIPCORE_PURE_PYTHON=1 (an operator switch, e.g. to rule an extension out while chasing a fault).

Each package loads its own extension, beside the pure-Python code it speeds up, by calling
`optional_extension` with its qualified name; this module names none. That Python code stays the
reference: the extension returns what it returns, or None to hand it the input.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

LOADED: list[str] = []  # the extensions in use, for the start-up log


def optional_extension(name: str) -> ModuleType | None:
    """The built extension ``name``, or None (not built here, or turned off)."""
    if os.environ.get("SIPCORE_PURE_PYTHON"):
        return None
    try:
        module = importlib.import_module(name)
    except ImportError:  # installed without a compiler: the Python code alone
        return None
    if name not in LOADED:  # a module may serve several of a package's files
        LOADED.append(name)
    return module
