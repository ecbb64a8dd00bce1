"""The location store's mypyc build (setup.py: the memory backend, its rules, its replication between
workers, its codec and contact keys) against its Python sources, the reference: the seeded walks of
tests/registrar/location_description.py must be described alike by both."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.extensions import python_output, require_compiled_build

require_compiled_build()  # a build that could be here and is not (or is stale) fails: `make dev` makes it


@pytest.fixture(scope="module")
def both() -> tuple[dict[str, Any], dict[str, Any]]:
    code = "from tests.registrar.location_description import main; main()"
    # one hash seed for both: which AORs share a TCP connection is kept in a set
    return (
        json.loads(python_output(code, pure=False, hash_seed=0)),
        json.loads(python_output(code, pure=True, hash_seed=0)),
    )


def test_the_build_walked_the_store_and_the_sources_the_reference(both) -> None:
    compiled, reference = both
    assert reference["loaded"] == []
    for module in ("memory", "rules", "replicated", "codec", "contact_key"):
        assert f"registrar/location/{module}.py" in compiled["loaded"][0], compiled["loaded"]
    # the walks did what they are there for (else equal descriptions would say little)
    kinds: dict[str, int] = {}
    for name, steps in reference.items():
        if name.startswith("walk"):
            for step in steps:
                kinds[step[0]] = kinds.get(step[0], 0) + 1
                if step[0] == "applied":
                    for ev in step[4]:
                        kinds[ev[0]] = kinds.get(ev[0], 0) + 1
                elif step[0] == "refused":
                    kinds[step[3]] = kinds.get(step[3], 0) + 1
    for kind in ("applied", "published", "closed", "swept", "BindingAdded", "BindingRefreshed",
                 "BindingRemoved", "StaleCSeqError", "TooManyContactsError"):  # fmt: skip
        assert kinds.get(kind, 0) >= 3, (kind, kinds)
    assert all(
        steps[-1][0] == "reloaded" and steps[-1][1] > 0
        for n, steps in reference.items()
        if n.startswith("walk")
    )


def test_every_answer_payload_and_view_is_the_same_through_the_build_and_the_sources(both) -> None:
    compiled, reference = both
    assert compiled.keys() == reference.keys()
    for name in reference:
        if name == "loaded":
            continue
        assert len(compiled[name]) == len(reference[name]), name
        for i, (ours, ref) in enumerate(zip(compiled[name], reference[name], strict=True)):
            assert ours == ref, (name, i, ref[0])
