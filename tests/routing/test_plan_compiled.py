"""The routing code's mypyc build (setup.py: routing.plan, plan_nodes, outgoing, toll_fraud, state)
decides every call as its Python sources do: seeded walks of incoming call plans and outgoing
decisions (tests/routing/plan_description.py), described on the build here and in a process of
sources alone, must be equal line for line. ``make test`` also runs tests/routing/ on the sources."""

from __future__ import annotations

import json

import routing.plan
from tests.extensions import python_output, require_compiled_build
from tests.routing.plan_description import walk

require_compiled_build()  # a build that could be here and is not (or is stale) fails: `make dev` makes it
SEEDS = [20261207 + i for i in range(8)]


def test_the_plans_run_on_the_build() -> None:
    origin = routing.plan.__spec__.origin
    assert origin is not None and origin.endswith(".so") and "/_compiled/" in origin, origin


def test_the_build_plans_every_call_as_the_sources_do() -> None:
    built = [walk(seed) for seed in SEEDS]
    code = "from tests.routing.plan_description import main; main()"
    reference = json.loads(python_output(code, pure=True, stdin=json.dumps(SEEDS)))
    assert len(reference) == len(built) == len(SEEDS)
    lines = [line for w in reference for line in w]
    # the walks reach what they are meant to: answers, failures, timers, cancels, refusals, features
    for expected in ("ConnectBranch", "FailCall", "timer ", "cancel ", "RingBranch", "kind=<DecisionKind.REFUSED",
                     "kind=<DecisionKind.FEATURE", "MediaService", "did +3399 True", "Diversion("):  # fmt: skip
        assert any(expected in line for line in lines), expected
    for seed, ours, ref in zip(SEEDS, built, reference, strict=True):
        for step, (a, b) in enumerate(zip(ours, ref, strict=True)):
            assert a == b, (seed, step)
