"""Build of the optional C accelerators; everything else is in pyproject.toml.

registrar/_lane_c.c reads the everyday REGISTER, sipcore/_digest_c.c splits digest parameter lists,
sipcore/_digest_hash_c.c computes digest responses and nonce MACs,
sipcore/_message_c.c splits the everyday header section and reads the everyday Via,
sipcore/_ownership_c.c finds the worker owning an everyday message, rating/_rater_c.c
runs the rater's everyday authorise + rate, server/_group_commit_c.c runs the call journal's fdatasync
thread without the GIL. ``optional=True``: where no compiler is at hand the install still succeeds,
and lane.py, digest.py, message.py, headers.py, ownership.py, rater.py and group_commit.py use their
Python code alone (the reference each C part is tested against).
"""

from setuptools import Extension, setup

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
    ]
)
