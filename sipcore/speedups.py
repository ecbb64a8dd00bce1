"""The loader of the optional C extensions and mypyc-compiled modules (setup.py): loaded when
built, left out with SIPCORE_PURE_PYTHON=1 (an operator switch, e.g. to rule an extension out while
chasing a fault).

Each package loads its own extension, beside the pure-Python code it speeds up, by calling
`optional_extension` with its qualified name; this module names none. That Python code stays the
reference: the extension returns what it returns, or None to hand it the input.

A compiled module is the same source built by mypyc into its package's ``_compiled/`` directory,
all of them in one group (setup.py); `compiled_first` puts those directories ahead of the sources on
the packages' paths, but only when every compiled module was built from the sources beside it
(setup.py records their SHA-256): an edited source is never shadowed by a stale build.
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


COMPILED_RECORD = "sources.json"  # in sipcore/_compiled/: the group's runtime and {source path: SHA-256}
_GROUP_HOME = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_compiled")
_group: frozenset[str] | None = None  # the (sub)packages of the group when its build is usable (decided once)
_in_use: set[str] = set()  # the packages whose paths hold their build
_sources_only = False  # set by sources_only()


def _build_matches() -> list[str]:
    """The modules of the mypyc group (setup.py), by source path, when every one was built from
    the sources beside it; else none. They call each other natively, so they are used together or
    not at all: one edited source leaves the whole group to the Python code."""
    try:
        with open(os.path.join(_GROUP_HOME, COMPILED_RECORD), encoding="utf-8") as f:
            record = json.load(f)
        root = os.path.dirname(os.path.dirname(_GROUP_HOME))
        built: dict[str, list[str]] = {}  # each package's _compiled/, listed once
        for name, digest in record["sources"].items():
            with open(os.path.join(root, name), "rb") as src:
                if hashlib.sha256(src.read()).hexdigest() != digest:
                    return []  # edited since the build: the sources decide
            package, module = os.path.split(name)
            stem = module.removesuffix(".py")
            if package not in built:
                built[package] = os.listdir(os.path.join(root, package, "_compiled"))
            if not any(b.startswith(stem + ".") and b.endswith(".so") for b in built[package]):
                return []  # not compiled here (mypyc refused it, or no compiler)
        importlib.import_module(f"sipcore._compiled.{record['runtime']}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError):
        return []  # never built, or half built: the Python code alone
    return sorted(record["sources"])


def compiled_first(package: str, path: list[str]) -> None:
    """Put ``package``'s mypyc builds (``<package>/_compiled/``) first on its ``path`` (the package's
    ``__path__``) when the whole group matches its sources; else leave it to its Python code.
    Every package of the group calls this from its ``__init__``, a sub-package (``registrar.location``)
    with its dotted name, before it imports any of its modules."""
    global _group
    if os.environ.get("SIPCORE_PURE_PYTHON") or _sources_only or not path:
        return
    if _group is None:
        modules = _build_matches()
        _group = frozenset(os.path.dirname(name).replace("/", ".") for name in modules)  # the packages
        if modules:
            LOADED.append(f"compiled: {', '.join(modules)}")
    if package in _group:
        path.insert(0, os.path.join(path[0], "_compiled"))
        _in_use.add(package)


def sources_only() -> None:
    """Take the mypyc build off every package's path, before any compiled module is imported:
    the fuzzer (fuzz/run.py) instruments Python code for coverage, and the build is held to these
    same sources by its differential tests (tests/sipcore/test_message_compiled.py)."""
    global _sources_only
    _sources_only = True
    for name in sorted(_in_use):
        path = importlib.import_module(name).__path__
        path[:] = [p for p in path if os.path.basename(p) != "_compiled"]
    _in_use.clear()
    LOADED[:] = [name for name in LOADED if not name.startswith("compiled: ")]
