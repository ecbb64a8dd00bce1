"""Any configuration, any order of branch events: the plan stays well-formed.

Invariants: branch ids unique; only ringing branches are cancelled; no account's phones ring twice;
at most ``hop_limit`` diversions; exactly one final action, after which nothing rings and nothing
else happens; and the call always ends.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from routing import (
    BranchNotAnswered,
    Caller,
    CallState,
    ConnectBranch,
    FailCall,
    FollowMe,
    ForwardKind,
    ForwardRule,
    ForwardTarget,
    RingBranch,
    ShowCaller,
    plan_incoming,
)
from routing.targets import AccountContacts

from .helpers import BRANCH_EVENTS, Driver, account, platform

EXTS = ["2001", "2002", "2003", "2004"]
target_numbers = st.sampled_from([*EXTS, "0612345678", "voicemail", "0892680000", "0140009010", "2222"])
targets = st.lists(
    st.builds(
        ForwardTarget,
        target_numbers,
        st.integers(1, 30),
        st.one_of(st.none(), st.integers(0, 20)),
    ),
    min_size=1,
    max_size=3,
).map(tuple)
rules = st.builds(
    ForwardRule,
    st.sampled_from(list(ForwardKind)),
    targets | st.just(()),
    st.sampled_from(list(ShowCaller)),
    st.integers(1, 30),
    st.booleans(),
)


@st.composite
def accounts(draw, ext: str):
    forwards = draw(st.lists(rules, max_size=3, unique_by=lambda r: r.kind))
    follow_me = draw(st.one_of(st.none(), st.builds(FollowMe, targets, st.booleans())))
    return account(
        ext,
        voicemail=draw(st.booleans()),
        call_waiting=draw(st.booleans()),
        block_premium=draw(st.booleans()),
        forwards=tuple(forwards),
        follow_me=follow_me,
        ring_seconds=draw(st.integers(1, 40)),
    )


events = st.sampled_from(BRANCH_EVENTS)


@settings(max_examples=300, deadline=None)
@given(
    st.tuples(*(accounts(e) for e in EXTS)),
    st.sets(st.sampled_from(EXTS)),
    st.sets(st.sampled_from(EXTS)),
    st.integers(1, 4),
    st.lists(st.tuples(st.booleans(), st.integers(0, 10), events), max_size=40),
)
def test_plan_invariants(accs, registered, in_call, hop_limit, script) -> None:
    setup = platform(*accs, hop_limit=hop_limit)
    state = CallState(
        registered={f"acme-{e}" for e in registered}, active_calls={f"acme-{e}": 1 for e in in_call}
    )
    d = Driver(plan_incoming(setup, setup.accounts["acme-2001"], Caller("+33611111111"), state))
    now = 0.0
    d.start(now)
    steps = iter(script)
    for _ in range(500):
        if d.plan.finished:
            break
        step = next(steps, None)
        deadline = d.plan.next_deadline()
        if step is not None and step[0] and d.ringing:
            bid = sorted(d.ringing)[step[1] % len(d.ringing)]
            d.event(bid, step[2], now)
        elif deadline is not None:
            assert deadline >= now
            now = deadline
            d.advance(now)
        else:
            assert d.ringing, "plan neither finished, nor ringing, nor waiting"
            d.event(min(d.ringing), step[2] if step else BranchNotAnswered(), now)
    assert d.plan.finished

    finals = [a for a in d.log if isinstance(a, ConnectBranch | FailCall)]
    assert len(finals) == 1 and d.log[-1] is finals[0]
    rings = [a for a in d.log if isinstance(a, RingBranch)]
    assert len({r.branch_id for r in rings}) == len(rings)
    own = [r.target.account_id for r in rings if isinstance(r.target, AccountContacts)]
    assert len(own) == len(set(own))
    assert all(len(r.diversions) <= hop_limit for r in rings)
    if isinstance(finals[0], ConnectBranch):
        assert d.ringing == {}
    else:
        assert 400 <= finals[0].status < 700
        assert d.ringing == {}
    assert d.plan.next_deadline() is None
