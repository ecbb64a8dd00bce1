"""Build of the optional C accelerators; everything else is in pyproject.toml.

registrar/_lane_c.c reads the everyday REGISTER, sipcore/_digest_c.c splits digest parameter lists,
sipcore/_digest_hash_c.c computes digest responses and nonce MACs,
sipcore/_message_c.c splits the everyday header section and reads the everyday Via,
sipcore/_ownership_c.c finds the worker owning an everyday message, rating/_rater_c.c
runs the rater's everyday authorise + rate, server/_group_commit_c.c runs the call journal's fdatasync
thread without the GIL. ``optional=True``: where no compiler is at hand the install still succeeds,
and lane.py, digest.py, message.py, headers.py, ownership.py, rater.py and group_commit.py use their
Python code alone (the reference each C part is tested against).

The SIP stack's per-message code (sipcore/grammar.py, uri.py, headers.py, message.py, timers.py,
transaction.py, flow.py, proxy.py) is also compiled by mypyc, from the same source, into
sipcore/_compiled/ with a record of the sources' SHA-256, which ``sipcore.speedups.compiled_first``
checks before it prefers the build. Without mypy, or when mypyc refuses the sources, the package
is the Python code alone.
"""

import hashlib
import json
import sys
from pathlib import Path

from setuptools import Extension, setup

COMPILED_PACKAGE = "sipcore"
# the message model, the transaction layer and the stateless proxy core: the code every message runs
COMPILED = [
    "grammar.py",
    "uri.py",
    "headers.py",
    "message.py",
    "timers.py",
    "transaction.py",
    "flow.py",
    "proxy.py",
]
RUNTIME = "sipcore__mypyc"  # mypyc's shared runtime of the group, beside the modules


def compiled_modules() -> list[Extension]:
    """The mypyc builds of COMPILED, and their record (none where mypyc is missing)."""
    try:
        from mypyc.build import mypycify
    except ImportError:
        return []
    here = Path(__file__).resolve().parent
    sources = [f"{COMPILED_PACKAGE}/{name}" for name in COMPILED]
    try:
        exts = mypycify(sources, opt_level="3", group_name=f"{COMPILED_PACKAGE}._compiled.{COMPILED_PACKAGE}")
    except (Exception, SystemExit) as exc:  # a type error mypyc refuses: the Python code alone
        print(f"mypyc left {', '.join(COMPILED)} in Python: {exc}", file=sys.stderr)
        return []
    for ext in exts:  # built beside the sources' package, in _compiled/, not over the sources
        ext.name = f"{COMPILED_PACKAGE}._compiled.{ext.name.rpartition('.')[2]}"
        ext.optional = True
    out = here / COMPILED_PACKAGE / "_compiled"
    record = {
        "runtime": RUNTIME,
        "sources": {
            name: hashlib.sha256((here / COMPILED_PACKAGE / name).read_bytes()).hexdigest()
            for name in COMPILED
        },
    }
    (out / "sources.json").write_text(json.dumps(record, indent=1) + "\n")
    return exts


FLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]

setup(
    ext_modules=[
        Extension(
            "registrar._lane_c", sources=["registrar/_lane_c.c"], extra_compile_args=FLAGS, optional=True
        ),
        Extension(
            "sipcore._digest_c", sources=["sipcore/_digest_c.c"], extra_compile_args=FLAGS, optional=True
        ),
        Extension(
            "sipcore._digest_hash_c",
            sources=["sipcore/_digest_hash_c.c"],
            extra_compile_args=FLAGS,
            optional=True,
        ),
        Extension(
            "sipcore._message_c", sources=["sipcore/_message_c.c"], extra_compile_args=FLAGS, optional=True
        ),
        Extension(
            "sipcore._ownership_c",
            sources=["sipcore/_ownership_c.c"],
            extra_compile_args=FLAGS,
            optional=True,
        ),
        Extension(
            "server._group_commit_c",
            sources=["server/_group_commit_c.c"],
            extra_compile_args=FLAGS,
            extra_link_args=["-pthread"],
            optional=True,
        ),
        Extension("rating._rater_c", sources=["rating/_rater_c.c"], extra_compile_args=FLAGS, optional=True),
        *compiled_modules(),
    ]
)
