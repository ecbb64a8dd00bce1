"""A call placed, admitted against its account's ``max_calls`` and call-rate windows across hosts
(`RedisAccountState.admit`, the Lua `_ADMIT`) on a real Redis: decided in Redis in one step whatever
the asking process's mirror knows yet, the same answers as the pure `Admission.refused`, absolute
writes that later `_SET_CALLS` writes follow, and today's local decision when Redis is away."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
import redis.asyncio as aioredis

from routing.toll_fraud import Admission, RateLimit, admission
from server.account_state_redis import RedisAccountState
from tests.server.test_account_state import REDIS_URL, prefix, processes, until  # noqa: F401

pytestmark = pytest.mark.redis

ACCOUNT = "c/1001"
WALL = 1_764_000_000.25  # a quarter into its second


@pytest.mark.timeout(15)
async def test_max_calls_is_decided_in_redis_across_hosts(prefix: str, processes) -> None:  # noqa: F811
    a, b = await processes("host-a/1"), await processes("host-b/2")
    one = Admission(ACCOUNT, max_calls=1)
    assert await a.admit(one) == 0
    assert b.calls_of(ACCOUNT) in (0, 1)  # b's mirror may not know it yet: Redis does
    assert await b.admit(one) == 1
    b.call_ended(ACCOUNT)  # the refused call's end takes its +1 back
    await until(lambda: b.calls_of(ACCOUNT) == 1, what="a's admitted call published")
    a.call_ended(ACCOUNT)
    await until(lambda: b.calls_of(ACCOUNT) == 0, what="its end published")
    assert await b.admit(one) == 0

    # a burst from both hosts at once, pipelined: exactly max_calls admitted
    b.call_ended(ACCOUNT)
    three = Admission(ACCOUNT, max_calls=3)
    answers = await asyncio.gather(*(p.admit(three) for p in itertools.islice(itertools.cycle((a, b)), 10)))
    assert sorted(answers) == [0] * 3 + [1] * 7


@pytest.mark.timeout(15)
async def test_call_rate_windows_are_decided_in_redis_across_hosts(prefix: str, processes) -> None:  # noqa: F811
    a, b = await processes("host-a/1"), await processes("host-b/2")
    limits = (RateLimit(2, 1), RateLimit(3, 60))
    now = admission(ACCOUNT, 100, limits, WALL)
    assert [await a.admit(now), await b.admit(now), await a.admit(now)] == [0, 0, 2]  # 2 per second
    second = now.rates[0].current
    assert a.add_tally(second, 0) == 1  # the refused call is out of the window again
    await until(lambda: a.tally(second) == b.tally(second) == 2, what="the windows published")
    half = admission(ACCOUNT, 100, limits, WALL + 1.25)  # next second: half of the previous one counts
    assert await b.admit(half) == 0  # 2 x 0.5 + 1 = 2
    assert await a.admit(half) == 2
    later = admission(ACCOUNT, 100, limits, WALL + 3)  # the second is free again, the minute is not
    assert await b.admit(later) == 3
    assert [now.refusal(2).warning, now.refusal(3).warning] == [
        "Call rate limit reached (2 per second)",
        "Call rate limit reached (3 per minute)",
    ]


@pytest.mark.timeout(15)
async def test_the_lua_check_is_the_pure_one(prefix: str, processes) -> None:  # noqa: F811
    """Random counts spread over two processes: Redis answers what `Admission.refused` answers on the
    platform's totals (the call itself counted)."""
    rng = random.Random(21)
    for case in range(12):
        a, b = await processes(f"host-a/{case}"), await processes(f"host-b/{case}")
        await _same_answer(a, b, rng)
        await a.close()
        await b.close()


async def _same_answer(a: RedisAccountState, b: RedisAccountState, rng: random.Random) -> None:
    check = admission(ACCOUNT, rng.randint(1, 4), (RateLimit(rng.randint(1, 5), 1),), WALL + rng.random())
    rate = check.rates[0]
    for p in (a, b):
        for _ in range(rng.randint(0, 2)):
            p.call_started(ACCOUNT)
        p.add_tally(rate.previous, rng.randint(0, 3))
        p.add_tally(rate.current, rng.randint(0, 2))
    keys = (rate.previous, rate.current)
    await until(lambda: a.busy_accounts() == b.busy_accounts(), what="counts published")
    await until(lambda: [a.tally(k) for k in keys] == [b.tally(k) for k in keys], what="tallies published")
    calls, tally = a.calls_of(ACCOUNT) + 1, a.tally
    expected = check.refused(calls, lambda k: tally(k) + (k == rate.current))
    assert await b.admit(check) == expected, (calls, [tally(k) for k in keys], check)


@pytest.mark.timeout(15)
async def test_admitted_shares_are_absolute_writes_that_later_writes_follow(prefix: str, processes) -> None:  # noqa: F811
    a = await processes("host-a/1")
    client = aioredis.from_url(REDIS_URL)
    try:
        assert await a.admit(Admission(ACCOUNT, max_calls=5)) == 0
        own = f"{prefix}calls:host-a/1"
        assert await client.hget(own, ACCOUNT) == b"1"
        seq = int(await client.hget(own, "~seq"))
        a.call_started(ACCOUNT)  # an ordinary count change after it (a sequence number further on)
        await until(lambda: client.hget(own, ACCOUNT), what="written")
        await until(lambda: _equals(client.hget(own, ACCOUNT), b"2"), what="the later write taken")
        assert int(await client.hget(own, "~seq")) > seq
        a.call_ended(ACCOUNT)
        a.call_ended(ACCOUNT)
        await until(lambda: _equals(client.hget(own, ACCOUNT), None), what="both ends written")
    finally:
        await client.aclose()


async def _equals(pending, value) -> bool:  # type: ignore[no-untyped-def]
    return await pending == value


@pytest.mark.timeout(15)
async def test_redis_away_admits_on_this_hosts_decision(prefix: str) -> None:  # noqa: F811
    """Routing decided on the mirror already; with Redis unreachable that decision stands (as
    before this check existed) and the call is counted here."""
    state = RedisAccountState.from_url("redis://127.0.0.1:1/0", prefix, process="host-x/1")
    try:
        check = admission(ACCOUNT, 1, (RateLimit(1, 1),), WALL)
        assert await state.admit(check) == 0
        assert state.calls_of(ACCOUNT) == 1 and state.tally(check.rates[0].current) == 1
    finally:
        await state._r.close()
        await state._sub.aclose()
