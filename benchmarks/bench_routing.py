"""Routing decisions per second, pure core, no sockets (DESIGN.md "Benchmark the pure core").

Platform: 200 customers x 50 accounts (10,000 accounts and DIDs). Cases:
- outbound: ``route_outgoing`` to a mobile number via the trunk (normalise, DID index, premium, hook);
- internal: ``route_outgoing`` to an extension;
- incoming: ``plan_did`` + ``start`` + answer on the phone (a whole plan's life);
- no-answer: DID → account with a staggered no-answer rule: own phones time out, first target
  answers (start, one timer, one event).

Usage: ``.venv/bin/python -m benchmarks.bench_routing [--runs 5] [--seconds 1.0]``; prints the
median of the runs for each case.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from routing import (
    AccountRoute,
    BranchAnswered,
    Caller,
    CallState,
    CustomerRoute,
    DialingRules,
    Did,
    DidKind,
    ForwardKind,
    ForwardRule,
    ForwardTarget,
    RoutingSetup,
    Trunk,
    plan_did,
    route_outgoing,
)

CUSTOMERS = 200
ACCOUNTS = 50


def build_platform() -> RoutingSetup:
    customers = []
    fr = DialingRules()
    for c in range(CUSTOMERS):
        accounts, dids = [], []
        for a in range(ACCOUNTS):
            ext = str(3000 + a)
            number = f"+331{c:04d}{a:04d}"
            forwards = ()
            if a == 1:
                na = ForwardRule(
                    ForwardKind.NO_ANSWER,
                    (ForwardTarget("0612345678", 15), ForwardTarget(str(3002), 10)),
                    delay_seconds=10,
                )
                forwards = (na,)
            accounts.append(
                AccountRoute(
                    f"c{c}-{ext}", f"c{c}", ext, f"c{c}u{ext}", number, voicemail=True, forwards=forwards
                )
            )
            dids.append(Did(number, f"c{c}", DidKind.ACCOUNT, ext))
        customers.append(CustomerRoute.build(f"c{c}", fr, accounts, dids=dids, domains=[f"c{c}.example"]))
    return RoutingSetup.build(
        customers, trunk=Trunk("carrier"), support="+33100000000", media_uri="sip:media"
    )


def per_second(fn: Callable[[], object], seconds: float) -> float:
    n = 0
    batch = 200
    start = time.perf_counter()
    end = start + seconds
    while True:
        for _ in range(batch):
            fn()
        n += batch
        now = time.perf_counter()
        if now >= end:
            return n / (now - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args(argv)

    setup = build_platform()
    caller = setup.accounts["c7-3000"]
    state = CallState()
    outside = Caller("+33612345678")

    def outbound() -> object:
        return route_outgoing(setup, caller, "0612345678", state)

    def internal() -> object:
        return route_outgoing(setup, caller, "3010", state)

    def incoming() -> object:
        plan = plan_did(setup, "+33100070010", outside, state)
        [ring] = plan.start(0.0)
        return plan.on_branch_event(ring.branch_id, BranchAnswered(), 2.0)

    def no_answer() -> object:
        plan = plan_did(setup, "+33100070001", outside, state)
        plan.start(0.0)
        [_cancel, ring] = plan.on_timer(plan.next_deadline())
        return plan.on_branch_event(ring.branch_id, BranchAnswered(), 12.0)

    assert outbound().rated and internal().callee is not None
    cases = {"outbound": outbound, "internal": internal, "incoming": incoming, "no_answer": no_answer}
    for name, fn in cases.items():
        runs = [per_second(fn, args.seconds) for _ in range(args.runs)]
        print(f"{name:10s} median {statistics.median(runs):>10,.0f}/s  runs {[round(r) for r in runs]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
