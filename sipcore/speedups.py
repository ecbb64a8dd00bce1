"""The loader of the optional C extensions and mypyc-compiled modules (setup.py): loaded when
built, left out with SIPCORE_PURE_PYTHON=1 (an operator switch, e.g. to rule an extension out while
chasing a fault).

Each package loads its own extension, beside the pure-Python code it speeds up, by calling
`optional_extension` with its qualified name; this module names none. That Python code stays the
reference: the extension returns what it returns, or None to hand it the input.

A compiled module is the same source built by mypyc into the package's ``_compiled/`` directory;
`compiled_first` puts that directory ahead of the sources on the package's path, but only when
every compiled module was built from the sources beside it (setup.py records their SHA-256): an
edited source is never shadowed by a stale build.
"""

from __future__ import annotations

import hashlib
import importlib
import json
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


COMPILED_RECORD = "sources.json"  # in ``<package>/_compiled/``: {module file name: SHA-256 of its source}


def compiled_first(package: str, path: list[str]) -> None:
    """Put ``package``'s mypyc builds (``<package>/_compiled/``) first on its ``path`` (the package's
    ``__path__``) when they match their sources; else leave the package to its Python code."""
    if os.environ.get("SIPCORE_PURE_PYTHON") or not path:
        return
    source_dir = path[0]
    compiled = os.path.join(source_dir, "_compiled")
    try:
        with open(os.path.join(compiled, COMPILED_RECORD), encoding="utf-8") as f:
            record = json.load(f)
        built = set(os.listdir(compiled))
        for name, digest in record["sources"].items():
            with open(os.path.join(source_dir, name), "rb") as src:
                if hashlib.sha256(src.read()).hexdigest() != digest:
                    return  # edited since the build: the source decides
            stem = name.removesuffix(".py")
            if not any(b.startswith(stem + ".") and b.endswith(".so") for b in built):
                return  # not compiled here (mypyc refused it, or no compiler)
        importlib.import_module(f"{package}._compiled.{record['runtime']}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError):
        return  # never built, or half built: the Python code alone
    path.insert(0, compiled)
    LOADED.append(f"{package} compiled: {', '.join(sorted(record['sources']))}")


def sources_only(package: ModuleType) -> None:
    """Take ``package``'s mypyc build off its path, before any compiled module is imported: the
    fuzzer (fuzz/run.py) instruments Python code for coverage, and the build is held to these same
    sources by its differential test (tests/sipcore/test_message_compiled.py)."""
    path = package.__path__
    compiled = os.path.join(path[-1], "_compiled")
    if compiled in path:
        path.remove(compiled)
        LOADED[:] = [name for name in LOADED if not name.startswith(f"{package.__name__} compiled: ")]
