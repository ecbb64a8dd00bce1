"""The Redis scripts behind counters shared by several processes (rating.balance_redis, *_once and
seed), against the real Redis at 127.0.0.1:6379 with a prefix of the test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from rating.balance_redis import RedisCounterStore
from tests.rating.conftest import drop_prefix, redis_client

pytestmark = pytest.mark.redis


@pytest.fixture
async def client(prefix: str) -> AsyncIterator[aioredis.Redis]:
    c = await redis_client()
    yield c
    await drop_prefix(c, prefix)
    await c.aclose()


@pytest.fixture
async def seeded(client: aioredis.Redis, prefix: str) -> RedisCounterStore:
    store = RedisCounterStore(client, prefix=prefix)
    assert await store.seed(None, 0, [("c", 1_000_000, 0, 0)])
    return store


async def test_an_operation_sent_twice_is_debited_once(seeded: RedisCounterStore) -> None:
    assert await seeded.debit_once("op1", "c", "2026-11-22", 300) == (999_700, 300)
    assert await seeded.debit_once("op1", "c", "2026-11-22", 300) == (999_700, 300)
    assert await seeded.debit_once("op2", "c", "2026-11-22", 300) == (999_400, 600)


async def test_a_resent_take_answers_the_first_grant(seeded: RedisCounterStore) -> None:
    assert await seeded.take_free_once("t1", "a", "2026-11", 4, 5) == (4, 4)
    assert await seeded.take_free_once("t1", "a", "2026-11", 4, 5) == (4, 4)
    assert await seeded.take_free_once("t2", "a", "2026-11", 4, 5) == (1, 5)  # what is left
    assert await seeded.take_free_once("t3", "a", "2026-11", 4, 5) == (0, 5)


async def test_a_forced_grant_sets_the_operation_contribution(seeded: RedisCounterStore) -> None:
    assert await seeded.take_free_once("t1", "a", "2026-11", 3, 5) == (3, 3)
    assert await seeded.force_free("t1", "a", "2026-11", 1) == 1  # the call was priced with 1
    assert await seeded.force_free("t1", "a", "2026-11", 1) == 1  # replayed again: no change
    assert await seeded.force_free("t2", "a", "2026-11", 6) == 7  # beyond the bundle, recorded


async def test_answered_operations_forget_their_markers(seeded, client, prefix) -> None:
    await seeded.debit_once("op1", "c", "2026-11-22", 300)
    assert await client.ttl(f"{prefix}op:op1") > 86400  # kept for days while unanswered
    await seeded.forget_ops(["op1"])
    assert await client.exists(f"{prefix}op:op1") == 0


async def test_nothing_moves_on_an_unseeded_redis(client, prefix) -> None:
    store = RedisCounterStore(client, prefix=prefix)
    for attempt in (
        store.debit_once("op", "c", "2026-11-22", 1),
        store.take_free_once("op", "a", "2026-11", 1, 5),
        store.force_free("op", "a", "2026-11", 1),
    ):
        with pytest.raises(ResponseError, match="UNSEEDED"):
            await attempt
    assert [k async for k in client.scan_iter(match=f"{prefix}*")] == []


async def test_seeding_folds_only_what_is_new(seeded: RedisCounterStore) -> None:
    await seeded.debit_once("op", "c", "2026-11-22", 250_000)  # a call debit since
    # opening 1.00 -> 1.50, a payment of 2.00 after the watermark, and a new customer "d"
    assert await seeded.seed(0, 7, [("c", 1_500_000, 9_999, 2_000_000), ("d", 300_000, -100_000, 0)])
    assert await seeded.balance("c") == 1_000_000 - 250_000 + 500_000 + 2_000_000
    assert await seeded.balance("d") == 200_000
    assert await seeded.watermark() == 7


async def test_seeding_against_a_moved_watermark_does_nothing(seeded: RedisCounterStore) -> None:
    assert not await seeded.seed(None, 9, [("c", 5_000_000, 0, 0)])  # expected unseeded: it is not
    assert not await seeded.seed(3, 9, [("c", 5_000_000, 0, 0)])
    assert await seeded.balance("c") == 1_000_000
    assert await seeded.watermark() == 0


async def test_an_unseeded_redis_is_rebuilt_whatever_it_remembers(seeded, client, prefix) -> None:
    await client.delete(f"{prefix}seeded")  # Redis lost its marker: every customer is new again
    assert await seeded.seed(None, 4, [("c", 1_000_000, -300_000, 0)])
    assert await seeded.balance("c") == 700_000


async def test_seeded_amounts_stay_exact_beyond_double_precision(client, prefix) -> None:
    store = RedisCounterStore(client, prefix=prefix)
    big = 2**53 + 1  # a Lua number (double) would round this
    assert await store.seed(None, 0, [("c", big, 2, 0)])
    assert await store.balance("c") == big + 2


async def test_one_read_answers_balances_spend_and_free_minutes(seeded: RedisCounterStore) -> None:
    await seeded.debit_once("op", "c", "2026-11-22", 100)
    await seeded.take_free_once("t", "a", "2026-11", 2, 5)
    answer = await seeded.read(["c", "nobody"], [("c", "2026-11-22")], [("a", "2026-11"), ("b", "2026-11")])
    assert answer == (True, [999_900, 0], [100], [2, 0])
