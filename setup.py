"""Build of the optional C accelerators; everything else is in pyproject.toml.

registrar/_lane_c.c reads the everyday REGISTER, sipcore/_digest_c.c splits digest parameter lists,
sipcore/_digest_hash_c.c computes digest responses and nonce MACs,
sipcore/_message_c.c splits the everyday header section and reads the everyday Via,
sipcore/_ownership_c.c finds the worker owning an everyday message, rating/_rater_c.c
runs the rater's everyday authorise + rate, server/_group_commit_c.c runs the call journal's fdatasync
thread without the GIL. ``optional=True``: where no compiler is at hand the install still succeeds,
and lane.py, digest.py, message.py, headers.py, ownership.py, rater.py and group_commit.py use their
Python code alone (the reference each C part is tested against).

The code every message, call and registration runs (COMPILED: the SIP stack's message model,
transaction layer and proxy core, the server's message loop, the proxy and registrar adapters, the
call controller and its journal, the registrar and its lanes, the memory location store, the call
plan and the outgoing decision of routing/) is also compiled by mypyc,
from the same source, into each package's (or sub-package's) _compiled/ directory, with a record of the
sources' SHA-256 (sipcore/_compiled/sources.json), which ``sipcore.speedups.compiled_first`` checks
before it prefers the build. Without mypy, or when mypyc refuses the sources, every package is the
Python code alone.
"""

import hashlib
import json
import sys
from pathlib import Path

from setuptools import Extension, setup

GROUP_HOME = "sipcore"  # the package whose _compiled/ holds the group's runtime and its record
COMPILED = [  # one mypyc group: these modules call each other natively, so they are used all or none
    # the message model, the transaction layer and the stateless proxy core: the code every message runs
    "sipcore/grammar.py",
    "sipcore/uri.py",
    "sipcore/headers.py",
    "sipcore/message.py",
    "sipcore/timers.py",
    "sipcore/transaction.py",
    "sipcore/flow.py",
    "sipcore/proxy.py",
    # the server's message loop, the proxy's adapter, the call controller and its identity policy:
    # every call's messages
    "server/sip_server.py",
    "server/proxy_service.py",
    "calls/controller.py",
    "calls/identity.py",
    # the digest check and the registrar: every REGISTER's reading, decision and answer (and its
    # adapter), every INVITE's challenge and check of credentials
    "sipcore/digest.py",
    "registrar/lane.py",
    "registrar/invite_lane.py",
    "registrar/invite_auth.py",
    "registrar/registrar.py",
    "server/registrar_service.py",
    # the location store: every REGISTER's plan and write, and with workers the replica's copy
    "registrar/location/memory.py",
    "registrar/location/rules.py",
    "registrar/location/replicated.py",
    "registrar/location/codec.py",
    "registrar/location/contact_key.py",
    # every call's routing: the call plan and its nodes (an incoming call), the outgoing decision and
    # its fraud checks, the request checks, and the call journal's frames of each answered call
    "sipcore/checks.py",
    "routing/state.py",
    "routing/toll_fraud.py",
    "routing/outgoing.py",
    "routing/plan_nodes.py",
    "routing/plan.py",
    "server/call_journal.py",
]
RUNTIME = f"{GROUP_HOME}__mypyc"  # mypyc's shared runtime of the group, in GROUP_HOME/_compiled/
# mypy reads what the compiled modules import, for their types, but reports only on the compiled
# modules: the rest runs as Python, and what crosses into compiled code is checked at run time. The
# build's own environment (pip's isolation) lacks the runtime dependencies (structlog,
# prometheus_client...): their types are then Any, and the code that calls them is the same.
MYPY_FLAGS = ["--follow-imports=silent", "--ignore-missing-imports"]


def compiled_modules() -> list[Extension]:
    """The mypyc builds of COMPILED, and their record (none where mypyc is missing)."""
    try:
        from mypyc.build import mypycify
    except ImportError:
        return []
    here = Path(__file__).resolve().parent
    try:
        exts = mypycify(
            [*COMPILED, *MYPY_FLAGS], opt_level="3", group_name=f"{GROUP_HOME}._compiled.{GROUP_HOME}"
        )
    except (Exception, SystemExit) as exc:  # a type error mypyc refuses: the Python code alone
        print(f"mypyc left {', '.join(COMPILED)} in Python: {exc}", file=sys.stderr)
        return []
    for ext in exts:  # each built beside its sources' package, in <package>/_compiled/, not over them
        if ext.name != f"{GROUP_HOME}._compiled.{RUNTIME}":  # the runtime is named so already
            package, _, module = ext.name.rpartition(".")
            ext.name = f"{package}._compiled.{module}"
        ext.optional = True
    record = {
        "runtime": RUNTIME,
        "sources": {name: hashlib.sha256((here / name).read_bytes()).hexdigest() for name in COMPILED},
    }
    (here / GROUP_HOME / "_compiled" / "sources.json").write_text(json.dumps(record, indent=1) + "\n")
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
