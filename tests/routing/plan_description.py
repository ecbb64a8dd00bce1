"""Seeded walks of the routing code the mypyc build holds (routing.plan, plan_nodes, outgoing,
toll_fraud, state), described as plain text: run once on the build and once in a process of Python
sources (tests/routing/test_plan_compiled.py), the two descriptions must be equal.

Each walk draws a platform (forwarding rules, follow-me, voicemail, groups, hop limits, who is
registered or busy) from ``random.Random(seed)``, then plays incoming calls to accounts, DIDs and
groups (branch events in a drawn order, timers, cancels) and outgoing decisions for drawn dial
strings (feature codes, short codes, national and international numbers, limits and call-rate
windows). Every action, deadline, decision and refusal is written down with its ``repr``."""

from __future__ import annotations

import json
import random
import sys
from functools import partial
from typing import Any

from routing import (
    Caller,
    CallState,
    FollowMe,
    ForwardKind,
    ForwardRule,
    ForwardTarget,
    ShowCaller,
    plan_did,
    plan_incoming,
    route_outgoing,
)
from routing.toll_fraud import RateLimit

from .helpers import BRANCH_EVENTS, Driver, account, platform

EXTS = ["2001", "2002", "2003", "2004"]
NUMBERS = [*EXTS, "0612345678", "voicemail", "0892680000", "0140009010", "2222", "2020", "3001"]
DIALED = [
    *EXTS, "2000", "2020", "2222", "0140002002", "+33140002003", "0033612345678", "0612345678",
    "0892680000", "112", "*72", "*722003", "*73", "*900612345678", "#21#", "99", "", "00442071234567",
]  # fmt: skip
DIDS = [
    "+33140002001",
    "+33140002002",
    "+33140009010",
    "+33140009020",
    "+33140009030",
    "+33140009040",
    "+3399",
]


def _targets(rng: random.Random) -> tuple[ForwardTarget, ...]:
    return tuple(
        ForwardTarget(rng.choice(NUMBERS), rng.randint(1, 30), rng.choice([None, rng.randint(0, 20)]))
        for _ in range(rng.randint(0 if rng.random() < 0.2 else 1, 3))
    )


def _account(rng: random.Random, ext: str) -> Any:
    kinds = rng.sample(list(ForwardKind), rng.randint(0, 3))
    forwards = tuple(
        ForwardRule(kind, _targets(rng), rng.choice(list(ShowCaller)), rng.randint(1, 30), rng.random() < 0.5)
        for kind in kinds
    )
    follow_me = (
        FollowMe(_targets(rng) or (ForwardTarget("2002", 10),), rng.random() < 0.5)
        if rng.random() < 0.25
        else None
    )
    limits = (RateLimit(rng.randint(1, 3), rng.choice([1, 60])),) if rng.random() < 0.3 else ()
    return account(
        ext, voicemail=rng.random() < 0.5, call_waiting=rng.random() < 0.5, block_premium=rng.random() < 0.5,
        forwards=forwards, follow_me=follow_me, ring_seconds=rng.randint(1, 40), max_calls=rng.randint(1, 3),
        rate_limits=limits,
    )  # fmt: skip


def _play(out: list[str], driver: Driver, rng: random.Random) -> None:
    """Branch events, timers and perhaps a cancel until the plan ends; then its disposal."""
    plan, now = driver.plan, 0.0
    out.append(repr(driver.start(now)))
    for _ in range(200):
        if plan.finished:
            break
        deadline = plan.next_deadline()
        roll = rng.random()
        if roll < 0.05:
            out.append("cancel " + repr(driver.cancel()))
            break
        if driver.ringing and (roll < 0.7 or deadline is None):
            now += rng.choice([0.0, 0.5, 3.0])
            if deadline is not None and now > deadline:
                now = deadline
            bid = sorted(driver.ringing)[rng.randrange(len(driver.ringing))]
            out.append(f"event {bid} {now} " + repr(driver.event(bid, rng.choice(BRANCH_EVENTS), now)))
        elif deadline is not None:
            now = deadline
            out.append(f"timer {now} " + repr(driver.advance(now)))
        else:
            out.append("stuck")
            break
        out.append(f"deadline {plan.next_deadline()} finished {plan.finished} result {plan.result!r}")
    out.append(f"ringing {sorted(driver.ringing)} visited {sorted(plan.visited)}")
    plan.dispose()
    out.append(f"disposed {plan.nodes} {plan.next_deadline()}")


def _tally(tallies: dict[str, int], key: str) -> int:
    """Calls placed in a rate window, by key: one of two drawn counts."""
    return tallies["a" if len(key) % 2 else "b"]


def walk(seed: int, calls: int = 60) -> list[str]:
    rng = random.Random(seed)
    accs = [_account(rng, ext) for ext in EXTS]
    setup = platform(*accs, hop_limit=rng.randint(1, 5))
    out: list[str] = []
    for _ in range(calls):
        registered = {f"acme-{e}" for e in EXTS if rng.random() < 0.8}
        busy = {f"acme-{e}": rng.randint(1, 3) for e in EXTS if rng.random() < 0.25}
        tallies = {"a": rng.randint(0, 4), "b": rng.randint(0, 4)}
        state = CallState(registered=registered, active_calls=busy, tally=partial(_tally, tallies),
                          wall=rng.uniform(0, 600))  # fmt: skip
        caller = Caller(rng.choice(["+33611111111", "0612345678", ""]), rng.choice(["", "Outside"]),
                        rng.choice([None, "acme-2001", "acme-2004"]))  # fmt: skip
        what = rng.random()
        if what < 0.4:
            callee = setup.accounts[f"acme-{rng.choice(EXTS)}"]
            out.append(f"incoming {callee.extension} {caller!r}")
            _play(out, Driver(plan_incoming(setup, callee, caller, state)), rng)
        elif what < 0.6:
            number = rng.choice(DIDS)
            plan = plan_did(setup, number, caller, state)
            out.append(f"did {number} {plan is None}")
            if plan is not None:
                _play(out, Driver(plan), rng)
        else:
            caller_acc = setup.accounts[f"acme-{rng.choice(EXTS)}"]
            dialed = rng.choice(DIALED)
            out.append(
                f"outgoing {caller_acc.extension} {dialed!r} {route_outgoing(setup, caller_acc, dialed, state)!r}"
            )
    return out


def main() -> None:
    """Reads a JSON list of seeds on stdin, prints their walks as JSON (the sources' side)."""
    print(json.dumps([walk(seed) for seed in json.load(sys.stdin)]))
