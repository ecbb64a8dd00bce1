"""One contract for every CounterStore (memory; Redis at 127.0.0.1:6379 for real)."""

from __future__ import annotations

import asyncio

from rating.balance_redis import RedisCounterStore
from rating.counters import CounterStore
from tests.rating.conftest import drop_prefix, redis_client


async def test_balance_starts_at_zero_and_moves(store: CounterStore) -> None:
    assert await store.balance("c") == 0
    await store.set_balance("c", 5_000_000)
    assert await store.adjust_balance("c", 1_500_000) == 6_500_000
    assert await store.adjust_balance("c", -7_000_000) == -500_000
    assert await store.balance("c") == -500_000
    assert await store.balance("other") == 0


async def test_debit_call_moves_balance_and_daily_spend(store: CounterStore) -> None:
    await store.set_balance("c", 1_000_000)
    assert await store.debit_call("c", "2026-11-22", 27_600) == 972_400
    assert await store.debit_call("c", "2026-11-22", 400) == 972_000
    assert await store.debit_call("c", "2026-11-23", 1_000) == 971_000
    assert await store.snapshot("c", None, "2026-11-22", "2026-11") == (971_000, 28_000, 0)
    assert await store.snapshot("c", None, "2026-11-23", "2026-11") == (971_000, 1_000, 0)


async def test_take_free_minutes_grants_what_is_left(store: CounterStore) -> None:
    assert await store.take_free_minutes("a", "2026-11", 4, 100) == 4
    assert await store.take_free_minutes("a", "2026-11", 94, 100) == 94
    assert await store.take_free_minutes("a", "2026-11", 4, 100) == 2  # the last 2 of 100
    assert await store.take_free_minutes("a", "2026-11", 1, 100) == 0
    assert await store.take_free_minutes("a", "2026-12", 1, 100) == 1  # a new cycle
    assert (await store.snapshot("c", "a", "2026-11-22", "2026-11"))[2] == 100


async def test_concurrent_calls_never_share_a_free_minute(store: CounterStore) -> None:
    grants = await asyncio.gather(*(store.take_free_minutes("a", "2026-11", 3, 100) for _ in range(50)))
    assert sum(grants) == 100
    assert sorted(set(grants)) == [0, 1, 3]


async def test_concurrent_debits_are_all_counted(store: CounterStore) -> None:
    await store.set_balance("c", 0)
    await asyncio.gather(*(store.debit_call("c", "2026-11-22", 7) for _ in range(50)))
    assert await store.snapshot("c", None, "2026-11-22", "2026-11") == (-350, 350, 0)


async def test_two_redis_stores_share_counters(prefix: str) -> None:
    c1, c2 = await redis_client(), await redis_client()
    try:
        s1, s2 = RedisCounterStore(c1, prefix=prefix), RedisCounterStore(c2, prefix=prefix)
        await s1.set_balance("c", 100)
        grants = await asyncio.gather(
            *(s.take_free_minutes("a", "2026-11", 2, 9) for s in (s1, s2) for _ in range(5))
        )
        assert sum(grants) == 9
        await s2.debit_call("c", "2026-11-22", 30)
        assert await s1.balance("c") == 70
        assert await c1.ttl(f"{prefix}spent:c:2026-11-22") > 0  # daily keys expire on their own
    finally:
        await drop_prefix(c1, prefix)
        await c1.aclose()
        await c2.aclose()
