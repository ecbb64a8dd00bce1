"""The rater: the C hot path (rating/_rater_c.c) against the Python Rater methods, its reference. The
fuzzer's bytes choose, through Hypothesis' `fuzz_one_input`, a setup (rate table, package, customer,
account) and eight calls with balances, from the strategies tests/rating/test_rater_c.py uses
(fuzz/rater_cases.py); every authorise and rate answer -- value, type, exception -- must be the
reference's. Bytes too short for a whole example are skipped (`fuzz_one_input` returns None)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rating import rater

from .rater_cases import agree, setups


# database=None: a failure is reported by the fuzzer (the input saved under crashes/), not written to
# a Hypothesis database in the working directory
@settings(database=None)
@given(data=st.data(), everyday=st.booleans())
def rater_agrees_with_reference(data: Any, everyday: bool) -> None:
    """Any setup (`everyday`: one whose calls the C code answers itself), eight calls on it."""
    agree(data, data.draw(setups(everyday)), everyday)


def seeds() -> Iterable[bytes]:
    """Bytes that make whole examples of varied shapes (an example reads ~300-800 bytes): all zeros,
    the simplest setup and calls, and seeded random strings (tables of 1 to ~20 rows, everyday or not,
    either balance mode, with and without caps)."""
    yield bytes(1024)
    rng = random.Random(2026)
    for size in (1024, 2048):
        for _ in range(8):
            yield rng.randbytes(size)


def check(data: bytes) -> None:
    if rater._rater_c is None:  # not built here, or SIPCORE_PURE_PYTHON: nothing to compare
        return
    rater_agrees_with_reference.hypothesis.fuzz_one_input(data)
